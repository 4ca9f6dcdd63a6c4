"""Queries over many stored sketches (count, mass, mean attributes), streamed in chunks.

The selected sketches are read in chunks of at most ``chunk_bytes`` of float32 values (rows of
one kept length per chunk; a forgotten sketch is read as the prefix it kept, rescaled by graceful
erasure), so a repository larger than memory can be aggregated. The aggregates add about
2.5 x ``chunk_bytes`` to a process (the chunk, read straight into a float32 array, and the
Sketcher's float64 intermediates on it; measured under RLIMIT_AS: 64 MiB chunks run within 160
MiB, not within 96 MiB) plus 40 bytes per selected sketch: its id, timestamp, offset and length
(fetched from SQLite in blocks into arrays) and its result (for per-sketch queries).
"""

from __future__ import annotations

import numbers
import os
import threading
from contextlib import closing
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import numpy as np

from ..erasure import ErasedSketch
from ..sketcher import Sketcher
from .store import Rows, Store

__all__ = ["DEFAULT_CHUNK_BYTES", "MAX_CHUNK_BYTES", "check_chunk_bytes", "Aggregates"]

DEFAULT_CHUNK_BYTES = 64 << 20  # 64 MiB: 16,384 sketches of d = 1024 per chunk
# Largest chunk_bytes accepted: 4 GiB of float32 values per chunk, about 10 GiB of memory in
# all; a chunk this size already keeps the Sketcher's matrix products at full speed.
MAX_CHUNK_BYTES = 4 << 30

Batch = Union[np.ndarray, ErasedSketch]


def check_chunk_bytes(value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not 1 <= value <= MAX_CHUNK_BYTES):
        raise ValueError(f"chunk_bytes must be in [1, {MAX_CHUNK_BYTES}] (4 GiB), got {value!r}")
    return int(value)


class Aggregates:
    """Count, mass and mean attributes over stored sketches, with the Sketcher's queries run
    under ``sketcher_lock`` (the Sketcher is shared with the repository's other callers)."""

    def __init__(self, store: Store, sketcher: Sketcher, sketcher_lock: threading.RLock):
        self._store = store
        self._sketcher = sketcher
        self._sketcher_lock = sketcher_lock

    def chunks(self, rows: Rows, fd: int, chunk_bytes: int
               ) -> Iterator[Tuple[np.ndarray, Batch]]:
        """``(positions in rows, sketches)`` of the selected rows, a chunk of one kept length
        at a time, read from ``fd`` (of :meth:`Store.streamed`, closed here)."""
        d = self._store.d
        if fd < 0:
            return
        try:
            for length in np.unique(rows.lengths).tolist():
                sel = np.flatnonzero(rows.lengths == length)
                step = max(1, chunk_bytes // (4 * length))
                for start in range(0, sel.size, step):
                    part = sel[start:start + step]
                    vals = self._store.read(fd, rows.offsets[part], length)
                    if length == d:
                        yield part, vals
                    else:
                        yield part, ErasedSketch(vals, np.arange(length), d, "prefix", 0)
        finally:
            os.close(fd)

    def per_sketch(self, query: Callable[[Sketcher, Batch], Any], rows: Rows, fd: int,
                   chunk_bytes: int, transform: Optional[Callable[[Batch], np.ndarray]] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
        """``(ids, values)`` of a per-sketch query, in id order (rows and ``fd`` from
        :meth:`Store.streamed`). ``transform`` (e.g. a denoising projection) is applied to each
        chunk before the query, outside the Sketcher's lock."""
        out = np.empty(rows.ids.size)  # filled in place: rows are in id order already
        # closed on an error too: a traceback kept alive must not keep the descriptor open
        with closing(self.chunks(rows, fd, chunk_bytes)) as chunks:
            for part, s in chunks:
                if transform is not None:
                    s = transform(s)
                with self._sketcher_lock:
                    out[part] = np.atleast_1d(query(self._sketcher, s))
        return rows.ids, out

    def mean_attributes(self, module: str, method: str, rows: Rows, fd: int,
                        chunk_bytes: int, fan_in: Optional[int] = None,
                        transform: Optional[Callable[[Batch], np.ndarray]] = None,
                        read: Optional[Callable[[Batch], Tuple[np.ndarray, np.ndarray]]] = None
                        ) -> np.ndarray:
        """Sum over sketches of the summed attributes of ``module`` / sum of its masses
        (``transform`` as in :meth:`per_sketch`; ``read``, if given, returns a chunk's
        ``(summed attributes, masses)`` instead of the Sketcher's ``method``)."""
        total_x, total_m = None, 0.0
        with closing(self.chunks(rows, fd, chunk_bytes)) as chunks:
            for _, s in chunks:
                if transform is not None:
                    s = transform(s)
                with self._sketcher_lock:
                    if read is not None:
                        x, m = read(s)
                    else:
                        x = self._sketcher.summed_attributes(s, module, 1.0, method,
                                                             fan_in=fan_in)
                        m = self._sketcher.mass(s, module, method, fan_in=fan_in)
                x, m = np.atleast_2d(x), np.atleast_1d(m)
                total_x = x.sum(axis=0) if total_x is None else total_x + x.sum(axis=0)
                total_m += float(m.sum())
        if total_x is None:
            raise ValueError("no sketch matches the selection")
        return total_x / total_m if total_m != 0 else np.full_like(total_x, np.nan)
