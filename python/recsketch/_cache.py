"""A least-recently-used cache bounded by bytes, safe to share between threads."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Tuple

import numpy as np

from ._checks import check_int
from ._forksafe import fork_safe_lock

__all__ = ["ByteLRU"]


def nbytes_of(value: Any) -> int:
    """Bytes an entry holds: an array's buffer, or a small fixed charge for anything else (the
    symbolic probes are a few hundred bytes; their arrays are what fills memory)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    return 512


class ByteLRU:
    """Maps keys to values built on demand, evicting the least recently used entries once their
    bytes exceed ``limit``. An entry larger than the whole limit is built and returned but not
    kept. Values must be immutable (arrays are handed out read-only).

    Thread-safe: the map and the byte count change only under the lock. A missing entry is built
    outside the lock (so one slow build does not stall every other query); two threads racing
    for the same key may both build it, and the first one stored wins (builds are
    deterministic, so both are equal).
    """

    def __init__(self, limit: int):
        self._lock = fork_safe_lock()
        self._entries: "OrderedDict[Hashable, Tuple[Any, int]]" = OrderedDict()
        self._bytes = 0
        self._limit = check_int(limit, "cache limit", minimum=0)
        self._hits = 0
        self._misses = 0

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return hit[0]
            self._misses += 1
        value = build()
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
        size = nbytes_of(value)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:  # another thread stored it meanwhile
                self._entries.move_to_end(key)
                return hit[0]
            if size <= self._limit:
                self._entries[key] = (value, size)
                self._bytes += size
                self._evict()
        return value

    def _evict(self) -> None:
        while self._bytes > self._limit and self._entries:
            _, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        value = check_int(value, "cache limit", minimum=0)
        with self._lock:
            self._limit = value
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._hits = self._misses = 0

    def info(self) -> Dict[str, int]:
        """``bytes`` held, ``limit``, ``entries``, ``hits`` and ``misses`` (since the last clear)."""
        with self._lock:
            return {"bytes": self._bytes, "limit": self._limit, "entries": len(self._entries),
                    "hits": self._hits, "misses": self._misses}
