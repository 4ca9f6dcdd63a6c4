"""Retrieval: an approximate nearest-neighbour index (usearch, cosine) over each sketch's prefix,
kept in step with the store, and exact re-ranking of its candidates.

The index is a cache: ``index.usearch`` is loaded if present, and caught up with the metadata
(added and deleted sketches) whenever the store's change counter moved; a damaged file is
rebuilt. It is saved by the writer that closes the repository.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .._checks import as_real_array
from .store import Store, id_array, one_id

__all__ = ["RetrievalIndex"]


class RetrievalIndex:
    """The prefix index of one :class:`Store`; guarded by the store's lock."""

    def __init__(self, store: Store):
        self._store = store
        self._index: Any = None
        self._change = -1
        self._dirty = False

    def sync(self) -> Any:
        """The in-memory index, loaded or rebuilt and caught up with the metadata."""
        store = self._store
        with store.lock:
            store.check_open()
            change = int(store.meta()["change"])
            if self._index is not None and change == self._change:
                return self._index
            from usearch.index import Index

            (ids, _, off, ln, _, _), data = store.selected()
            if self._index is None:
                self._index = Index(ndim=store.index_dim, metric="cos", dtype="f32")
                path = store.path / "index.usearch"
                if path.is_file():
                    try:
                        self._index.load(str(path))
                    except Exception:  # a damaged cache: rebuild it
                        self._index = Index(ndim=store.index_dim, metric="cos", dtype="f32")
                self._dirty = False
            have = np.asarray(self._index.keys, dtype=np.int64) if len(self._index) else \
                np.zeros(0, np.int64)
            stale = np.setdiff1d(have, ids)
            if stale.size:
                self._index.remove(stale.astype(np.uint64))
            missing = np.setdiff1d(ids, have)
            if missing.size:
                pos = np.searchsorted(ids, missing)
                for start in range(0, missing.size, 4096):
                    part = pos[start:start + 4096]
                    vecs = store.load(off[part], ln[part], data, width=store.index_dim)
                    self._index.add(missing[start:start + 4096].astype(np.uint64), vecs)
            self._dirty = self._dirty or bool(stale.size or missing.size)
            self._change = change
            return self._index

    def save_if_changed(self) -> None:
        """Write the index file (caller holds the store's writer lock) if it moved on."""
        if self._index is None or not self._dirty:
            return
        path = self._store.path
        tmp = path / "index.usearch.tmp"
        self._index.save(str(tmp))
        os.replace(tmp, path / "index.usearch")
        self._dirty = False

    @property
    def needs_saving(self) -> bool:
        return self._index is not None and self._dirty

    def search(self, query: Any, k: int, candidates: Optional[int],
               exclude: Optional[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` stored sketches most similar (cosine) to ``query`` (a sketch or a stored
        id, then excluded): ``(ids, cosines)``; see :meth:`Repository.search`."""
        store = self._store
        d = store.d
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if candidates is not None and (isinstance(candidates, bool) or not isinstance(
                candidates, numbers.Integral) or candidates < 1):
            raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
        skip = set() if exclude is None else set(id_array(exclude, "exclude").tolist())
        # a scalar is a stored id (1.0 as well, by the ids' rule); a sketch is an array
        if isinstance(query, numbers.Real) and not isinstance(query, (bool, np.bool_)):
            query = one_id(query, "query")
            skip.add(query)
            r, data = store.located([query])
            q = store.load(r.offsets, r.lengths, data)[0]
            q_len = int(r.lengths[0])
        else:
            q = as_real_array(query, "query").astype(np.float32)
            if q.shape != (d,):
                raise ValueError(f"query must be an id or a sketch of shape ({d},)")
            if not np.all(np.isfinite(q)):
                raise ValueError("query contains NaN or infinity")
            q_len = d
        with store.lock:  # usearch's index is not shared safely with a concurrent sync
            index = self.sync()
            n = len(index)
            if n == 0:
                return np.zeros(0, np.int64), np.zeros(0)
            want = min(n, (candidates or max(10 * k, 100)) + len(skip))
            matches = index.search(q[:store.index_dim], want)
            cand = np.asarray(matches.keys, dtype=np.int64)
        cand = cand[~np.isin(cand, list(skip))]
        # candidates deleted (by another thread or process) since the index caught up are
        # left out, in the same snapshot that locates the others
        (cand, _, off, ln, _, _), data = store.located(cand, missing_ok=True)
        if cand.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        rows = store.load(off, ln, data)
        sims = np.empty(cand.size)
        for length in np.unique(np.minimum(ln, q_len)):
            sel = np.minimum(ln, q_len) == length
            a = rows[sel, :length].astype(np.float64)
            b = q[:length].astype(np.float64)
            denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b)
            sims[sel] = np.divide(a @ b, denom, out=np.zeros(a.shape[0]), where=denom > 0)
        order = np.argsort(-sims, kind="stable")[:k]
        return cand[order], sims[order]
