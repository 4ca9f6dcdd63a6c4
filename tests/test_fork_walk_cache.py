"""fork() while other threads use the walk cache: the child can still use it."""
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import os, threading, time
    import numpy as np
    import recsketch as rs
    p = rs.suggest_block_sparse(1024)
    sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, dtype="float64")
    X = np.random.default_rng(0).standard_normal((8, p.d_sketch))
    ref = sk.position_matrix(1).matvec(X, num_threads=1)
    rs.set_walk_cache_limit(300_000)  # small: the spinning threads insert and evict constantly
    stop = []
    def spin(k):
        i = 2 + k
        while not stop:
            sk.position_matrix(i).matvec(X, num_threads=2); i += 2
    ts = [threading.Thread(target=spin, args=(k,)) for k in range(2)]
    [t.start() for t in ts]
    ok = hung = 0
    for k in range(30):
        pid = os.fork()
        if pid == 0:
            y = sk.position_matrix(1).matvec(X, num_threads=2)
            sk.position_matrix(10_000 + k).matvec(X, num_threads=2)
            os._exit(0 if y.tobytes() == ref.tobytes() else 3)
        for _ in range(400):
            r, st = os.waitpid(pid, os.WNOHANG)
            if r: break
            time.sleep(0.025)
        else:
            os.kill(pid, 9); os.waitpid(pid, 0); hung += 1; continue
        ok += os.waitstatus_to_exitcode(st) == 0
    stop.append(1); [t.join() for t in ts]
    print(ok, hung)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_threads_use_the_walk_cache():
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", _SCRIPT], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["30", "0"], r.stdout
