"""Distributed sketching, ingestion and aggregates on Dask (the optional extra ``recsketch[dask]``).

Nothing large travels: a Sketcher is pickled as its JSON configuration (its matrices are a pure
function of it), each task rebuilds it once and sketches a whole partition with
:meth:`Sketcher.sketch_many`, so the sketches are bit-identical to ``sketch_many`` on one machine
(same seed, any partitioning, any worker, any thread count).

Threads: Dask already runs ``threads_per_worker`` tasks at once in every worker process, and the
native core would by default start one OpenMP thread per core inside each of them. Every function
here therefore takes ``num_threads`` (OpenMP threads per task) and defaults it to 1: with
``W`` workers per host and ``T`` threads per worker the host runs ``W * T * num_threads``
threads; keep that at or below its cores (for example ``threads_per_worker=1,
num_threads=cores // W`` for a few large partitions, or the default for many small ones).

Idempotent ingestion: :func:`to_repository` writes partitions in order, one atomic batch each,
from the calling process only (the single writer). Every stored row is labelled with the
ingestion's ``key`` and its partition, so a rerun after a failure (or a second call) skips the
partitions already stored instead of writing them twice; a task that Dask retries on another
worker never writes, it only returns its sketches to the writer.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import threading
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

try:
    import dask
    import dask.array as da
    import dask.bag as db
    from dask.delayed import Delayed
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("recsketch.dask needs Dask: pip install 'recsketch[dask]' "
                      "(or pip install 'dask[array,bag]')") from exc

from ._checks import check_int
from .graph import Graph
from .joint import check_method
from .sketcher import Sketcher

__all__ = ["SketchedBag", "sketch_bag", "merge_registries", "to_repository", "from_repository",
           "count", "mean_attributes", "KEY_LABEL", "PARTITION_LABEL", "PARTITIONS_LABEL"]

# Labels written with every row by to_repository (identifiers, so Repository.select(where=...)
# finds them).
KEY_LABEL = "dask_key"
PARTITION_LABEL = "dask_partition"
PARTITIONS_LABEL = "dask_partitions"  # how many partitions the ingestion was cut into

# A partition's registry: module name -> (depth, attribute_dim).
Registry = Dict[str, Tuple[int, int]]


def _threads(num_threads: Any) -> int:
    return check_int(num_threads, "num_threads", minimum=1)


def _check_sketcher(sketcher: Any) -> Sketcher:
    if not isinstance(sketcher, Sketcher):
        raise TypeError(f"sketcher must be a recsketch.Sketcher, got {type(sketcher).__name__}")
    return sketcher


# -- sketching ---------------------------------------------------------------------------------
def _as_graph(item: Any, index: int, normalize: bool) -> Graph:
    if isinstance(item, Graph):
        return item
    if isinstance(item, dict):
        return Graph.from_dict(item, normalize=normalize)
    raise TypeError(f"element {index} is a {type(item).__name__}, not a recsketch.Graph or a "
                    "Graph.to_dict() record")


# One Sketcher per worker thread, rebuilt from the JSON for each new lazy result (``token``)
# and then reused by that result's later tasks on the thread: a fresh Sketcher recomputes the
# attribute embeddings of every module (about 0.5 s at d = 1008 for six modules, more than
# sketching a partition of a few graphs). Per thread because a Sketcher's caches are not
# shared between threads; one per thread so that memory stays bounded by one Sketcher's
# caches (EMBEDDING_CACHE_BYTES); per token so that no registration leaks from one
# computation into another.
_local = threading.local()


def _task_sketcher(config: str, token: str) -> Sketcher:
    cached = getattr(_local, "sketcher", None)
    if cached is None or cached[0] != token:
        _local.sketcher = None  # release the old one before building the new one
        cached = (token, Sketcher.from_json(config))
        _local.sketcher = cached
    return cached[1]


def _sketch_partition(config: str, token: str, items: Any, partition: int, num_threads: int,
                      normalize: bool) -> Tuple[np.ndarray, Registry]:
    """One task: sketch the partition in one batch. The registry returned is the thread's
    Sketcher's: this partition's modules, plus the driver's and those of earlier partitions
    of the same computation on this thread (their union is what the driver needs)."""
    sketcher = _task_sketcher(config, token)
    try:
        graphs = [_as_graph(item, k, normalize) for k, item in enumerate(items)]
        sketches = sketcher.sketch_many(graphs, num_threads=num_threads)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"partition {partition}: {exc}") from None
    registry = {name: (info.depth, info.attribute_dim)
                for name, info in sketcher.modules.items()}
    return sketches, registry


def merge_registries(registries: Sequence[Registry], base: Optional[Registry] = None
                     ) -> Registry:
    """Union of per-partition registries (``name -> (depth, attribute_dim)``).

    Raises ValueError naming the module and the two partitions when a module was seen at two
    depths or with two attribute lengths.
    """
    merged: Dict[str, Tuple[Tuple[int, int], str]] = {
        name: (tuple(v), "the driver's Sketcher") for name, v in (base or {}).items()}
    for p, reg in enumerate(registries):
        for name, value in sorted(reg.items()):
            value = (int(value[0]), int(value[1]))
            seen = merged.setdefault(name, (value, f"partition {p}"))
            if seen[0] != value:
                what = "depth" if seen[0][0] != value[0] else "attribute length"
                k = 0 if what == "depth" else 1
                raise ValueError(f"module {name!r} has {what} {seen[0][k]} in {seen[1]} and "
                                 f"{value[k]} in partition {p}; a module must sit at one depth "
                                 "with one attribute length")
    return {name: v for name, (v, _) in merged.items()}


def _register(sketcher: Sketcher, registry: Registry) -> None:
    """Record ``registry`` in ``sketcher`` (all checked first, so a conflict changes nothing)."""
    merge_registries([registry], {n: (i.depth, i.attribute_dim)
                                  for n, i in sketcher.modules.items()})
    for name, (depth, dim) in sorted(registry.items()):
        sketcher.register_module(name, depth, dim)


@dataclass(frozen=True)
class SketchedBag:
    """The lazy result of :func:`sketch_bag`.

    ``sketches`` is a Dask array ``(n, d_sketch)`` with one row chunk per bag partition (chunk
    lengths unknown until computed), to feed array pipelines (:func:`count`,
    :func:`mean_attributes`, ``da.to_zarr``...). :meth:`compute` and :func:`to_repository` run
    the partition tasks themselves, which return each partition's sketches *and* registry in
    one pass, and record the modules in the Sketcher like :meth:`Sketcher.sketch_many`.
    """

    sketcher: Sketcher
    sketches: "da.Array"
    parts: Tuple[Delayed, ...]
    """One task per partition, returning ``(sketches, registry)``."""

    @property
    def npartitions(self) -> int:
        return len(self.parts)

    def compute(self, **kwargs: Any) -> np.ndarray:
        """All sketches as one NumPy array (they must fit in memory; otherwise write them with
        :func:`to_repository` or reduce them). ``kwargs`` go to :func:`dask.compute`. On a
        conflicting registration the ValueError is raised and ``sketcher`` is unchanged."""
        # The partition tasks themselves (not the array's blocks and the registries as two
        # collections: graph optimisation would give them different keys and sketch twice).
        parts = dask.compute(list(self.parts), **kwargs)[0]
        _register(self.sketcher, merge_registries([reg for _, reg in parts]))
        if not parts:
            return np.zeros((0, self.sketcher.d_sketch), dtype=self.sketcher.dtype)
        return np.concatenate([s for s, _ in parts], axis=0)

    def registry(self, **kwargs: Any) -> Registry:
        """Compute (sketching every partition) and merge the registries, without recording
        them; see :meth:`compute` to get the sketches and the registry in one pass."""
        return merge_registries([reg for _, reg in dask.compute(list(self.parts),
                                                                  **kwargs)[0]])


def sketch_bag(sketcher: Sketcher, bag: "db.Bag", *, num_threads: int = 1,
               normalize: bool = False) -> SketchedBag:
    """Sketch a Dask bag of :class:`Graph` objects or ``Graph.to_dict()`` records.

    Rows come in bag order (partition after partition) and are bit-identical to
    ``sketcher.sketch_many(bag.compute())``. Each task rebuilds the Sketcher from its JSON
    (taken now, registry included: graphs contradicting it fail) and sketches its partition
    with ``num_threads`` OpenMP threads (default 1, see the module docstring). ``normalize``
    applies to dict records (as in :meth:`Graph.from_dict`). Errors name the partition.
    """
    _check_sketcher(sketcher)
    if not isinstance(bag, db.Bag):
        raise TypeError(f"sketch_bag takes a dask.bag.Bag, got {type(bag).__name__}")
    threads = _threads(num_threads)
    config = sketcher.to_json()
    token = uuid.uuid4().hex
    sketch = dask.delayed(_sketch_partition, pure=True, nout=2)
    parts = tuple(sketch(config, token, part, p, threads, bool(normalize))
                  for p, part in enumerate(bag.to_delayed()))
    d, dtype = sketcher.d_sketch, sketcher.dtype
    if parts:
        blocks = [da.from_delayed(part[0], shape=(math.nan, d), dtype=dtype) for part in parts]
        arr = da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
    else:
        arr = da.zeros((0, d), dtype=dtype)
    lazy = SketchedBag(sketcher, arr, parts)
    _BAGS[arr.name] = lazy
    return lazy


# The arrays of live SketchedBags by name: ``to_repository(lazy.sketches, ...)`` is then
# ingested as ``lazy`` itself, registry included (the array alone carries no registry).
_BAGS: "weakref.WeakValueDictionary[str, SketchedBag]" = weakref.WeakValueDictionary()


# -- ingestion into a Repository -----------------------------------------------------------------
def _row_blocks(sketches: Any) -> Tuple[List[Any], int]:
    """(one task per partition, d): tasks returning ``(sketches, registry)`` for a SketchedBag,
    the row blocks for a Dask array."""
    if isinstance(sketches, SketchedBag):
        return list(sketches.parts), sketches.sketcher.d_sketch
    if isinstance(sketches, da.Array):
        if sketches.ndim != 2:
            raise ValueError(f"sketches must be a 2-D Dask array (n, d), got {sketches.ndim}-D")
        arr = sketches.rechunk({1: -1}) if len(sketches.chunks[1]) > 1 else sketches
        return list(arr.to_delayed()[:, 0]), int(arr.shape[1])
    raise TypeError("to_repository takes a SketchedBag (from sketch_bag) or a Dask array, got "
                    f"{type(sketches).__name__}")


def _partitions_done(repo: Any, key: str, partitions: int) -> int:
    """How many leading partitions of ingestion ``key`` are stored: batches are written in
    partition order with increasing ids, so the newest row of the key names the last one.
    An ingestion resumed with another partitioning is refused: its partition numbers name
    other rows, and skipping by them would store some rows twice."""
    ids = repo.select(where={KEY_LABEL: key})
    if ids.size == 0:
        return 0
    last = repo.labels([int(ids.max())])[0]
    if not isinstance(last, dict) or not isinstance(last.get(PARTITION_LABEL), int):
        raise ValueError(f"rows labelled {KEY_LABEL}={key!r} were not written by to_repository")
    before = last.get(PARTITIONS_LABEL)
    if before != partitions:
        raise ValueError(f"ingestion {key!r} was stored in {before} partitions, not {partitions}:"
                         " resume it with the same partitioning, or use a new key")
    return last[PARTITION_LABEL] + 1


def to_repository(sketches: Union[SketchedBag, "da.Array"], repository: Any, *, key: str,
                  timestamps: Any = None, labels: Optional[Dict[str, Any]] = None,
                  window: int = 4, **compute_kwargs: Any) -> Dict[str, int]:
    """Write a Dask array of sketches (or a :class:`SketchedBag`) into a Repository.

    The calling process is the only writer: partitions are computed ``window`` at a time
    (in parallel on the cluster; at most ``window`` partitions in memory) and stored in
    partition order, one atomic :meth:`Repository.add` batch per partition. Every row is
    labelled ``{"dask_key": key, "dask_partition": p, "dask_partitions": P}`` plus ``labels``
    (a dict); resuming with another partitioning is a ValueError (it would store rows twice).

    ``key`` names the ingestion and makes it idempotent: partitions already stored under the
    same key (by an earlier call that failed or was killed) are skipped, not recomputed and not
    written again. Use a new key for new data. While a call ingests a key, another call
    (another process or thread) for the same key into the same repository is refused with a
    ValueError (an exclusive lock on ``ingest-<hash of key>.lock`` in the repository's
    folder), so two drivers never store the same partition twice.

    With a SketchedBag, the modules met on the workers are merged (a conflict is a ValueError
    raised before the partition that brings it is written) and recorded in the repository
    before the sketches that need them. ``repository`` is a Repository or a path.

    Returns ``{"partitions": P, "written": partitions written now, "skipped": already stored,
    "rows": rows written now}``.
    """
    from .repository import Repository  # imported late: repository.py pulls in usearch

    if not isinstance(key, str) or not key:
        raise TypeError("key must be a non-empty str naming this ingestion")
    window = check_int(window, "window", minimum=1)
    if labels is not None:
        if not isinstance(labels, dict):
            raise TypeError(f"labels must be a dict, got {type(labels).__name__}")
        clash = {KEY_LABEL, PARTITION_LABEL, PARTITIONS_LABEL} & labels.keys()
        if clash:
            raise ValueError(f"labels must not use the reserved names {sorted(clash)}")
    if isinstance(sketches, da.Array) and _BAGS.get(sketches.name) is not None:
        sketches = _BAGS[sketches.name]
    blocks, d = _row_blocks(sketches)
    if isinstance(repository, (str, os.PathLike)):
        with Repository.open(repository) as repo:
            return to_repository(sketches, repo, key=key, timestamps=timestamps, labels=labels,
                                 window=window, **compute_kwargs)
    if not isinstance(repository, Repository):
        raise TypeError(f"repository must be a Repository or a path, got "
                        f"{type(repository).__name__}")
    repo = repository
    if d != repo.sketcher.d_sketch:
        raise ValueError(f"sketches have d={d}, the repository d={repo.sketcher.d_sketch}")
    if isinstance(sketches, SketchedBag) and not repo.sketcher.same_matrices(sketches.sketcher):
        raise ValueError("the sketches were made by a Sketcher with other matrices than the "
                         f"repository's: {sketches.sketcher!r} vs {repo.sketcher!r}")
    if timestamps is not None and not isinstance(timestamps, (numbers.Real, str)) \
            and not hasattr(timestamps, "year") and not isinstance(timestamps, np.datetime64):
        raise TypeError("timestamps must be one time for the whole ingestion (a number, a "
                        "datetime or date, a datetime64 or an ISO string)")

    with _ingestion_lock(repo.path, key):
        return _ingest(sketches, repo, key, blocks, timestamps, labels, window, compute_kwargs)


@contextmanager
def _ingestion_lock(folder: Any, key: str) -> Iterator[None]:
    """Exclusive, non-blocking: a second driver of the same key fails at once, not later."""
    import fcntl  # POSIX, as the repository's own write lock

    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    with open(Path(folder) / f"ingest-{digest}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another driver is ingesting key {key!r} into {folder} right "
                             "now; wait for it (a later call resumes where it stopped)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ingest(sketches: Any, repo: Any, key: str, blocks: List[Any], timestamps: Any,
            labels: Optional[Dict[str, Any]], window: int,
            compute_kwargs: Dict[str, Any]) -> Dict[str, int]:
    from .repository import Repository

    done = _partitions_done(repo, key, len(blocks))
    written = rows = 0
    for start in range(done, len(blocks), window):
        stop = min(start + window, len(blocks))
        values = dask.compute(blocks[start:stop], **compute_kwargs)[0]
        if isinstance(sketches, SketchedBag):
            registry = merge_registries([reg for _, reg in values])
            values = [s for s, _ in values]
            known = {n: (i.depth, i.attribute_dim) for n, i in repo.sketcher.modules.items()}
            merge_registries([registry], known)  # a conflict stops here, before writing
            _register(sketches.sketcher, registry)  # as compute() does
            if any(name not in known for name in registry):
                _register(repo.sketcher, registry)
                # persist it: Repository.open merges a Sketcher's registry in one transaction
                Repository.open(repo.path, repo.sketcher).close()
        for offset, block in enumerate(values):
            p = start + offset
            row_labels = dict(labels or {})
            row_labels.update({KEY_LABEL: key, PARTITION_LABEL: p,
                               PARTITIONS_LABEL: len(blocks)})
            block = np.asarray(block)
            if block.shape[0] == 0:
                # an empty partition leaves no row to carry its label: nothing to skip later
                continue
            repo.add(block, timestamps=timestamps, labels=row_labels)
            written += 1
            rows += block.shape[0]
    return {"partitions": len(blocks), "written": written, "skipped": done, "rows": rows}


# -- stored sketches as a Dask array, and aggregates over it ---------------------------------------
def _load_rows(path: str, ids: np.ndarray) -> np.ndarray:
    from .repository import Repository

    with Repository.open(path) as repo:
        return repo.get(ids)


def from_repository(repository: Any, *, chunk_rows: int = 4096, since: Any = None,
                    until: Any = None, where: Optional[Dict[str, Any]] = None) -> "da.Array":
    """The stored sketches selected by ``since``/``until``/``where`` (as
    :meth:`Repository.select`), in id order, as a lazy float32 Dask array ``(n, d)`` of
    ``chunk_rows`` rows per chunk: each task opens the repository and reads only its rows.

    Sketches shortened by forgetting are refused (ValueError): their zero-filled tails would
    bias the aggregates; select the full-length ones (for example with ``since``) instead.
    """
    from .repository import Repository

    chunk_rows = check_int(chunk_rows, "chunk_rows", minimum=1)
    repo = Repository.open(repository) if isinstance(repository, (str, os.PathLike)) \
        else repository
    if not isinstance(repo, Repository):
        raise TypeError(f"repository must be a Repository or a path, got "
                        f"{type(repository).__name__}")
    try:
        ids = repo.select(since=since, until=until, where=where)
        d = repo.sketcher.d_sketch
        short = int(np.count_nonzero(repo.lengths(ids) < d)) if ids.size else 0
        if short:
            raise ValueError(f"{short} of the {ids.size} selected sketches were shortened by "
                             "forgetting; select full-length sketches only")
        path = str(repo.path)
    finally:
        if repo is not repository:
            repo.close()
    if ids.size == 0:
        return da.zeros((0, d), dtype=np.float32)
    load = dask.delayed(_load_rows, pure=True)
    blocks = [da.from_delayed(load(path, ids[k:k + chunk_rows]),
                              shape=(min(chunk_rows, ids.size - k), d), dtype=np.float32)
              for k in range(0, ids.size, chunk_rows)]
    return da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]


def _check_query(sketcher: Sketcher, sketches: Any, module: str) -> "da.Array":
    _check_sketcher(sketcher)
    if not isinstance(sketches, da.Array) or sketches.ndim != 2:
        raise TypeError("sketches must be a 2-D Dask array (n, d_sketch)")
    if sketches.shape[1] != sketcher.d_sketch:
        raise ValueError(f"sketches have d={sketches.shape[1]}, the Sketcher "
                         f"d_sketch={sketcher.d_sketch}")
    if sketches.dtype.kind != "f":
        raise TypeError(f"sketches must be a float array, got dtype {sketches.dtype}")
    if not isinstance(module, str):
        raise TypeError(f"module must be a str, got {type(module).__name__}")
    if module not in sketcher.modules:
        raise ValueError(f"module {module!r} is not registered with this Sketcher")
    return sketches.rechunk({1: -1}) if len(sketches.chunks[1]) > 1 else sketches


def _count_block(block: np.ndarray, config: str, token: str, module: str, weight: float,
                 method: str, num_threads: int, fan_in: Optional[int] = None) -> np.ndarray:
    if block.shape[0] == 0:
        return np.zeros(0)
    sk = _task_sketcher(config, token)
    return np.atleast_1d(sk.count(np.ascontiguousarray(block), module, weight, method,
                                  num_threads=num_threads, fan_in=fan_in))


def count(sketcher: Sketcher, sketches: "da.Array", module: str, weight: float, *,
          method: str = "matched", num_threads: int = 1, fan_in: Optional[int] = None
          ) -> "da.Array":
    """Per-sketch counts of ``module`` (Theorem 3, :meth:`Sketcher.count`) as a lazy Dask array
    ``(n,)``, block by block (``num_threads`` OpenMP threads per task). ``fan_in``: the joint
    read-out's bound (``method="joint"`` only, as on the Sketcher)."""
    check_method(method, fan_in)
    arr = _check_query(sketcher, sketches, module)
    w = float(weight) if isinstance(weight, numbers.Real) and not isinstance(weight, bool) \
        else None
    if w is None or not 0.0 < w <= 1.0:
        raise ValueError(f"weight must be a number in (0, 1], got {weight!r}")
    return arr.map_blocks(_count_block, sketcher.to_json(), uuid.uuid4().hex, module, w, method,
                          _threads(num_threads), fan_in, drop_axis=1, dtype=np.float64)


