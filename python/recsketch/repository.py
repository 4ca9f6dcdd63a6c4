"""A persistent, crash-safe store of sketches (paper Section 1.1, "Sketch Repository").

Layout of a repository folder::

    repo.sqlite        metadata (SQLite, WAL): the Sketcher's JSON, one row per sketch
                       (id, timestamp, labels, where its values live), and the store's state
    data.<gen>.bin     the sketches' values, appended row after row (float32 or float16)
    index.usearch      approximate nearest-neighbour index over each sketch's prefix (a cache:
                       rebuilt or caught up from the metadata whenever it is stale)
    write.lock         held (flock) by the process that is writing

Crash safety: a batch is appended to the data file and fsynced *before* the SQLite transaction
that makes it visible commits; bytes past the committed end (a batch killed half-way) are cut
off by the next writer. Forgetting rewrites the data into a new generation file and switches
to it in one transaction. Readers see a consistent snapshot at every call.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import math
import numbers
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .erasure import ErasedSketch
from .sketcher import Sketcher

__all__ = ["Repository", "Clusters", "ForgetPolicy", "DEFAULT_POLICY"]

_FORMAT = "recsketch.Repository"
_FORMAT_VERSION = 1
_DAY = 86400.0

TimeLike = Union[float, int, _dt.datetime, _dt.date, np.datetime64, str]

# Graceful forgetting (Section 3.1 and 1.1): (age, fraction of the sketch kept) tiers.
DEFAULT_POLICY: Tuple[Tuple[float, float], ...] = ((30 * _DAY, 1.0), (365 * _DAY, 0.25),
                                                    (math.inf, 1.0 / 16))
ForgetPolicy = Sequence[Tuple[Union[float, _dt.timedelta], float]]


def _to_seconds(t: Any, name: str = "timestamp") -> float:
    """Unix seconds from a number, a datetime/date (naive = UTC), a numpy datetime64 or an
    ISO-8601 string."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be a time, got a bool")
    if isinstance(t, numbers.Real):
        v = float(t)
    elif isinstance(t, np.datetime64):
        v = float(t.astype("datetime64[us]").astype(np.int64)) / 1e6
    elif isinstance(t, _dt.datetime):
        v = (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).timestamp()
    elif isinstance(t, _dt.date):
        v = _dt.datetime(t.year, t.month, t.day, tzinfo=_dt.timezone.utc).timestamp()
    elif isinstance(t, str):
        try:
            return _to_seconds(_dt.datetime.fromisoformat(t), name)
        except ValueError as exc:
            raise ValueError(f"{name}: not an ISO-8601 time: {t!r}") from exc
    else:
        raise TypeError(f"{name} must be a number, datetime, date, datetime64 or ISO string, "
                        f"got {type(t).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite")
    return v


def _seconds(age: Any) -> float:
    if isinstance(age, _dt.timedelta):
        return age.total_seconds()
    if isinstance(age, numbers.Real) and not isinstance(age, (bool, np.bool_)):
        return float(age)
    raise TypeError(f"a policy age must be seconds or a timedelta, got {type(age).__name__}")


@dataclass(frozen=True)
class Clusters:
    """k-means clusters of stored sketches (on their normalised index prefixes).

    ``ids[i]`` belongs to cluster ``labels[i]``; ``centroids`` has one row per cluster;
    ``first_seen``/``last_seen`` are the earliest/latest member timestamps of each cluster.
    """

    ids: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    first_seen: np.ndarray
    last_seen: np.ndarray
    timestamps: np.ndarray

    def members(self, cluster: int) -> np.ndarray:
        return self.ids[self.labels == cluster]

    def new_since(self, t: TimeLike, fraction: float = 0.9) -> List[int]:
        """Clusters at least ``fraction`` of whose members are dated ``t`` or later: the
        concepts that emerged since then, largest first."""
        since = _to_seconds(t, "t")
        out = []
        for c in range(self.centroids.shape[0]):
            ts = self.timestamps[self.labels == c]
            if ts.size and np.mean(ts >= since) >= fraction:
                out.append(c)
        return sorted(out, key=lambda c: -self.sizes[c])


