"""Object sketches in the repository, and fingerprint search over them (paper Section 1.1:
"we can also store lower-level object sketches. When we perform object attribute recovery ...,
we can treat the result as a fingerprint to search for a more accurate sketch of that object").

Storage, in the repository folder::

    objects.bin     every stored object sketch, ``d`` values each (the repository's dtype),
                    appended batch after batch
    repo.sqlite     table ``objects``: one row per object sketch (object id, graph id, index
                    in the graph, module, where its values live, and its *fingerprint*)

The fingerprint of an object is the attribute read back from its own object sketch
(:func:`fingerprints`), clipped at zero and unit-normalised, stored as float32 (one
``attribute_dim`` vector per object). It is what a recovered attribute is compared with.

Crash safety: the rows are written inside the transaction that stores their graphs' sketches
(``Store.append``'s hook). Within it, the objects file is first cut to the committed end (a
killed writer's torn tail), the batch is appended and fsynced, then the rows and the new end are
written; so the objects are stored together with their sketches or not at all. Deleting a
sketch deletes its objects' rows in the same transaction; their bytes stay until
:meth:`ObjectStore.compact` (``Repository.compact`` and ``forget``).

Compaction writes the live object sketches, in object id order, to the next *generation*
(``objects.<g>.bin``; generation 0 is ``objects.bin``), fsyncs it and its folder entry, then
switches the rows' offsets, ``objects_end`` and ``objects_generation`` in one transaction. A
failure before the commit leaves the old generation in use (the new file is removed, or by the
next writer if the process was killed); after it the new one. Like the sketches' data files, the
two generations before the current one are kept for readers whose snapshot still names them;
a reader that finds its generation retired takes a new snapshot.

Threads: every use of the connection and the file is under the store's lock (the facade's
lock order: the store's lock before the Sketcher's, never the reverse).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..sketcher import Sketcher
from .store import Store, fsync_dir

__all__ = ["ObjectBatch", "ObjectMatches", "ObjectStore", "fingerprints"]

_FILE = "objects.bin"
_TABLE = """CREATE TABLE IF NOT EXISTS objects(
    oid INTEGER PRIMARY KEY, graph INTEGER NOT NULL, idx INTEGER NOT NULL,
    module TEXT NOT NULL, offset INTEGER NOT NULL, fingerprint BLOB NOT NULL)"""
_INDEXES = ("CREATE INDEX IF NOT EXISTS objects_module ON objects(module)",
            "CREATE INDEX IF NOT EXISTS objects_graph ON objects(graph)")


class ObjectBatch(NamedTuple):
    """The objects of a batch of graphs, ready to store (row ``r`` is object ``index[r]`` of
    graph ``graph[r]``, the position of the graph in the batch)."""

    graph: np.ndarray          # (m,) int64, position of the graph in the batch
    index: np.ndarray          # (m,) int64, Handle.index of the object in its graph
    module: List[str]          # (m,)
    sketches: np.ndarray       # (m, d) in the repository's dtype
    fingerprints: List[np.ndarray]  # m float32 vectors, unit norm (or zero)


class ObjectMatches(NamedTuple):
    """Result of :meth:`Repository.find_object`, best first.

    ``fingerprint_scores``: cosines between the attribute recovered from the query and the
    candidates' fingerprints (the attribute read back from their stored object sketches).
    ``scores`` rank the result: the fingerprint cosines, or with ``rerank=True`` the centred
    cosines between the candidates' stored object sketches and the object sketch rebuilt from
    the query.
    """

    object_ids: np.ndarray
    graph_ids: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    fingerprint_scores: np.ndarray


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, None)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def fingerprints(sk: Sketcher, module: str, object_sketches: np.ndarray) -> np.ndarray:
    """The attribute of each object read back from its own object sketch, clipped at zero and
    unit-normalised: ``(m, attribute_dim)`` float32.

    An object sketch is ``y = P(R[M,0]) (P(R[1]) s_attr / 2 + P(R[2]) s_in / 2)`` with
    ``s_attr = (R[M,1] x + R[M,2] e_1) / 2`` (Section 3.3; ``P(R) = (I + R)/2``). Coordinate j
    of the attribute enters as the column ``u_j = P(R[M,0]) P(R[1]) R[M,1] e_j / 4``; the read
    is the matched filter ``<u_j, y> / |u_j|^2`` (exact for the attribute part, plus the
    incoherent cross-talk of the other columns and of the inputs). The caller holds the
    Sketcher's lock.
    """
    dim = sk.module_info(module).attribute_dim
    r0, r1, p1 = sk.module_matrix(module, 0), sk.module_matrix(module, 1), sk.position_matrix(1)
    y = np.ascontiguousarray(object_sketches, dtype=np.float64)
    z = p1.half_T(r0.half_T(y))
    raw = 0.25 * r1.rmatvec(z)[:, :dim] / _column_norms2(sk, module, dim)
    return _unit_rows(raw).astype(np.float32)


def _column_norms2(sk: Sketcher, module: str, dim: int) -> np.ndarray:
    """``|u_j|^2`` for j < dim (computed in slabs of 256 columns: memory 256 d doubles)."""
    r0, r1, p1 = sk.module_matrix(module, 0), sk.module_matrix(module, 1), sk.position_matrix(1)
    out = np.empty(dim)
    for a in range(0, dim, 256):
        b = min(dim, a + 256)
        eye = np.zeros((b - a, dim))
        eye[np.arange(b - a), np.arange(a, b)] = 1.0
        u = 0.25 * r0.half(p1.half(r1.apply_short(eye)))
        out[a:b] = np.einsum("ij,ij->i", u, u)
    return out


def rebuild_object_sketch(sk: Sketcher, s: Any, module: str,
                          path: Optional[Sequence[int]]) -> np.ndarray:
    """The object sketch of the object at ``path`` estimated from ``s``: the sub-sketch
    (its tuple sketch, times its weight) wrapped by ``P(R[M,0])``, as a unit vector ``(d,)``.
    ``s`` may be that object's own :class:`SubSketch` (then ``path`` is empty or None).
    The caller holds the Sketcher's lock."""
    from ..queries import SubSketch
    if isinstance(s, SubSketch) and s.module == module and not path:
        t = np.asarray(s.values, dtype=np.float64)
    else:
        t = np.asarray(sk.subsketch(s, path, module).values, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError("find_object takes one sketch, not a batch")
    y = sk.module_matrix(module, 0).half(t)
    norm = np.linalg.norm(y)
    return y / norm if norm > 0 else y


class ObjectStore:
    """The ``objects`` table and objects files of one repository (see the module docstring)."""

    def __init__(self, store: Store):
        self._store = store

    def file(self, generation: int):
        """The objects file of a generation (0: ``objects.bin``)."""
        return self._store.path / (_FILE if generation == 0 else f"objects.{generation}.bin")

    def generation(self) -> int:
        """The current generation (0 before any compaction)."""
        with self._store.lock:
            return self._generation(self._store.db)

    @staticmethod
    def _generation(db: Any) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'objects_generation'").fetchone()
        return 0 if row is None else int(row[0])

    def _drop_stale(self, generation: int) -> None:
        """Writer only: remove objects files of retired generations (keeping the two before
        ``generation`` for readers still on them) and of uncommitted ones (a killed
        compaction's)."""
        for other in self._store.path.glob("objects.*.bin"):
            try:
                g = int(other.name.split(".")[1])
            except ValueError:
                continue
            if g < generation - 2 or g > generation:
                other.unlink(missing_ok=True)
        if generation > 2:
            self.file(0).unlink(missing_ok=True)

    def _has_table(self) -> bool:
        db = self._store.db
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'objects'").fetchone() is not None

    # -- writing (inside Store.append's transaction) ---------------------------------------------
    def write(self, batch: ObjectBatch, graph_ids: np.ndarray) -> np.ndarray:
        """Store ``batch`` for the graphs stored under ``graph_ids``; returns the objects' ids
        (in the batch's row order). Called inside the write transaction that stores the
        graphs' sketches (the caller holds the writer lock)."""
        store = self._store
        db = store.db
        db.execute(_TABLE)
        for q in _INDEXES:
            db.execute(q)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('objects_end', '0')")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('objects_next', '0')")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('objects_generation', '0')")
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN "
                               "('objects_end', 'objects_next', 'objects_generation')"
                               ).fetchall())
        end, next_oid = int(meta["objects_end"]), int(meta["objects_next"])
        gen = int(meta["objects_generation"])
        m, d = batch.sketches.shape
        if m == 0:
            return np.zeros(0, np.int64)
        item = store.dtype.itemsize
        path = self.file(gen)
        new_file = not path.exists()
        with open(path, "ab") as f:
            pass
        with open(path, "r+b") as f:
            f.truncate(end * item)  # a killed writer's torn tail
            f.seek(end * item)
            f.write(np.ascontiguousarray(batch.sketches, dtype=store.dtype).tobytes())
            f.flush()
            os.fsync(f.fileno())
        if new_file:
            fsync_dir(store.path)
        rows = [(next_oid + r, int(graph_ids[batch.graph[r]]), int(batch.index[r]),
                 batch.module[r], end + r * d, np.asarray(batch.fingerprints[r],
                                                          np.float32).tobytes())
                for r in range(m)]
        db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?)", rows)
        store.set_meta(objects_end=end + m * d, objects_next=next_oid + m)
        return np.arange(next_oid, next_oid + m, dtype=np.int64)

    def delete_graphs(self, graph_ids: np.ndarray) -> None:
        """Inside the delete transaction: drop the objects of those graphs."""
        if self._has_table():
            self._store.db.executemany("DELETE FROM objects WHERE graph = ?",
                                       [(int(i),) for i in graph_ids])

    # -- reading --------------------------------------------------------------------------------
    def _snapshot(self, sql: str, params: Tuple[Any, ...]) -> Tuple[List[Any], int]:
        """Rows of ``sql`` and the objects generation their offsets point into, read in one
        snapshot (one read transaction)."""
        store = self._store
        with store.lock:
            store.check_open()
            if not self._has_table():
                return [], 0
            cur = store.db.cursor()
            cur.execute("BEGIN")
            try:
                rows = cur.execute(sql, params).fetchall()
                gen = self._generation(cur)
            finally:
                cur.execute("COMMIT")
        return rows, gen

    def of_module(self, module: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                               List[bytes], int]:
        """(object ids, graph ids, indices, offsets, fingerprint blobs, generation) of one
        module's objects, in one snapshot."""
        rows, gen = self._snapshot("SELECT oid, graph, idx, offset, fingerprint FROM objects "
                                   "WHERE module = ? ORDER BY oid", (module,))
        n = len(rows)
        return (np.fromiter((r[0] for r in rows), np.int64, n),
                np.fromiter((r[1] for r in rows), np.int64, n),
                np.fromiter((r[2] for r in rows), np.int64, n),
                np.fromiter((r[3] for r in rows), np.int64, n),
                [r[4] for r in rows], gen)

    def of_graph(self, graph_id: int) -> Tuple[np.ndarray, List[str], np.ndarray, int]:
        """(indices, modules, offsets, generation) of one graph's stored objects, in index
        order, in one snapshot."""
        rows, gen = self._snapshot("SELECT idx, module, offset FROM objects WHERE graph = ? "
                                   "ORDER BY idx", (int(graph_id),))
        return (np.asarray([r[0] for r in rows], np.int64), [r[1] for r in rows],
                np.asarray([r[2] for r in rows], np.int64), gen)

    def read(self, offsets: np.ndarray, generation: int) -> np.ndarray:
        """Object sketches at ``offsets`` of ``generation``'s file as float32 ``(n, d)``
        (pread: rows committed before the snapshot that gave the offsets are never
        rewritten). FileNotFoundError if the generation was retired since the snapshot
        (take a new one)."""
        store = self._store
        d, dt = store.d, store.dtype
        out = np.empty((offsets.size, d), dtype=np.float32)
        if offsets.size == 0:
            return out
        fd = os.open(self.file(generation), os.O_RDONLY)
        try:
            for r, off in enumerate(offsets.tolist()):
                buf = os.pread(fd, d * dt.itemsize, off * dt.itemsize)
                if len(buf) != d * dt.itemsize:
                    raise ValueError("objects.bin is shorter than its metadata says")
                out[r] = np.frombuffer(buf, dtype=dt)
        finally:
            os.close(fd)
        return out

    # -- compaction ------------------------------------------------------------------------------
    def compact(self, *, force: bool = True) -> Dict[str, int]:
        """Rewrite the live object sketches into the next generation, dropping the bytes of
        deleted ones (see the module docstring for the crash safety). Returns the bytes
        before and after. With ``force=False`` nothing is written when no bytes are dead."""
        store = self._store
        item = store.dtype.itemsize
        d = store.d
        with store.writer():
            db = store.db
            if not self._has_table():
                return {"objects": 0, "object_bytes_before": 0, "object_bytes_after": 0}
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN "
                                   "('objects_end', 'objects_generation')").fetchall())
            end = int(meta.get("objects_end", 0))
            gen = int(meta.get("objects_generation", 0))
            self._drop_stale(gen)
            rows = db.execute("SELECT oid, offset FROM objects ORDER BY oid").fetchall()
            if not force and end == len(rows) * d:  # every stored byte is live
                return {"objects": len(rows), "object_bytes_before": end * item,
                        "object_bytes_after": end * item}
            new_gen = gen + 1
            path = self.file(new_gen)
            old = self.file(gen)
            try:
                with open(path, "wb") as f:
                    if rows:
                        fd = os.open(old, os.O_RDONLY)
                        try:
                            for _, off in rows:
                                buf = os.pread(fd, d * item, off * item)
                                if len(buf) != d * item:
                                    raise ValueError("the objects file is shorter than its "
                                                     "metadata says")
                                f.write(buf)
                        finally:
                            os.close(fd)
                    f.flush()
                    os.fsync(f.fileno())
                fsync_dir(store.path)  # the new file is durable before anything points to it
                with store.transaction():
                    db.executemany("UPDATE objects SET offset = ? WHERE oid = ?",
                                   [(k * d, int(oid)) for k, (oid, _) in enumerate(rows)])
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('objects_generation', '0')")
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('objects_end', '0')")
                    store.set_meta(objects_end=len(rows) * d, objects_generation=new_gen)
            except BaseException:
                # after a COMMIT interrupted on its way out the new generation is in use
                try:
                    orphan = self._generation(db) != new_gen
                except BaseException:
                    orphan = False
                if orphan:
                    path.unlink(missing_ok=True)
                raise
            self._drop_stale(new_gen)
        return {"objects": len(rows), "object_bytes_before": end * item,
                "object_bytes_after": len(rows) * d * item}

    def count(self) -> int:
        store = self._store
        with store.lock:
            store.check_open()
            if not self._has_table():
                return 0
            return int(store.db.execute("SELECT COUNT(*) FROM objects").fetchone()[0])
