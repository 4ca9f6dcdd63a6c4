"""The allocation limit: one byte budget for every output and scratch buffer whose size is a
product of the caller's arguments (d_sketch x rows, columns, nonzeros, graphs x d, ...).

Every such call, native or Python, is refused with a ValueError naming the bytes and the
arguments responsible before anything of that size is allocated, when it would need more than
the limit. The default, :data:`DEFAULT_ALLOC_LIMIT`, is max(4 GiB, half the physical memory),
read once when recsketch is imported (``sysconf``; 4 GiB where the memory size is unknown): it
holds every honest size recsketch's benchmarks use and refuses a mistyped size that would
otherwise ask for terabytes, or overcommit the machine and take it down page by page. Raise it
with :func:`set_alloc_limit` (``None``: no limit) or, for a block of code,
:func:`alloc_limit_set`. It does not bound the caches (each has its own byte budget) nor the
arrays a call receives from you.

The limit is process-wide: every thread sees the same one.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Union

import numpy as np

from ._forksafe import fork_safe_lock
from ._native import _core

__all__ = ["DEFAULT_ALLOC_LIMIT", "alloc_limit", "alloc_limit_set", "check_alloc",
           "set_alloc_limit"]

#: max(4 GiB, half the physical memory), read once at import (the native core's value).
DEFAULT_ALLOC_LIMIT: int = int(_core.DEFAULT_ALLOC_LIMIT)

_NO_LIMIT = 2**64 - 1


def alloc_limit() -> int:
    """The allocation limit in bytes (process-wide; default :data:`DEFAULT_ALLOC_LIMIT`;
    ``2**64 - 1`` when there is none)."""
    return int(_core.alloc_limit())


def set_alloc_limit(nbytes: Optional[int]) -> int:
    """Set the allocation limit in bytes for the whole process (every thread); ``None`` means
    no limit. Returns the previous limit.

    Raises TypeError for a non-integer and ValueError outside ``[0, 2**64 - 1]``. To change
    it for a block of code, from any number of threads, use :func:`alloc_limit_set`.
    """
    from ._checks import check_int

    if nbytes is None:
        nbytes = _NO_LIMIT
    return int(_core.set_alloc_limit(check_int(nbytes, "nbytes", minimum=0,
                                                maximum=_NO_LIMIT)))


# The blocks of alloc_limit_set in progress, oldest first, and the limit before the first.
_active_lock = fork_safe_lock()
_active: List[List[int]] = []   # [limit, thread ident] per block
_base: List[int] = []


def _after_fork_in_child() -> None:
    # The blocks of other threads are in progress in threads the child does not have: none of
    # them will leave, so only the forking thread's own blocks stay in force.
    if _active:
        _active[:] = [e for e in _active if e[1] == threading.get_ident()]
        _core.set_alloc_limit(_active[-1][0] if _active else _base[0])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def alloc_limit_set(nbytes: Optional[int]) -> Iterator[int]:
    """Within the block, the allocation limit is ``nbytes`` (``None``: no limit); yields the
    limit in force.

    The limit is process-wide: while the block runs, calls from *every* thread are checked
    against it. Blocks may overlap across threads: the limit in force is the one of the block
    entered last among those still running, and when the last block ends the limit is back to
    what it was before the first one began, whatever order the threads leave in (a save and
    restore by hand, ``set_alloc_limit`` twice, can leave another thread's value behind).
    ``set_alloc_limit`` called while blocks run lasts until the next block enters or leaves.
    """
    from ._checks import check_int

    value = _NO_LIMIT if nbytes is None else check_int(nbytes, "nbytes", minimum=0,
                                                         maximum=_NO_LIMIT)
    entry = [value, threading.get_ident()]
    with _active_lock:
        if not _active:
            _base[:] = [alloc_limit()]
        _active.append(entry)
        _core.set_alloc_limit(value)
    try:
        yield value
    finally:
        with _active_lock:
            for k, e in enumerate(_active):
                if e is entry:
                    del _active[k]
                    break
            _core.set_alloc_limit(_active[-1][0] if _active else _base[0])


def check_alloc(nbytes: Union[int, float], what: str, hint: str = "") -> None:
    """ValueError if ``nbytes`` exceeds the allocation limit. ``what`` names the call and the
    arguments responsible, ``hint`` (if any) follows. The native core's check and message
    (cpp/bindings/alloc_limit.hpp): one rule for both layers.

    ``nbytes`` is an integer or a real number of bytes (rounded up); a request beyond
    ``2**64 - 1`` bytes is refused whatever the limit (no allocation can hold it); a negative
    size, NaN or infinity is a ValueError, a bool or a non-number a TypeError, each naming
    ``what``."""
    if isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, numbers.Real):
        raise TypeError(f"{what}: the size of the request must be a number of bytes, got "
                        f"{type(nbytes).__name__}")
    if isinstance(nbytes, numbers.Integral):
        n = int(nbytes)
    else:
        x = float(nbytes)
        if not math.isfinite(x):
            raise ValueError(f"{what}: the size of the request is {x!r} bytes, not a finite "
                             "number")
        n = math.ceil(x)
    if n < 0 or nbytes < 0:     # (-0.5 rounds up to 0)
        raise ValueError(f"{what}: the size of the request is {nbytes} bytes, negative")
    if n > _NO_LIMIT:
        # the native check takes 64-bit sizes: said here, not saturated to 16.0 EiB there
        raise ValueError(f"{what} would need more than 16.0 EiB (2**64 - 1 bytes), above any "
                         "allocation limit" + (f"; {hint}" if hint else ""))
    _core.check_alloc(n, what, hint)
