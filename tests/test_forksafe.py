"""fork() while another thread holds one of recsketch's Python locks: the child can take it.

A thread that holds a lock when another thread forks does not exist in the child, so a plain
``threading.Lock`` stays held there for good. Each case below forks while a thread sits inside
the lock and checks that the child gets it within seconds (a child that cannot exits with 3 on
its own, through ``acquire(timeout=...)``; the parent kills any child still running after 60 s).
The first case shows that the plain lock really does hang in this set-up.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import recsketch as rs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

# Runs `setup` (which defines `lock`, and `child()` returning the child's exit code), holds
# `lock` in a thread, forks, and prints the child's exit code.
_HARNESS = """
import os, sys, threading, time
{setup}
inside, done = threading.Event(), threading.Event()
def hold():
    with lock:
        inside.set()
        done.wait()
t = threading.Thread(target=hold)
t.start()
inside.wait()
pid = os.fork()
if pid == 0:
    try:
        code = child()
    except BaseException as exc:
        print(type(exc).__name__, exc, file=sys.stderr)
        code = 4
    os._exit(code)
for _ in range(2400):
    r, st = os.waitpid(pid, os.WNOHANG)
    if r:
        break
    time.sleep(0.025)
else:
    os.kill(pid, 9); os.waitpid(pid, 0); st = None
done.set(); t.join()
print("hung" if st is None else os.waitstatus_to_exitcode(st))
"""


def _run(script: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", textwrap.dedent(script)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _fork_while_held(setup: str) -> str:
    r = _run(_HARNESS.format(setup=textwrap.dedent(setup)))
    return r.stdout.strip() + (" | " + r.stderr.strip() if r.stderr.strip() else "")


def test_a_plain_lock_held_at_the_fork_stays_held_in_the_child():
    # the control: without the reset the child cannot take the lock (acquire times out)
    got = _fork_while_held("""
        lock = threading.Lock()
        def child():
            return 0 if lock.acquire(timeout=2) else 3
    """)
    assert got == "3"


@pytest.mark.parametrize("maker", ["fork_safe_lock", "fork_safe_rlock"])
def test_a_fork_safe_lock_held_at_the_fork_is_free_in_the_child(maker):
    got = _fork_while_held(f"""
        from recsketch._forksafe import {maker}
        lock = {maker}()
        def child():
            if not lock.acquire(timeout=10):
                return 3
            lock.release()
            with lock:     # and it still works as a lock
                return 0
    """)
    assert got == "0"


# A Sketcher and a one-leaf graph, for the scripts below (indented as they are)
_SCENE = """
        import numpy as np
        import recsketch as rs
        sk = rs.Sketcher(1023, block_size=93, density=0.4, seed=5)
        g = rs.Graph()
        g.set_output([(g.add("leaf", [0.6, 0.8]), 1.0)])
"""


def test_a_sketcher_whose_lock_is_held_at_the_fork_makes_matrices_in_the_child():
    # white box: a thread holds the Sketcher's registry lock (as one does while it makes a new
    # matrix); the child makes a new matrix and sketches, and gets what the parent gets
    got = _fork_while_held(_SCENE + """
        lock = sk._lock
        def child():
            x = np.ones((1, 1023))
            y = sk.position_matrix(7).matvec(x)
            s = sk.sketch(g)
            ref = rs.Sketcher(1023, block_size=93, density=0.4, seed=5)
            same = (y.tobytes() == ref.position_matrix(7).matvec(x).tobytes()
                    and s.tobytes() == ref.sketch(g).tobytes())
            return 0 if same else 5
    """)
    assert got == "0"


def test_a_query_cache_whose_lock_is_held_at_the_fork_answers_in_the_child():
    got = _fork_while_held(_SCENE + """
        s = sk.sketch(g)
        ref = rs.Sketcher(1023, block_size=93, density=0.4, seed=5)
        ref.sketch(g)   # (registers the module)
        want = ref.attributes(s, "leaf")
        lock = sk.decoder._cache._lock
        def child():
            got = sk.attributes(s, "leaf")
            same = (got.attributes.tobytes() == want.attributes.tobytes()
                    and got.weight == want.weight)
            return 0 if same else 5
    """)
    assert got == "0"


def test_a_repository_opened_before_a_fork_refuses_use_in_the_child(tmp_path):
    # SQLite connections must not cross a fork: the child gets a ValueError naming it (even
    # though another thread held the store's lock at the fork), closing is quiet, and the
    # folder opened again in the child works; the parent's repository is untouched
    sk = rs.Sketcher(1023, block_size=93, density=0.4, seed=5)
    rs.Repository.create(tmp_path / "r", sk).close()
    got = _fork_while_held(f"""
        import numpy as np
        import recsketch as rs
        repo = rs.Repository.open({str(tmp_path / "r")!r})
        repo.add(np.full((2, 1023), 0.01, dtype=np.float32))
        lock = repo._store.lock
        def child():
            try:
                len(repo)
            except ValueError as exc:
                if "fork" not in str(exc):
                    return 6
            else:
                return 5
            repo.close()
            again = rs.Repository.open({str(tmp_path / "r")!r})
            n = len(again)
            again.close()
            return 0 if n == 2 else 7
    """)
    assert got == "0"
    with rs.Repository.open(tmp_path / "r") as repo:
        assert len(repo) == 2
        np.testing.assert_array_equal(repo.get(repo.ids()), np.full((2, 1023), 0.01, np.float32))


def test_a_forked_child_drops_the_allocation_limits_of_the_parents_other_threads():
    # a thread is inside alloc_limit_set(1 MiB) at the fork: it does not exist in the child, so
    # its block never ends there; the child starts from the limit before the block, and a block
    # of the forking thread that is open at the fork stays in force until it leaves
    r = _run("""
        import os, threading
        import recsketch as rs
        base = rs.alloc_limit()
        inside, done = threading.Event(), threading.Event()
        def worker():
            with rs.alloc_limit_set(1 << 20):
                inside.set(); done.wait()
        t = threading.Thread(target=worker); t.start(); inside.wait()
        with rs.alloc_limit_set(5 << 30):
            pid = os.fork()
            if pid == 0:
                ok = rs.alloc_limit() == 5 << 30
        if pid == 0:
            ok = ok and rs.alloc_limit() == base
            with rs.alloc_limit_set(None):
                pass
            os._exit(0 if ok and rs.alloc_limit() == base else 3)
        _, st = os.waitpid(pid, 0)
        done.set(); t.join()
        print(os.waitstatus_to_exitcode(st), rs.alloc_limit() == base)
    """)
    assert r.stdout.split() == ["0", "True"]


def test_a_forked_child_gets_back_the_blas_threads_of_an_open_serial_section():
    # another thread is inside the unmixing's one-BLAS-thread section at the fork: the child
    # (where that thread never leaves it) starts with the count the section found
    pytest.importorskip("threadpoolctl")
    r = _run("""
        import os, threading
        from threadpoolctl import threadpool_info
        from recsketch.network.unmixing import _serial_lapack
        def blas():
            return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        before = blas()
        inside, done = threading.Event(), threading.Event()
        def worker():
            with _serial_lapack():
                inside.set(); done.wait()
        t = threading.Thread(target=worker); t.start(); inside.wait()
        during = blas()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if blas() == before else 3)
        _, st = os.waitpid(pid, 0)
        done.set(); t.join()
        print(os.waitstatus_to_exitcode(st), during == [1] * len(during), blas() == before)
    """)
    assert r.stdout.split() == ["0", "True", "True"]
