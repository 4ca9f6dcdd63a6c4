"""A daemon thread inside a native call while the interpreter exits: a clean exit, no abort."""
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    import recsketch as rs
    kind, threads = sys.argv[1], int(sys.argv[2])
    p = rs.suggest_block_sparse(2048)
    sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, dtype="float64")
    X = np.random.default_rng(0).standard_normal((16, p.d_sketch))
    rng = np.random.default_rng(1)
    g = rs.Graph()
    leaves = [g.add("leaf", np.full(3, 3 ** -0.5)) for _ in range(200)]
    g.set_output([(h, 1 / 200) for h in leaves])
    started = threading.Barrier(3)
    def spin():
        started.wait()
        i = 1
        while True:
            if kind == "matvec":
                sk.position_matrix(i).matvec(X, num_threads=threads)
            else:
                sk.sketch_many([g, g], num_threads=threads)
            i += 1
    for _ in range(2):
        threading.Thread(target=spin, daemon=True).start()
    started.wait()
    time.sleep(0.3)
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("kind", ["matvec", "sketch"])
@pytest.mark.parametrize("threads", [1, 2])
def test_daemon_threads_in_kernels_at_exit(kind, threads):
    # Before the fix every run aborted ("terminate called without an active exception"):
    # CPython ends daemon threads with pthread_exit when they retake the GIL during
    # finalisation, and the forced unwind left a noexcept destructor.
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", _SCRIPT, kind, str(threads)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        assert r.stdout == "exiting\n"
        assert "terminate" not in r.stderr
