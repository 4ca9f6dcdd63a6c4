"""Locks that a forked child can take.

``os.fork()`` copies a process with only the thread that called it. A ``threading.Lock`` that
another thread held at that moment stays held in the child, by a thread that does not exist
there, and the child's first ``with lock:`` waits forever (a multiprocessing worker started with
the "fork" method while other threads sketch hangs on its first new matrix). Every lock made
here is reset to unlocked in the child, as CPython does for the locks of its own ``threading``
and ``logging`` modules.

The state a lock guards may have been half changed by a thread that the child does not have:
the query cache may then count one entry's bytes without the entry (or the reverse), the
Sketcher's registry may hold part of a batch's new modules; never an entry that is wrong. State
owned by such a thread is dropped by its own fork hook: ``alloc_limit_set`` blocks of other
threads (alloc.py), a one-BLAS-thread section of another thread (network/unmixing.py). A
repository opened before the fork refuses use in the child (repository/store.py). The native
locks (the walk cache, the thread pool) are made fork-safe in C++ with ``pthread_atfork``.

A lock that the forking thread itself holds at the fork is reset too (no recsketch call forks
while holding one; a callback of the caller's that forks inside one would find it released).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable

__all__ = ["fork_safe_lock", "fork_safe_rlock"]

_LOCKS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _register(lock: Any) -> Any:
    _LOCKS.add(lock)
    return lock


def fork_safe_lock() -> "threading.Lock":
    """A ``threading.Lock`` that is unlocked in a forked child."""
    return _register(threading.Lock())


def fork_safe_rlock() -> "threading.RLock":
    """A ``threading.RLock`` that is unlocked (no owner) in a forked child."""
    return _register(threading.RLock())


def _reset_in_child() -> None:
    for lock in list(_LOCKS):
        reinit: Callable[[], None] = getattr(lock, "_at_fork_reinit")
        reinit()


# _at_fork_reinit (CPython >= 3.9, the method CPython's own modules use after a fork) resets a
# lock in place, so every object holding a reference sees it unlocked; replacing the lock
# would leave references taken before the fork pointing at the held one.
if hasattr(os, "register_at_fork") and hasattr(threading.Lock(), "_at_fork_reinit"):
    os.register_at_fork(after_in_child=_reset_in_child)
