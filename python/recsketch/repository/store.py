"""Where a repository's sketches live: the data file, the SQLite metadata, crash repair and
transactions.

Layout of a repository folder::

    repo.sqlite        metadata (SQLite, WAL): the Sketcher's JSON, one row per sketch
                       (id, timestamp, labels, where its values live), and the store's state
    data.<gen>.bin     the sketches' values, appended row after row (float32 or float16)
    index.usearch      approximate nearest-neighbour index (see ``index.py``)
    write.lock         held (flock) by the process that is writing

Crash safety: a batch is appended to the data file and fsynced *before* the SQLite transaction
that makes it visible commits; bytes past the committed end (a batch killed half-way) are cut
off by the next writer. A rewrite (forgetting, compaction) writes a new generation file and
switches to it in one transaction. Readers see a consistent snapshot at every call.

Threads: one SQLite connection per Store; :attr:`Store.lock` (re-entrant) keeps its transactions
and the cached memory map from interleaving when threads share it.

Processes: a connection must not cross ``fork()``; in a forked child every call on a Store opened
before the fork is a ValueError (open the folder again there), and the lock, which another
thread of the parent may have held at the fork, is free (recsketch._forksafe).
"""

from __future__ import annotations

import fcntl
import json
import numbers
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .._checks import all_finite
from .._forksafe import fork_safe_rlock
from ..alloc import check_alloc
from .times import to_seconds

__all__ = ["Store", "Rows", "selection", "fsync_dir", "FORMAT", "FORMAT_VERSION"]

FORMAT = "recsketch.Repository"
FORMAT_VERSION = 1

# Rows of metadata fetched from SQLite at a time (as Python tuples, about 200 bytes each).
ROWS_PER_FETCH = 8192

# Largest read asked of the kernel at once (Linux caps a read call at 0x7ffff000 bytes anyway).
MAX_READ_BYTES = 1 << 30



def id_array(ids: Any, name: str = "ids") -> np.ndarray:
    """``ids`` (one id or a sequence) as a 1-D int64 array: the one rule for ids at every entry
    point (add, get, delete, labels, search's exclude, ...). Integers, and floats that are
    exactly integral (``1.0``; a float id is never rounded or truncated to another sketch's
    id). TypeError for bools, strings, complex or other objects; ValueError naming ``name`` for
    a non-integral or non-finite float, an id beyond int64 (a uint64 or ``2**64`` would wrap),
    or a shape other than 1-D."""
    try:
        arr = np.atleast_1d(np.asarray(ids))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be integers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one id or a 1-D sequence of ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    # The int64 copy (and, for floats, the comparison with it) before anything reads the ids:
    # a broadcast view may stand for more ids than memory holds.
    check_alloc(arr.size * (9 if arr.dtype.kind == "f" else 8),
                f"{name}: a copy of {arr.size} ids")
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    if arr.dtype == object:   # Python ints beyond uint64 (2**64), Fractions, ...
        # One pass; a non-integer anywhere is the TypeError even after an id out of range.
        out = np.empty(arr.size, np.int64)
        first_bad = None
        for k, v in enumerate(arr.tolist()):
            if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be integers")
            value = int(v)
            if lo <= value <= hi:
                out[k] = value
            elif first_bad is None:
                first_bad = value
        if first_bad is not None:
            raise ValueError(f"{name} must fit int64, got {first_bad}")
        return out
    if arr.dtype.kind == "f":
        if not all_finite(arr):
            raise ValueError(f"{name} must be integers, got NaN or infinity")
        # float64(2**63) is the first float beyond int64
        if float(arr.min()) < -2.0**63 or float(arr.max()) >= 2.0**63:
            raise ValueError(f"{name} must fit int64, got {arr.min()!r} to {arr.max()!r}")
        out = arr.astype(np.int64)
        if not np.array_equal(out, arr):
            k = int(np.flatnonzero(out != arr)[0])
            raise ValueError(f"{name} must be integers, got {float(arr[k])!r}")
        return out
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > hi:
        raise ValueError(f"{name} must fit int64, got {int(arr.max())}")
    return arr.astype(np.int64)


def one_id(value: Any, name: str) -> int:
    """One id (a scalar) by the rule of :func:`id_array`: TypeError for a sequence."""
    if np.ndim(value) != 0:
        raise TypeError(f"{name} must be one integer id, got {type(value).__name__}")
    return int(id_array(value, name)[0])


class Rows(NamedTuple):
    """Where selected sketches live, in one consistent snapshot (rows in id order)."""

    ids: np.ndarray
    timestamps: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    generation: int
    data_end: int