def _sum_block(block: np.ndarray, config: str, token: str, module: str, method: str,
               num_threads: int, dim: int, fan_in: Optional[int] = None) -> np.ndarray:
    """[sum of the summed attributes, sum of the masses] of a block, as one (1, dim + 1) row."""
    out = np.zeros((1, dim + 1))
    if block.shape[0]:
        sk = _task_sketcher(config, token)
        s = np.ascontiguousarray(block)
        x = np.atleast_2d(sk.summed_attributes(s, module, 1.0, method, num_threads=num_threads,
                                               fan_in=fan_in))
        m = np.atleast_1d(sk.mass(s, module, method, num_threads=num_threads, fan_in=fan_in))
        out[0, :dim] = x.sum(axis=0)
        out[0, dim] = m.sum()
    return out


def mean_attributes(sketcher: Sketcher, sketches: "da.Array", module: str, *,
                    method: str = "matched", num_threads: int = 1,
                    fan_in: Optional[int] = None) -> "da.Array":
    """The weight-averaged attribute vector of ``module`` pooled over all sketches (summed
    attributes over all sketches / summed masses; NaN if the mass is 0), as
    :meth:`Repository.mean_attributes` computes it, as a lazy Dask array ``(attribute_dim,)``.

    Each task reduces its block to ``attribute_dim + 1`` numbers, so the sketches are never
    all in memory. ``fan_in``: as in :func:`count`.
    """
    check_method(method, fan_in)
    arr = _check_query(sketcher, sketches, module)
    dim = sketcher.modules[module].attribute_dim
    partial = arr.map_blocks(_sum_block, sketcher.to_json(), uuid.uuid4().hex, module, method,
                             _threads(num_threads), dim, fan_in,
                             chunks=((1,) * arr.numblocks[0], (dim + 1,)), dtype=np.float64)
    total = partial.sum(axis=0)
    return da.where(total[dim] != 0, total[:dim] / da.where(total[dim] != 0, total[dim], 1.0),
                    np.nan)
