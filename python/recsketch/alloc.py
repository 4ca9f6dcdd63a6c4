"""The allocation limit: one byte budget for every output and scratch buffer whose size is a
product of the caller's arguments (d_sketch x rows, columns, nonzeros, graphs x d, ...).

Every such call, native or Python, is refused with a ValueError naming the bytes and the
arguments responsible before anything of that size is allocated, when it would need more than
the limit. The default, 4 GiB, holds every honest size recsketch's benchmarks use (the largest
single buffers are about 1 GiB) and refuses a mistyped size that would otherwise ask for
terabytes, or overcommit the machine and take it down page by page. Raise it with
:func:`set_alloc_limit` when you mean it. It does not bound the caches (each has its own byte
budget) nor the arrays a call receives from you.
"""

from __future__ import annotations

from ._native import _core

__all__ = ["DEFAULT_ALLOC_LIMIT", "alloc_limit", "check_alloc", "set_alloc_limit"]

DEFAULT_ALLOC_LIMIT = 4 << 30


def alloc_limit() -> int:
    """The allocation limit in bytes (process-wide; default :data:`DEFAULT_ALLOC_LIMIT`)."""
    return int(_core.alloc_limit())


def set_alloc_limit(nbytes: int) -> int:
    """Set the allocation limit in bytes for the whole process; returns the previous limit.

    Raises TypeError for a non-integer and ValueError outside ``[0, 2**64 - 1]``.
    """
    from ._checks import check_int

    return int(_core.set_alloc_limit(check_int(nbytes, "nbytes", minimum=0,
                                                maximum=2**64 - 1)))


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_alloc(nbytes: int, what: str, hint: str = "") -> None:
    """ValueError if ``nbytes`` exceeds the allocation limit. ``what`` names the call and the
    arguments responsible (the message is the native core's, word for word, then ``hint``)."""
    limit = alloc_limit()
    if nbytes > limit:
        raise ValueError(f"{what} would need {nbytes} bytes ({_gib(nbytes)}), above the "
                         f"allocation limit of {_gib(limit)} (recsketch.set_alloc_limit "
                         f"changes it)" + (f"; {hint}" if hint else ""))