class Repository:
    """Many sketches on disk, with metadata, retrieval, aggregates, clustering and forgetting.

    Create with :meth:`create`, reopen with :meth:`open`; use as a context manager (or call
    :meth:`close`) so the nearest-neighbour index is saved (it is rebuilt if it is not).
    """

    # -- lifecycle ------------------------------------------------------------------------------
    def __init__(self, path: Path, sketcher: Sketcher, *, _token: object = None):
        if _token is not _PRIVATE:
            raise TypeError("use Repository.create(path, sketcher) or Repository.open(path)")
        # One SQLite connection per instance: a lock keeps its transactions from interleaving
        # when threads share the Repository.
        self._lock = threading.RLock()
        self._path = path
        self._sketcher = sketcher
        self._db = sqlite3.connect(str(path / "repo.sqlite"), timeout=60.0,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        meta = self._meta()
        self._dtype = np.dtype(meta["dtype"])
        self._index_dim = int(meta["index_dim"])
        self._d = sketcher.d_sketch
        self._map: Optional[np.memmap] = None
        self._map_gen = -1
        self._index: Any = None
        self._index_change = -1
        self._index_dirty = False
        self._closed = False

    @classmethod
    def create(cls, path: Union[str, os.PathLike], sketcher: Sketcher, *,
               dtype: Any = "float32", index_dim: Optional[int] = None) -> "Repository":
        """Create an empty repository folder (it must not exist, or be empty).

        ``dtype`` is the storage type, ``float32`` or ``float16`` (half the space; about 3
        significant digits, far below the sketches' own noise). ``index_dim`` is the prefix
        length indexed for retrieval (default ``min(d, 256)``); forgetting never cuts a
        sketch below it.
        """
        if not isinstance(sketcher, Sketcher):
            raise TypeError("sketcher must be a recsketch.Sketcher")
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise ValueError(f"{p} exists and is not an empty folder")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"dtype must be float32 or float16, got {dt}")
        d = sketcher.d_sketch
        if index_dim is None:
            index_dim = min(d, 256)
        if isinstance(index_dim, bool) or not isinstance(index_dim, numbers.Integral) \
                or not 1 <= index_dim <= d:
            raise ValueError(f"index_dim must be an integer in [1, {d}], got {index_dim!r}")
        p.mkdir(parents=True, exist_ok=True)
        tmp = p / "repo.sqlite.tmp"
        db = sqlite3.connect(str(tmp), isolation_level=None)
        db.executescript("""
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE sketches(
                id INTEGER PRIMARY KEY, ts REAL NOT NULL, labels TEXT,
                offset INTEGER NOT NULL, length INTEGER NOT NULL);
            CREATE INDEX sketches_ts ON sketches(ts);
            CREATE TABLE retired(id INTEGER PRIMARY KEY);
        """)
        meta = {"format": _FORMAT, "format_version": str(_FORMAT_VERSION),
                "sketcher": sketcher.to_json(), "dtype": dt.name, "index_dim": str(index_dim),
                "generation": "0", "data_end": "0", "next_id": "0", "change": "0"}
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.close()
        with open(p / "data.0.bin", "wb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p / "repo.sqlite")  # the repository exists once this file does
        _fsync_dir(p)
        return cls(p, Sketcher.from_json(sketcher.to_json()), _token=_PRIVATE)

    @classmethod
    def open(cls, path: Union[str, os.PathLike], sketcher: Optional[Sketcher] = None
             ) -> "Repository":
        """Open an existing repository. If ``sketcher`` is given it must generate the same
        matrices as the stored one (ValueError otherwise); its module registry is merged."""
        p = Path(path)
        if not (p / "repo.sqlite").is_file():
            raise ValueError(f"{p} is not a recsketch repository (no repo.sqlite)")
        db = sqlite3.connect(str(p / "repo.sqlite"), timeout=60.0)
        try:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
        if rows.get("format") != _FORMAT or rows.get("format_version") != str(_FORMAT_VERSION):
            raise ValueError(f"{p} is not a recsketch repository of a supported version")
        stored = Sketcher.from_json(rows["sketcher"])
        if sketcher is not None:
            if not isinstance(sketcher, Sketcher):
                raise TypeError("sketcher must be a recsketch.Sketcher")
            if not stored.same_matrices(sketcher):
                raise ValueError("the repository was created with a different Sketcher "
                                 f"configuration: {stored!r} vs {sketcher!r}")
        repo = cls(p, stored, _token=_PRIVATE)
        if sketcher is not None:
            repo._merge_registry(sketcher)
        return repo

    def close(self) -> None:
        """Save the retrieval index and close the database."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._index is not None and self._index_dirty:
                    with self._writer():
                        self._save_index()
            finally:
                self._map = None
                self._db.close()
                self._closed = True

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Repository({str(self._path)!r}, {len(self)} sketches, d={self._d}, "
                f"dtype={self._dtype.name})")

    # -- properties -----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def sketcher(self) -> Sketcher:
        """The repository's Sketcher (sketch new graphs with it; see :meth:`add_graphs`)."""
        return self._sketcher

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def index_dim(self) -> int:
        return self._index_dim

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM sketches").fetchone()[0])

    # -- internals: metadata, locking, data file ------------------------------------------------
    def _meta(self) -> Dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the repository is closed")

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """Exclusive write access across processes (blocking flock on write.lock)."""
        with self._lock:
            self._check_open()
            with open(self._path / "write.lock", "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (caller holds _writer)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _data_path(self, generation: int) -> Path:
        return self._path / f"data.{generation}.bin"

    def _repair(self, meta: Dict[str, str]) -> None:
        """Writer only: cut bytes past the committed end, drop stale generations."""
        gen, end = int(meta["generation"]), int(meta["data_end"])
        path = self._data_path(gen)
        nbytes = end * self._dtype.itemsize
        if path.stat().st_size > nbytes:
            with open(path, "r+b") as f:
                f.truncate(nbytes)
                f.flush()
                os.fsync(f.fileno())
        for other in self._path.glob("data.*.bin"):
            try:
                g = int(other.name.split(".")[1])
            except ValueError:
                continue
            if g < gen - 2 or g > gen:  # keep two older ones for readers still on them
                other.unlink(missing_ok=True)

    def _view(self, generation: int, end: int) -> np.ndarray:
        """The data file of a generation as a read-only array of at least ``end`` values."""
        if self._map is None or self._map_gen != generation or self._map.size < end:
            self._map = None
            if end == 0:
                return np.zeros(0, self._dtype)
            self._map = np.memmap(self._data_path(generation), dtype=self._dtype, mode="r")
            self._map_gen = generation
        return self._map

    def _merge_registry(self, sketcher: Sketcher) -> None:
        with self._writer(), self._transaction():
            self._store_registry(sketcher)

    def _store_registry(self, sketcher: Sketcher) -> None:
        """Inside a write transaction: merge ``sketcher``'s modules into the stored registry
        (re-read now, so registrations of other processes are kept) and into ours."""
        stored = self._db.execute("SELECT value FROM meta WHERE key = 'sketcher'").fetchone()[0]
        merged = Sketcher.from_json(stored)
        for source in (self._sketcher, sketcher):
            for name, info in source.modules.items():
                merged.register_module(name, info.depth, info.attribute_dim)
        text = merged.to_json()
        if text != stored:
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'sketcher'", (text,))
        for name, info in merged.modules.items():
            if name not in self._sketcher.modules:
                self._sketcher.register_module(name, info.depth, info.attribute_dim)

    # -- writing -------------------------------------------------------------------------------
    def add(self, sketches: Any, *, ids: Optional[Sequence[int]] = None,
            timestamps: Any = None, labels: Any = None) -> np.ndarray:
        """Store a batch of sketches ``(n, d)`` (or one ``(d,)``) atomically; returns their ids.

        ``ids`` default to consecutive integers after the largest id ever stored; given ids must
        be new non-negative integers. ``timestamps``: one time for all or one per sketch
        (numbers are Unix seconds; datetimes, dates, datetime64 and ISO strings are accepted;
        default now). ``labels``: one JSON-serialisable value for all, or a list with one per
        sketch. Either the whole batch is stored or, on any error or a killed process, none.
        """
        return self._add(sketches, ids, timestamps, labels, registry=False)

    def _add(self, sketches: Any, ids: Any, timestamps: Any, labels: Any, *,
             registry: bool) -> np.ndarray:
        self._check_open()
        arr = sketches if isinstance(sketches, np.ndarray) else np.asarray(sketches, np.float64)
        if arr.dtype.kind != "f":
            raise TypeError(f"sketches must be a float array, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self._d:
            raise ValueError(f"sketches must have shape (n, {self._d}), got {arr.shape}")
        n = arr.shape[0]
        if n == 0:
            return np.zeros(0, np.int64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("sketches contain NaN or infinity")
        stored = arr.astype(self._dtype)
        if not np.all(np.isfinite(stored)):
            raise ValueError(f"sketches overflow the storage dtype {self._dtype}")
        ts = self._timestamps(timestamps, n)
        lab = self._labels(labels, n)
        with self._writer():
            meta = self._meta()
            self._repair(meta)
            gen, end = int(meta["generation"]), int(meta["data_end"])
            next_id = int(meta["next_id"])
            new_ids = self._ids(ids, n, next_id)
            with open(self._data_path(gen), "ab") as f:
                f.write(np.ascontiguousarray(stored).tobytes())
                f.flush()
                os.fsync(f.fileno())
            rows = [(int(i), float(t), l, end + k * self._d, self._d)
                    for k, (i, t, l) in enumerate(zip(new_ids, ts, lab))]
            with self._transaction():
                self._db.executemany("INSERT INTO sketches VALUES (?, ?, ?, ?, ?)", rows)
                self._set_meta(data_end=end + n * self._d,
                               next_id=max(next_id, int(new_ids.max()) + 1),
                               change=int(meta["change"]) + 1)
                if registry:  # the modules of these sketches, in the same transaction
                    self._store_registry(self._sketcher)
        return new_ids

    def add_graphs(self, graphs: Sequence[Any], *, num_threads: Optional[int] = None,
                   **kwargs: Any) -> np.ndarray:
        """Sketch graphs with the repository's Sketcher, record new modules, and :meth:`add`."""
        unknown = set(kwargs) - {"ids", "timestamps", "labels"}
        if unknown:
            raise TypeError(f"add_graphs got unexpected keywords {sorted(unknown)}")
        s = self._sketcher.sketch_many(graphs, num_threads=num_threads)
        return self._add(s, kwargs.get("ids"), kwargs.get("timestamps"), kwargs.get("labels"),
                         registry=True)

    def _set_meta(self, **values: Any) -> None:
        self._db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                             [(str(v), k) for k, v in values.items()])

    def _ids(self, ids: Any, n: int, next_id: int) -> np.ndarray:
        if ids is None:
            return np.arange(next_id, next_id + n, dtype=np.int64)
        out = np.asarray(ids)
        if out.shape != (n,) or out.dtype.kind not in "iu":
            raise ValueError(f"ids must be {n} integers")
        out = out.astype(np.int64)
        if np.any(out < 0) or np.unique(out).size != n:
            raise ValueError("ids must be distinct non-negative integers")
        taken = self._existing(out)
        if taken.size:
            raise ValueError(f"ids already stored: {taken[:10].tolist()}")
        retired = self._existing(out, "retired")
        if retired.size:  # an id names one sketch for ever (indexes and caches rely on it)
            raise ValueError(f"ids of deleted sketches cannot be reused: {retired[:10].tolist()}")
        return out

    def _existing(self, ids: np.ndarray, table: str = "sketches") -> np.ndarray:
        found: List[int] = []
        with self._lock:
            for chunk in range(0, ids.size, 900):
                part = ids[chunk:chunk + 900].tolist()
                q = f"SELECT id FROM {table} WHERE id IN ({','.join('?' * len(part))})"
                found += [r[0] for r in self._db.execute(q, part)]
        return np.asarray(sorted(found), dtype=np.int64)

    @staticmethod
    def _timestamps(timestamps: Any, n: int) -> List[float]:
        if timestamps is None:
            return [time.time()] * n
        if isinstance(timestamps, (str, _dt.date, np.datetime64, numbers.Real)):
            return [_to_seconds(timestamps)] * n
        seq = list(np.asarray(timestamps).tolist()) if isinstance(timestamps, np.ndarray) \
            and timestamps.dtype.kind != "M" else list(timestamps)
        if len(seq) != n:
            raise ValueError(f"timestamps: expected {n}, got {len(seq)}")
        return [_to_seconds(t) for t in seq]

    @staticmethod
    def _labels(labels: Any, n: int) -> List[Optional[str]]:
        def dump(v: Any) -> Optional[str]:
            if v is None:
                return None
            try:
                return json.dumps(v, sort_keys=True)
            except TypeError as exc:
                raise TypeError(f"labels must be JSON-serialisable: {exc}") from exc
        if labels is None:
            return [None] * n
        if isinstance(labels, (list, tuple)):
            if len(labels) != n:
                raise ValueError(f"labels: expected {n}, got {len(labels)}")
            return [dump(v) for v in labels]
        return [dump(labels)] * n

    def delete(self, ids: Any) -> int:
        """Delete sketches by id (unknown ids are a ValueError, nothing deleted); returns the
        number deleted. Their space is reclaimed by the next :meth:`forget` or :meth:`compact`."""
        want = np.unique(np.atleast_1d(np.asarray(ids)).astype(np.int64))
        with self._writer():
            found = self._existing(want)
            missing = np.setdiff1d(want, found)
            if missing.size:
                raise ValueError(f"no sketch with ids {missing[:10].tolist()}")
            meta = self._meta()
            with self._transaction():
                self._db.executemany("DELETE FROM sketches WHERE id = ?",
                                     [(int(i),) for i in want])
                self._db.executemany("INSERT INTO retired VALUES (?)", [(int(i),) for i in want])
                self._set_meta(change=int(meta["change"]) + 1)
        return int(want.size)

    # -- reading -------------------------------------------------------------------------------
    def _rows(self, where_sql: str = "", params: Sequence[Any] = ()
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """(ids, ts, offsets, lengths, generation, data_end) in one consistent snapshot."""
        with self._lock:
            self._check_open()
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                meta = dict(cur.execute("SELECT key, value FROM meta").fetchall())
                rows = cur.execute("SELECT id, ts, offset, length FROM sketches " + where_sql +
                                   " ORDER BY id", params).fetchall()
            finally:
                cur.execute("COMMIT")
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), np.int64, n)  # exact: ids may exceed 2**53
        ts = np.fromiter((r[1] for r in rows), np.float64, n)
        off = np.fromiter((r[2] for r in rows), np.int64, n)
        ln = np.fromiter((r[3] for r in rows), np.int64, n)
        return ids, ts, off, ln, int(meta["generation"]), int(meta["data_end"])

    def _load(self, offsets: np.ndarray, lengths: np.ndarray, gen: int, end: int,
              width: Optional[int] = None) -> np.ndarray:
        """Rows as float32, zero-filled beyond each stored length (or cut at ``width``)."""
        w = self._d if width is None else width
        out = np.zeros((offsets.size, w), dtype=np.float32)
        if offsets.size == 0:
            return out
        data = self._view(gen, end)
        # Vectorised gather, rows of one kept length at a time, in slabs of bounded index size.
        take = np.minimum(lengths, w)
        for m in np.unique(take):
            rows = np.flatnonzero(take == m)
            step = max(1, (1 << 22) // max(int(m), 1))
            cols = np.arange(int(m))
            for start in range(0, rows.size, step):
                part = rows[start:start + step]
                off = offsets[part]
                if off.size > 1 and np.all(np.diff(off) == lengths[part][0]):
                    # stored back to back (the usual case): one strided view, no index array
                    stride = int(lengths[part][0])
                    block = data[off[0]:off[0] + stride * off.size].reshape(off.size, stride)
                    out[part, :m] = block[:, :m]
                else:
                    out[part, :m] = data[off[:, None] + cols]
        return out

    def _lookup(self, ids: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """(ids, offsets, lengths, generation, data_end) of the given ids, in their order, in
        one snapshot; ValueError naming unknown ids."""
        self._check_open()
        want = np.atleast_1d(np.asarray(ids))
        if want.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {want.dtype}")
        want = want.astype(np.int64)
        found: Dict[int, Tuple[int, int]] = {}
        with self._lock:
            self._check_open()
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                meta = dict(cur.execute("SELECT key, value FROM meta WHERE key IN "
                                        "('generation', 'data_end')").fetchall())
                uniq = np.unique(want).tolist()
                for start in range(0, len(uniq), 900):
                    part = uniq[start:start + 900]
                    q = ("SELECT id, offset, length FROM sketches WHERE id IN "
                         f"({','.join('?' * len(part))})")
                    found.update((r[0], (r[1], r[2])) for r in cur.execute(q, part))
            finally:
                cur.execute("COMMIT")
        missing = [i for i in want.tolist() if i not in found]
        if missing:
            raise ValueError(f"no sketch with ids {missing[:10]}")
        off = np.array([found[i][0] for i in want.tolist()], dtype=np.int64)
        ln = np.array([found[i][1] for i in want.tolist()], dtype=np.int64)
        return want, off, ln, int(meta["generation"]), int(meta["data_end"])

    def get(self, ids: Any) -> np.ndarray:
        """Stored sketches ``(n, d)`` float32 in the order of ``ids`` (a truncated sketch has
        zeros past its kept prefix: see :meth:`lengths`). Unknown ids raise ValueError."""
        _, off, ln, gen, end = self._lookup(ids)
        out = self._load(off, ln, gen, end)
        return out[0] if np.ndim(ids) == 0 else out

    def lengths(self, ids: Any) -> np.ndarray:
        """How many leading coordinates of each sketch are kept (d unless forgotten)."""
        return self._lookup(ids)[2]

    def ids(self) -> np.ndarray:
        return self._rows()[0]

    def timestamps(self, ids: Optional[Any] = None) -> np.ndarray:
        """Unix-second timestamps of ``ids`` (default: every sketch, in id order)."""
        all_ids, ts, *_ = self._rows()
        if ids is None:
            return ts
        want = self._lookup(ids)[0]
        return ts[np.searchsorted(all_ids, want)]

    def labels(self, ids: Any) -> List[Any]:
        out = []
        for i in np.atleast_1d(np.asarray(ids)).astype(np.int64).tolist():
            with self._lock:
                self._check_open()
                row = self._db.execute("SELECT labels FROM sketches WHERE id = ?",
                                       (i,)).fetchone()
            if row is None:
                raise ValueError(f"no sketch with id {i}")
            out.append(None if row[0] is None else json.loads(row[0]))
        return out

    def select(self, *, since: Optional[TimeLike] = None, until: Optional[TimeLike] = None,
               where: Optional[Dict[str, Any]] = None) -> np.ndarray:
        """Ids of the sketches with ``since <= timestamp < until`` whose labels (a JSON object)
        have every ``key: value`` of ``where``."""
        sql, params = self._filter(since, until, where)
        return self._rows(sql, params)[0]

    @staticmethod
    def _filter(since: Any, until: Any, where: Optional[Dict[str, Any]]
                ) -> Tuple[str, List[Any]]:
        clauses: List[str] = []
        params: List[Any] = []
        if since is not None:
            clauses.append("ts >= ?")
            params.append(_to_seconds(since, "since"))
        if until is not None:
            clauses.append("ts < ?")
            params.append(_to_seconds(until, "until"))
        if where is not None:
            if not isinstance(where, dict):
                raise TypeError("where must be a dict of label values")
            for key, value in where.items():
                if not isinstance(key, str) or not key.replace("_", "").isalnum():
                    raise ValueError(f"where: label names must be identifiers, got {key!r}")
                # the JSON type too (so True does not match 1), and values dumped as stored
                clauses.append(f"json_type(labels, '$.{key}') = json_type(?) AND "
                               f"json_extract(labels, '$.{key}') = json_extract(?, '$')")
                text = json.dumps(value, sort_keys=True)
                params += [text, text]
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    # -- queries on stored sketches --------------------------------------------------------------
    def _groups(self, since: Any, until: Any, where: Any
                ) -> Iterator[Tuple[np.ndarray, Union[np.ndarray, ErasedSketch]]]:
        """Selected sketches grouped by kept length, as arrays or prefix-erased sketches."""
        sql, params = self._filter(since, until, where)
        ids, _, off, ln, gen, end = self._rows(sql, params)
        for length in np.unique(ln):
            sel = ln == length
            vals = self._load(off[sel], ln[sel], gen, end, width=int(length))
            if length == self._d:
                yield ids[sel], vals
            else:
                yield ids[sel], ErasedSketch(vals, np.arange(length), self._d, "prefix", 0)

    def count(self, module: str, weight: float, *, since: Any = None, until: Any = None,
              where: Optional[Dict[str, Any]] = None, method: str = "matched"
              ) -> Tuple[np.ndarray, np.ndarray]:
        """Per-sketch counts of ``module`` (Theorem 3) over the selected sketches:
        ``(ids, counts)``, computed in batches (one matrix product per stored length)."""
        return self._per_sketch(lambda s: self._sketcher.count(s, module, weight, method),
                                since, until, where)

    def mass(self, module: str, *, since: Any = None, until: Any = None,
             where: Optional[Dict[str, Any]] = None, method: str = "matched"
             ) -> Tuple[np.ndarray, np.ndarray]:
        """Per-sketch summed effective weight of ``module``: ``(ids, masses)``."""
        return self._per_sketch(lambda s: self._sketcher.mass(s, module, method),
                                since, until, where)

    def _per_sketch(self, fn: Any, since: Any, until: Any, where: Any
                    ) -> Tuple[np.ndarray, np.ndarray]:
        ids_out, vals_out = [], []
        for ids, s in self._groups(since, until, where):
            ids_out.append(ids)
            vals_out.append(np.atleast_1d(fn(s)))
        if not ids_out:
            return np.zeros(0, np.int64), np.zeros(0)
        ids = np.concatenate(ids_out)
        order = np.argsort(ids)
        return ids[order], np.concatenate(vals_out)[order]

    def mean_attributes(self, module: str, *, since: Any = None, until: Any = None,
                        where: Optional[Dict[str, Any]] = None, method: str = "matched"
                        ) -> np.ndarray:
        """The weight-averaged attribute vector of ``module`` pooled over the selected sketches
        (sum over sketches of the summed attributes / sum of the masses)."""
        total_x, total_m = None, 0.0
        for _, s in self._groups(since, until, where):
            x = np.atleast_2d(self._sketcher.summed_attributes(s, module, 1.0, method))
            m = np.atleast_1d(self._sketcher.mass(s, module, method))
            total_x = x.sum(axis=0) if total_x is None else total_x + x.sum(axis=0)
            total_m += float(m.sum())
        if total_x is None:
            raise ValueError("no sketch matches the selection")
        return total_x / total_m if total_m != 0 else np.full_like(total_x, np.nan)

    # -- retrieval --------------------------------------------------------------------------------
    def _sync_index(self) -> Any:
        """The in-memory index, loaded or rebuilt and caught up with the metadata."""
        with self._lock:
            return self._sync_index_locked()

    def _sync_index_locked(self) -> Any:
        self._check_open()
        change = int(self._db.execute("SELECT value FROM meta WHERE key = 'change'").fetchone()[0])
        if self._index is not None and change == self._index_change:
            return self._index
        from usearch.index import Index

        ids, _, off, ln, gen, end = self._rows()
        if self._index is None:
            self._index = Index(ndim=self._index_dim, metric="cos", dtype="f32")
            path = self._path / "index.usearch"
            if path.is_file():
                try:
                    self._index.load(str(path))
                except Exception:  # a damaged cache: rebuild it
                    self._index = Index(ndim=self._index_dim, metric="cos", dtype="f32")
            self._index_dirty = False
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
                vecs = self._load(off[part], ln[part], gen, end, width=self._index_dim)
                self._index.add(missing[start:start + 4096].astype(np.uint64), vecs)
        self._index_dirty = self._index_dirty or bool(stale.size or missing.size)
        self._index_change = change
        return self._index

    def _save_index(self) -> None:
        tmp = self._path / "index.usearch.tmp"
        self._index.save(str(tmp))
        os.replace(tmp, self._path / "index.usearch")
        self._index_dirty = False

    def search(self, query: Any, k: int = 10, *, candidates: Optional[int] = None,
               exclude: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` stored sketches most similar (cosine) to ``query``: ``(ids, cosines)``.

        ``query`` is a sketch ``(d,)`` or a stored id (that id is then excluded). Candidates
        come from the approximate index over the prefixes (``candidates``, default
        ``max(10 k, 100)``) and are re-ranked exactly on the coordinates both sketches keep.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        skip = set() if exclude is None else {int(i) for i in exclude}
        if isinstance(query, numbers.Integral) and not isinstance(query, bool):
            skip.add(int(query))
            _, q_off, q_ln, gen, end = self._lookup([int(query)])
            q = self._load(q_off, q_ln, gen, end)[0]
            q_len = int(q_ln[0])
        else:
            q = np.asarray(query, dtype=np.float32)
            if q.shape != (self._d,):
                raise ValueError(f"query must be an id or a sketch of shape ({self._d},)")
            if not np.all(np.isfinite(q)):
                raise ValueError("query contains NaN or infinity")
            q_len = self._d
        index = self._sync_index()
        n = len(index)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        want = min(n, (candidates or max(10 * k, 100)) + len(skip))
        matches = index.search(q[:self._index_dim], want)
        cand = np.asarray(matches.keys, dtype=np.int64)
        cand = cand[~np.isin(cand, list(skip))]
        if cand.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        try:
            _, off, ln, gen, end = self._lookup(cand)
        except ValueError:  # deleted by another process since the index caught up
            cand = cand[np.isin(cand, self.ids())]
            _, off, ln, gen, end = self._lookup(cand)
        rows = self._load(off, ln, gen, end)
        sims = np.empty(cand.size)
        for length in np.unique(np.minimum(ln, q_len)):
            sel = np.minimum(ln, q_len) == length
            a = rows[sel, :length].astype(np.float64)
            b = q[:length].astype(np.float64)
            denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b)
            sims[sel] = np.divide(a @ b, denom, out=np.zeros(a.shape[0]), where=denom > 0)
        order = np.argsort(-sims, kind="stable")[:k]
        return cand[order], sims[order]

    # -- clusters, explanation ----------------------------------------------------------------------
    def clusters(self, k: int, *, since: Any = None, until: Any = None,
                 where: Optional[Dict[str, Any]] = None, seed: int = 0) -> Clusters:
        """k-means (scikit-learn) on the unit-normalised index prefixes of the selected sketches."""
        from sklearn.cluster import KMeans

        sql, params = self._filter(since, until, where)
        ids, ts, off, ln, gen, end = self._rows(sql, params)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= ids.size:
            raise ValueError(f"k must be an integer in [1, {ids.size}] (the selected sketches)")
        x = self._load(off, ln, gen, end, width=self._index_dim).astype(np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        km = KMeans(n_clusters=int(k), n_init=4, random_state=seed).fit(x)
        labels = km.labels_.astype(np.int64)
        sizes = np.bincount(labels, minlength=k)
        first = np.array([ts[labels == c].min() if sizes[c] else np.nan for c in range(k)])
        last = np.array([ts[labels == c].max() if sizes[c] else np.nan for c in range(k)])
        return Clusters(ids, labels, km.cluster_centers_, sizes, first, last, ts)

    def explain(self, id_a: int, id_b: int, *, paths: Optional[Dict[str, Sequence[
                Sequence[int]]]] = None, method: str = "matched") -> List[Tuple[Any, float, float]]:
        """Which modules (or, with ``paths``, which objects) make two stored sketches similar:
        ``[(who, contribution, share)]``, largest first.

        The contribution of module M at depth h is the part of the dot product carried by the
        identity words of its objects (Theorem 2(ii)): ``G^2 (<S_a, S_b> + m_a m_b)`` with
        ``G = 2^-(4h-3)``, ``S`` the weighted summed attributes and ``m`` the mass read from each
        sketch. With ``paths={"cat": [[3]], "edge": [[3, 1], [3, 2]]}`` the objects at those
        paths are scored instead, ``who`` being ``(module, path)``: ``G^2 w_a w_b (<x_a, x_b> +
        1)`` from their recovered attributes and weights (Theorem 1 (ii)). ``share`` is the
        fraction of the positive contributions.
        """
        _, off, ln, gen, end = self._lookup([id_a, id_b])
        rows = self._load(off, ln, gen, end)
        # a forgotten sketch is read as the prefix it kept, rescaled (graceful erasure)
        pair = [rows[k] if ln[k] == self._d else
                ErasedSketch(rows[k, :ln[k]].copy(), np.arange(ln[k]), self._d, "prefix", 0)
                for k in range(2)]
        sk = self._sketcher
        out: List[Tuple[Any, float]] = []
        if paths is None:
            for name, info in sorted(sk.modules.items()):
                x = [sk.summed_attributes(s, name, 1.0, method) for s in pair]
                m = [sk.mass(s, name, method) for s in pair]
                g2 = 2.0 ** (-2 * (4 * info.depth - 3))
                out.append((name, float(g2 * (x[0] @ x[1] + m[0] * m[1]))))
        else:
            for name, plist in paths.items():
                g2 = 2.0 ** (-2 * (4 * sk._module_info(name).depth - 3))
                for path in plist:
                    est = [sk.attributes(s, name, path=list(path), method=method) for s in pair]
                    w = [max(e.weight, 0.0) for e in est]
                    score = g2 * w[0] * w[1] * (est[0].attributes @ est[1].attributes + 1.0)
                    out.append(((name, tuple(path)), float(score)))
        total = sum(max(c, 0.0) for _, c in out)
        ranked = sorted(out, key=lambda t: -t[1])
        return [(n, c, (max(c, 0.0) / total) if total > 0 else 0.0) for n, c in ranked]

    # -- forgetting -----------------------------------------------------------------------------------
    def forget(self, policy: Optional[ForgetPolicy] = None, *, now: Any = None
               ) -> Dict[str, int]:
        """Truncate older sketches to shorter prefixes in tiers and reclaim the space.

        ``policy`` is a list of ``(age, fraction)`` tiers, ages increasing: a sketch at most
        ``age`` old keeps ``fraction`` of its coordinates (of the first tier that covers it;
        beyond the last tier it keeps the last fraction). Default: full for 30 days, 1/4 up to a
        year, 1/16 after. A sketch is never cut below ``index_dim`` nor lengthened. Queries keep
        working on truncated sketches (graceful erasure). Returns counts and bytes reclaimed.
        """
        tiers = [(_seconds(a), float(f)) for a, f in (DEFAULT_POLICY if policy is None
                                                      else policy)]
        if not tiers:
            raise ValueError("policy needs at least one tier")
        for (a, f), prev in zip(tiers, [(-math.inf, 1.0)] + tiers[:-1]):
            if not 0.0 < f <= 1.0:
                raise ValueError(f"policy fractions must be in (0, 1], got {f!r}")
            if a <= prev[0]:
                raise ValueError("policy ages must increase")
        t_now = time.time() if now is None else _to_seconds(now, "now")
        return self._rewrite(lambda ts: self._target_lengths(ts, t_now, tiers))

    def compact(self) -> Dict[str, int]:
        """Reclaim the space of deleted sketches (no truncation)."""
        return self._rewrite(None)

    def _target_lengths(self, ts: np.ndarray, now: float, tiers: List[Tuple[float, float]]
                        ) -> np.ndarray:
        age = now - ts
        frac = np.full(ts.size, tiers[-1][1])
        for a, f in reversed(tiers):
            frac[age <= a] = f
        return np.maximum(np.ceil(frac * self._d).astype(np.int64), self._index_dim)

    def _rewrite(self, targets: Any) -> Dict[str, int]:
        with self._writer():
            meta = self._meta()
            self._repair(meta)
            ids, ts, off, ln, gen, end = self._rows()
            new_len = ln if targets is None else np.minimum(ln, targets(ts))
            new_gen = gen + 1
            path = self._data_path(new_gen)
            data = self._view(gen, end)
            new_off = np.zeros_like(off)
            pos = 0
            with open(path, "wb") as f:
                for k in range(ids.size):
                    new_off[k] = pos
                    f.write(np.ascontiguousarray(data[off[k]:off[k] + new_len[k]]).tobytes())
                    pos += int(new_len[k])
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self._path)  # the new file's entry is durable before anything points to it
            try:
                with self._transaction():
                    self._db.executemany(
                        "UPDATE sketches SET offset = ?, length = ? WHERE id = ?",
                        [(int(o), int(n), int(i)) for o, n, i in zip(new_off, new_len, ids)])
                    self._set_meta(generation=new_gen, data_end=pos,
                                   change=int(meta["change"]) + 1)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            self._map = None
            before = end * self._dtype.itemsize
            self._repair(self._meta())
            truncated = int(np.sum(new_len < ln))
        return {"sketches": int(ids.size), "truncated": truncated,
                "bytes_before": before, "bytes_after": pos * self._dtype.itemsize}

    def stats(self) -> Dict[str, Any]:
        """Counts, time range, kept lengths and disk use."""
        ids, ts, _, ln, gen, end = self._rows()
        size = 0
        for f in self._path.iterdir():
            try:
                size += f.stat().st_size if f.is_file() else 0
            except FileNotFoundError:  # removed by a writer meanwhile
                pass
        lengths, counts = np.unique(ln, return_counts=True)
        return {
            "sketches": int(ids.size),
            "d_sketch": self._d,
            "dtype": self._dtype.name,
            "first": float(ts.min()) if ts.size else None,
            "last": float(ts.max()) if ts.size else None,
            "kept_lengths": {int(a): int(b) for a, b in zip(lengths, counts)},
            "data_bytes": end * self._dtype.itemsize,
            "disk_bytes": int(size),
            "modules": sorted(self._sketcher.modules),
        }


_PRIVATE = object()


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