class Store:
    """The data file and metadata of one repository folder (see the module docstring)."""

    def __init__(self, path: Path, d: int):
        self._pid = os.getpid()   # the process whose connection this is (check_open)
        self._lock = fork_safe_rlock()
        self._path = path
        self._d = d
        self._db = sqlite3.connect(str(path / "repo.sqlite"), timeout=60.0,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        meta = self.meta()
        self._dtype = np.dtype(meta["dtype"])
        self._index_dim = int(meta["index_dim"])
        self._map: Optional[np.memmap] = None
        self._map_gen = -1
        self._closed = False

    # -- creation, opening, closing ---------------------------------------------------------------
    @staticmethod
    def create(path: Path, sketcher_json: str, dtype: np.dtype, index_dim: int) -> None:
        """Lay out an empty repository in ``path`` (an empty or new folder)."""
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "repo.sqlite.tmp"
        db = sqlite3.connect(str(tmp), isolation_level=None)
        db.executescript("""
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE sketches(
                id INTEGER PRIMARY KEY, ts REAL NOT NULL, labels TEXT,
                offset INTEGER NOT NULL, length INTEGER NOT NULL);
            CREATE INDEX sketches_ts ON sketches(ts);
            CREATE TABLE retired(id INTEGER PRIMARY KEY);
        """)
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "sketcher": sketcher_json, "dtype": dtype.name, "index_dim": str(index_dim),
                "generation": "0", "data_end": "0", "next_id": "0", "change": "0"}
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.close()
        with open(path / "data.0.bin", "wb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path / "repo.sqlite")  # the repository exists once this file does
        fsync_dir(path)

    @staticmethod
    def read_meta(path: Path) -> Dict[str, str]:
        """The metadata of the repository in ``path``; ValueError if it is not one."""
        if not (path / "repo.sqlite").is_file():
            raise ValueError(f"{path} is not a recsketch repository (no repo.sqlite)")
        db = sqlite3.connect(str(path / "repo.sqlite"), timeout=60.0)
        try:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
        if rows.get("format") != FORMAT or rows.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(f"{path} is not a recsketch repository of a supported version")
        return rows

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._map = None
                if self.opened_here:
                    self._db.close()   # (a forked child leaves the parent's connection alone)
                self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def opened_here(self) -> bool:
        """False in a process forked after the Store was opened (see :meth:`check_open`)."""
        return self._pid == os.getpid()

    def check_open(self) -> None:
        """ValueError unless the repository is open in this process: SQLite's connections
        must not be used across ``fork()``, so a forked child opens the repository again."""
        if self._closed:
            raise ValueError("the repository is closed")
        if not self.opened_here:
            raise ValueError(f"the repository {self._path} was opened in process {self._pid}, "
                             f"before a fork: open it again in this process (pid "
                             f"{os.getpid()}) with Repository.open")

    # -- properties ---------------------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """Held around every use of the connection and the memory map."""
        return self._lock

    @property
    def path(self) -> Path:
        return self._path

    @property
    def d(self) -> int:
        return self._d

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def index_dim(self) -> int:
        return self._index_dim

    def count(self) -> int:
        with self._lock:
            self.check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM sketches").fetchone()[0])

    # -- metadata, locking, transactions --------------------------------------------------------
    def meta(self) -> Dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: Any) -> None:
        """Inside :meth:`transaction`: update metadata values."""
        self._db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                             [(str(v), k) for k, v in values.items()])

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the other tables of this folder (``objects.py``); use it under
        :attr:`lock`, and write only inside :meth:`transaction`."""
        return self._db

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Exclusive write access across threads and processes (blocking flock on write.lock)."""
        with self._lock:
            self.check_open()
            with open(self._path / "write.lock", "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (caller holds :meth:`writer`)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # a failed COMMIT (disk full, I/O error) leaves the transaction open: roll it back
            # too, or the connection's next BEGIN fails and its write lock is held meanwhile
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def data_path(self, generation: int) -> Path:
        return self._path / f"data.{generation}.bin"

    def repair(self, meta: Dict[str, str]) -> None:
        """Writer only: cut bytes past the committed end (a killed writer's torn tail), drop
        stale generations."""
        gen, end = int(meta["generation"]), int(meta["data_end"])
        path = self.data_path(gen)
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

    # -- writing ------------------------------------------------------------------------------------
    def append(self, stored: np.ndarray, ids: Any, timestamps: List[float],
               labels: List[Optional[str]],
               in_transaction: Optional[Callable[[np.ndarray], None]] = None) -> np.ndarray:
        """Store rows ``(n, d)`` already in the storage dtype, all or nothing; returns the ids.
        ``in_transaction(new_ids)`` runs inside the committing transaction (its error rolls
        back)."""
        n = stored.shape[0]
        with self.writer():
            meta = self.meta()
            self.repair(meta)
            gen, end = int(meta["generation"]), int(meta["data_end"])
            next_id = int(meta["next_id"])
            new_ids = self._new_ids(ids, n, next_id)
            with open(self.data_path(gen), "ab") as f:
                f.write(np.ascontiguousarray(stored).tobytes())
                f.flush()
                os.fsync(f.fileno())
            rows = [(int(i), float(t), lab, end + k * self._d, self._d)
                    for k, (i, t, lab) in enumerate(zip(new_ids, timestamps, labels))]
            with self.transaction():
                self._db.executemany("INSERT INTO sketches VALUES (?, ?, ?, ?, ?)", rows)
                self.set_meta(data_end=end + n * self._d,
                              next_id=max(next_id, int(new_ids.max()) + 1),
                              change=int(meta["change"]) + 1)
                if in_transaction is not None:
                    in_transaction(new_ids)
        return new_ids

    def _new_ids(self, ids: Any, n: int, next_id: int) -> np.ndarray:
        if ids is None:
            return np.arange(next_id, next_id + n, dtype=np.int64)
        out = id_array(ids)
        if out.shape != (n,):
            raise ValueError(f"ids must be {n} integers, got {out.size}")
        if np.any(out < 0) or np.unique(out).size != n:
            raise ValueError("ids must be distinct non-negative integers")
        taken = self.existing(out)
        if taken.size:
            raise ValueError(f"ids already stored: {taken[:10].tolist()}")
        retired = self.existing(out, "retired")
        if retired.size:  # an id names one sketch for ever (indexes and caches rely on it)
            raise ValueError(f"ids of deleted sketches cannot be reused: {retired[:10].tolist()}")
        return out

    def existing(self, ids: np.ndarray, table: str = "sketches") -> np.ndarray:
        """Those of ``ids`` present in ``table`` (``sketches`` or ``retired``), sorted."""
        found: List[int] = []
        with self._lock:
            for chunk in range(0, ids.size, 900):
                part = ids[chunk:chunk + 900].tolist()
                q = f"SELECT id FROM {table} WHERE id IN ({','.join('?' * len(part))})"
                found += [r[0] for r in self._db.execute(q, part)]
        return np.asarray(sorted(found), dtype=np.int64)

    def delete(self, ids: Any,
               in_transaction: Optional[Callable[[np.ndarray], None]] = None) -> int:
        """Delete sketches by id, all or nothing; ``in_transaction(ids)`` runs inside the
        committing transaction (the objects of those sketches go with them)."""
        want = np.unique(id_array(ids))
        with self.writer():
            found = self.existing(want)
            missing = np.setdiff1d(want, found)
            if missing.size:
                raise ValueError(f"no sketch with ids {missing[:10].tolist()}")
            meta = self.meta()
            with self.transaction():
                self._db.executemany("DELETE FROM sketches WHERE id = ?",
                                     [(int(i),) for i in want])
                self._db.executemany("INSERT INTO retired VALUES (?)", [(int(i),) for i in want])
                self.set_meta(change=int(meta["change"]) + 1)
                if in_transaction is not None:
                    in_transaction(want)
        return int(want.size)

    def rewrite(self, new_lengths: Optional[Callable[[np.ndarray], np.ndarray]], *,
                force: bool = True) -> Dict[str, int]:
        """Copy every sketch into a new generation, cut to ``min(length, new_lengths(ts))``
        (all kept whole if None), and switch to it in one transaction. With ``force=False``
        nothing is written when no sketch is cut and the data file has no dead bytes."""
        with self.writer():
            meta = self.meta()
            self.repair(meta)
            ids, ts, off, ln, gen, end = self.rows()
            new_len = ln if new_lengths is None else np.minimum(ln, new_lengths(ts))
            if not force and np.array_equal(new_len, ln) and end == int(np.sum(ln)):
                nbytes = end * self._dtype.itemsize
                return {"sketches": int(ids.size), "truncated": 0, "bytes_before": nbytes,
                        "bytes_after": nbytes}
            new_gen = gen + 1
            path = self.data_path(new_gen)
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
            fsync_dir(self._path)  # the new file's entry is durable before anything points to it
            try:
                with self.transaction():
                    self._db.executemany(
                        "UPDATE sketches SET offset = ?, length = ? WHERE id = ?",
                        [(int(o), int(n), int(i)) for o, n, i in zip(new_off, new_len, ids)])
                    self.set_meta(generation=new_gen, data_end=pos,
                                  change=int(meta["change"]) + 1)
            except BaseException:
                # An interrupt may land after COMMIT: the metadata then points into the new
                # file. Remove it only when the metadata says it does not (an orphan kept when
                # that cannot be read is removed by the next writer's repair).
                try:
                    orphan = int(self.meta()["generation"]) != new_gen
                except BaseException:
                    orphan = False
                if orphan:
                    path.unlink(missing_ok=True)
                raise
            self._map = None
            before = end * self._dtype.itemsize
            self.repair(self.meta())
            truncated = int(np.sum(new_len < ln))
        return {"sketches": int(ids.size), "truncated": truncated,
                "bytes_before": before, "bytes_after": pos * self._dtype.itemsize}

    # -- reading ------------------------------------------------------------------------------------
    def rows(self, where_sql: str = "", params: Sequence[Any] = ()) -> Rows:
        """Where the selected sketches live, in one consistent snapshot: 32 bytes per sketch
        (the rows are fetched in blocks straight into the arrays, never all as tuples)."""
        with self._lock:
            self.check_open()
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                meta = dict(cur.execute("SELECT key, value FROM meta").fetchall())
                n = int(cur.execute("SELECT COUNT(*) FROM sketches " + where_sql,
                                    params).fetchone()[0])
                ids = np.empty(n, np.int64)  # exact: ids may exceed 2**53
                ts = np.empty(n, np.float64)
                off = np.empty(n, np.int64)
                ln = np.empty(n, np.int64)
                cur.execute("SELECT id, ts, offset, length FROM sketches " + where_sql +
                            " ORDER BY id", params)
                k = 0
                while True:
                    block = cur.fetchmany(ROWS_PER_FETCH)
                    if not block:
                        break
                    m = len(block)
                    ids[k:k + m], ts[k:k + m], off[k:k + m], ln[k:k + m] = zip(*block)
                    k += m
            finally:
                cur.execute("COMMIT")
        assert k == n  # one snapshot: the count and the rows agree
        return Rows(ids, ts, off, ln, int(meta["generation"]), int(meta["data_end"]))

    def lookup(self, ids: Any, *, missing_ok: bool = False) -> Rows:
        """Where the given ids live (rows in their order, timestamps included), in one
        snapshot; ValueError naming unknown ids (with ``missing_ok``, they are left out)."""
        self.check_open()
        want = id_array(ids)
        found: Dict[int, Tuple[float, int, int]] = {}
        with self._lock:
            self.check_open()
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                meta = dict(cur.execute("SELECT key, value FROM meta WHERE key IN "
                                        "('generation', 'data_end')").fetchall())
                uniq = np.unique(want).tolist()
                for start in range(0, len(uniq), 900):
                    part = uniq[start:start + 900]
                    q = ("SELECT id, ts, offset, length FROM sketches WHERE id IN "
                         f"({','.join('?' * len(part))})")
                    found.update((r[0], (r[1], r[2], r[3])) for r in cur.execute(q, part))
            finally:
                cur.execute("COMMIT")
        if missing_ok:
            want = np.asarray([i for i in want.tolist() if i in found], dtype=np.int64)
        missing = [i for i in want.tolist() if i not in found]
        if missing:
            raise ValueError(f"no sketch with ids {missing[:10]}")
        ts = np.array([found[i][0] for i in want.tolist()], dtype=np.float64)
        off = np.array([found[i][1] for i in want.tolist()], dtype=np.int64)
        ln = np.array([found[i][2] for i in want.tolist()], dtype=np.int64)
        return Rows(want, ts, off, ln, int(meta["generation"]), int(meta["data_end"]))

    def labels(self, ids: Any) -> List[Any]:
        out = []
        for i in id_array(ids).tolist():
            with self._lock:
                self.check_open()
                row = self._db.execute("SELECT labels FROM sketches WHERE id = ?",
                                       (i,)).fetchone()
            if row is None:
                raise ValueError(f"no sketch with id {i}")
            out.append(None if row[0] is None else json.loads(row[0]))
        return out

    def _retrying(self, snapshot: Callable[[], Rows], open_: Callable[[Rows], Any]
                  ) -> Tuple[Rows, Any]:
        """``snapshot()`` and ``open_(rows)`` (its generation's data file) under one hold of
        the lock, so no rewrite by this Store retires the generation in between. A rewrite by
        another process (or another Store) may still retire it: then the data file is gone,
        and a new snapshot names the generation that replaced it."""
        failed = -1
        while True:
            with self._lock:
                self.check_open()
                rows = snapshot()
                try:
                    return rows, open_(rows)
                except FileNotFoundError:
                    if rows.generation == failed:  # not a retired generation: a missing file
                        raise ValueError(f"the data file of generation {failed} is missing"
                                         ) from None
                    failed = rows.generation

    def located(self, ids: Any, *, missing_ok: bool = False) -> Tuple[Rows, np.ndarray]:
        """:meth:`lookup` and a memory map of the data file it points into (for :meth:`load`)."""
        return self._retrying(lambda: self.lookup(ids, missing_ok=missing_ok),
                              lambda r: self._view(r.generation, r.data_end))

    def selected(self, where_sql: str = "", params: Sequence[Any] = ()
                 ) -> Tuple[Rows, np.ndarray]:
        """:meth:`rows` and a memory map of the data file it points into (for :meth:`load`)."""
        return self._retrying(lambda: self.rows(where_sql, params),
                              lambda r: self._view(r.generation, r.data_end))

    def streamed(self, where_sql: str = "", params: Sequence[Any] = ()) -> Tuple[Rows, int]:
        """:meth:`rows` and a read-only descriptor of the data file it points into (for
        :meth:`read`; -1 when nothing is selected). The caller closes it. Held open, it keeps
        the file readable while a rewrite retires the generation."""
        return self._retrying(lambda: self.rows(where_sql, params),
                              lambda r: os.open(self.data_path(r.generation), os.O_RDONLY)
                              if r.ids.size else -1)

    def _view(self, generation: int, end: int) -> np.ndarray:
        """The data file of a generation as a read-only array of at least ``end`` values."""
        with self._lock:
            if self._map is None or self._map_gen != generation or self._map.size < end:
                self._map = None
                if end == 0:
                    return np.zeros(0, self._dtype)
                self._map = np.memmap(self.data_path(generation), dtype=self._dtype, mode="r")
                self._map_gen = generation
            return self._map

    def load(self, offsets: np.ndarray, lengths: np.ndarray, data: np.ndarray,
             width: Optional[int] = None) -> np.ndarray:
        """Rows as float32 ``(n, width)`` (default ``d``), zero-filled beyond each stored length,
        gathered from ``data``, the memory map of :meth:`located` or :meth:`selected` (random
        access: get, search)."""
        self.check_open()
        w = self._d if width is None else width
        check_alloc(offsets.size * w * 4, f"reading {offsets.size} sketches of {w} float32 "
                                          f"values")
        out = np.zeros((offsets.size, w), dtype=np.float32)
        if offsets.size == 0:
            return out
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

    def read(self, fd: int, offsets: np.ndarray, length: int) -> np.ndarray:
        """Rows of one kept ``length`` as float32 ``(n, length)``, read with ``pread`` from a
        descriptor of :meth:`streamed` (no memory map: streaming a repository larger than the
        address space must not map all of it). Rows stored back to back are read in one call."""
        out = np.empty((offsets.size, length), dtype=np.float32)
        if offsets.size == 0:
            return out
        item = self._dtype.itemsize
        # runs of consecutive rows: row k+1 starts where row k ends
        breaks = np.flatnonzero(np.diff(offsets) != length) + 1
        starts = np.concatenate(([0], breaks))
        stops = np.concatenate((breaks, [offsets.size]))
        raw = out if self._dtype == out.dtype else np.empty(out.shape, self._dtype)
        for a, b in zip(starts.tolist(), stops.tolist()):
            # straight into the result (float32): no second buffer. A read call may return
            # fewer bytes than asked (Linux moves at most 0x7ffff000 per call): read on from
            # where it stopped, at most MAX_READ_BYTES per call; only 0 bytes means the file
            # ends early.
            view = memoryview(raw[a:b]).cast("B")
            pos, at = 0, int(offsets[a]) * item
            while pos < len(view):
                got = os.preadv(fd, [view[pos:pos + MAX_READ_BYTES]], at + pos)
                if got == 0:
                    raise ValueError("the data file is shorter than its metadata says")
                pos += got
        if raw is not out:
            out[...] = raw
        return out

    def disk_bytes(self) -> int:
        size = 0
        for f in self._path.iterdir():
            try:
                size += f.stat().st_size if f.is_file() else 0
            except FileNotFoundError:  # removed by a writer meanwhile
                pass
        return size


def selection(since: Any, until: Any, where: Optional[Dict[str, Any]]
              ) -> Tuple[str, List[Any]]:
    """The SQL ``WHERE`` clause and parameters selecting ``since <= ts < until`` and labels
    (a JSON object) holding every ``key: value`` of ``where``."""
    clauses: List[str] = []
    params: List[Any] = []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(to_seconds(since, "since"))
    if until is not None:
        clauses.append("ts < ?")
        params.append(to_seconds(until, "until"))
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


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
