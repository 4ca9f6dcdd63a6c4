"""The :class:`Repository`: a thin facade joining the store, the retrieval index, the aggregates,
clustering, explanation, forgetting, the stored object sketches and their signatures, and the
learned modules (each in its own module of this package, e.g. ``object_search`` and
``learning`` for the object look-ups' and module learning's analytics, or of
``recsketch.learned`` / ``recsketch.signatures``).

Threads: a Repository may be shared by threads. The store's lock guards its connection and
memory map (and the retrieval index); ``_sketcher_lock`` guards the repository's Sketcher (its
module registry and query caches), which every query and registration goes through. Lock order:
the store's lock may be held when the Sketcher's is taken, never the reverse.
"""

from __future__ import annotations

import datetime as _dt
import json
import numbers
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._checks import as_real_array, check_fraction, check_int
from .._forksafe import fork_safe_rlock
from ..denoise import Subspace, SubspaceFitter, check_rule, sketcher_identity
from ..erasure import ErasedSketch
from ..guided import GuidedReader
from ..joint import check_method
from ..learned import (LearnedModule, check_learned, check_make_room, register_learned,
                       sketch_grown)
from ..sketcher import Sketcher
from .aggregates import DEFAULT_CHUNK_BYTES, Aggregates, check_chunk_bytes
from .clusters import Clusters, kmeans
from .denoising import DenoisedRead, check_denoise, check_kept_lengths, fit_stored
from .explain import explain_pair
from .forgetting import ForgetPolicy, parse_policy, target_lengths
from .index import RetrievalIndex
from .learned_store import LearnedStore
from .learning import check_learn_arguments, fit_cluster
from .object_search import match_objects, match_signed
from .objects import (ObjectBatch, ObjectMatches, ObjectStore, fingerprints,
                      rebuild_object_sketch)
from .signed import SignatureTable
from ..signatures import SignatureSpec, sign_graph
from .store import Store, one_id, selection
from .times import TimeLike, to_seconds

__all__ = ["Repository"]

_PRIVATE = object()
# object reads retry on a fresh snapshot when their objects file was retired meanwhile
_SNAPSHOT_ATTEMPTS = 5


class Repository:
    """Many sketches on disk, with metadata, retrieval, aggregates, clustering and forgetting.

    Create with :meth:`create`, reopen with :meth:`open`; use as a context manager (or call
    :meth:`close`) so the nearest-neighbour index is saved (it is rebuilt if it is not).
    A Repository may be shared by threads.

    Aggregates (:meth:`count`, :meth:`mass`, :meth:`mean_attributes`) stream the selected
    sketches in chunks of at most :attr:`chunk_bytes` bytes of float32 values (default
    ``DEFAULT_CHUNK_BYTES`` = 64 MiB; they use about 2.5 times that), so a repository larger
    than memory can be aggregated.

    ``method="joint"`` queries use the ``joint_max_unknowns`` stored with the Sketcher at
    :meth:`create`; setting ``repo.sketcher.decoder.joint_max_unknowns`` later changes this
    session's answers only and is not saved (a reopened repository uses the stored value).
    """

    # -- lifecycle ------------------------------------------------------------------------------
    def __init__(self, store: Store, sketcher: Sketcher, *, _token: object = None):
        if _token is not _PRIVATE:
            raise TypeError("use Repository.create(path, sketcher) or Repository.open(path)")
        self._store = store
        self._sketcher = sketcher
        self._sketcher_lock = fork_safe_rlock()
        self._index = RetrievalIndex(store)
        self._objects = ObjectStore(store)
        self._signed = SignatureTable(store)
        self._aggregates = Aggregates(store, sketcher, self._sketcher_lock)
        self._chunk_bytes = DEFAULT_CHUNK_BYTES
        self._learned_store = LearnedStore(store)
        self._learned: Dict[str, LearnedModule] = self._learned_store.read_all()

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
        text = sketcher.to_json()
        Store.create(p, text, dt, int(index_dim))
        own = Sketcher.from_json(text)
        return cls(Store(p, own.d_sketch), own, _token=_PRIVATE)

    @classmethod
    def open(cls, path: Union[str, os.PathLike], sketcher: Optional[Sketcher] = None
             ) -> "Repository":
        """Open an existing repository. If ``sketcher`` is given it must generate the same
        matrices as the stored one (ValueError otherwise); its module registry is merged."""
        p = Path(path)
        stored = Sketcher.from_json(Store.read_meta(p)["sketcher"])
        if sketcher is not None:
            if not isinstance(sketcher, Sketcher):
                raise TypeError("sketcher must be a recsketch.Sketcher")
            if not stored.same_matrices(sketcher):
                raise ValueError("the repository was created with a different Sketcher "
                                 f"configuration: {stored!r} vs {sketcher!r}")
        repo = cls(Store(p, stored.d_sketch), stored, _token=_PRIVATE)
        if sketcher is not None:
            with repo._store.writer(), repo._store.transaction():
                repo._store_registry(sketcher)
        return repo

    def close(self) -> None:
        """Save the retrieval index and close the database (in a process forked after the
        repository was opened: only mark it closed, the parent owns the files)."""
        store = self._store
        with store.lock:
            if store.closed:
                return
            if not store.opened_here:
                store.close()
                return
            try:
                if self._index.needs_saving:
                    with store.writer():
                        self._index.save_if_changed()
            finally:
                store.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self._store
        if s.closed or not s.opened_here:   # (the count needs the database)
            state = "closed" if s.closed else "opened before a fork"
            return f"Repository({str(s.path)!r}, {state}, d={s.d}, dtype={s.dtype.name})"
        return (f"Repository({str(s.path)!r}, {len(self)} sketches, d={s.d}, "
                f"dtype={s.dtype.name})")

    # -- properties -----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def sketcher(self) -> Sketcher:
        """The repository's Sketcher (sketch new graphs with it; see :meth:`add_graphs`).
        Calls made on it directly are not serialised with the repository's own."""
        return self._sketcher

    @property
    def dtype(self) -> np.dtype:
        return self._store.dtype

    @property
    def index_dim(self) -> int:
        return self._store.index_dim

    @property
    def chunk_bytes(self) -> int:
        """Bytes of float32 values the aggregates read at a time (default 64 MiB, at most
        ``MAX_CHUNK_BYTES``, 4 GiB)."""
        return self._chunk_bytes

    @chunk_bytes.setter
    def chunk_bytes(self, value: int) -> None:
        self._chunk_bytes = check_chunk_bytes(value)

    def __len__(self) -> int:
        return self._store.count()

    # -- the module registry --------------------------------------------------------------------
    def _store_registry(self, sketcher: Sketcher, *, apply: bool = True) -> Sketcher:
        """Inside a write transaction: merge ``sketcher``'s modules into the stored registry
        (re-read now, so registrations of other processes are kept) and, with ``apply``, into
        ours. Returns the merged registry (for a caller that applies it after its commit)."""
        store = self._store
        stored = store.meta()["sketcher"]
        merged = Sketcher.from_json(stored)
        with self._sketcher_lock:
            for source in (self._sketcher, sketcher):
                for name, info in source.modules.items():
                    merged.register_module(name, info.depth, info.attribute_dim)
            text = merged.to_json()
            if text != stored:
                store.set_meta(sketcher=text)
            if apply:
                self._apply_registry(merged)
        return merged

    def _apply_registry(self, merged: Sketcher) -> None:
        """Register in our Sketcher the modules of ``merged`` it lacks."""
        with self._sketcher_lock:
            known = self._sketcher.modules
            for name, info in merged.modules.items():
                if name not in known:
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
             registry: bool, objects: Optional[ObjectBatch] = None,
             signed: Optional[Tuple[SignatureSpec, List[Optional[bytes]]]] = None
             ) -> np.ndarray:
        store = self._store
        store.check_open()
        d = store.d
        arr = as_real_array(sketches, "sketches")
        if arr.dtype.kind != "f":
            raise TypeError(f"sketches must be a float array, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != d:
            raise ValueError(f"sketches must have shape (n, {d}), got {arr.shape}")
        n = arr.shape[0]
        if n == 0:
            return np.zeros(0, np.int64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("sketches contain NaN or infinity")
        stored = arr.astype(store.dtype)
        if not np.all(np.isfinite(stored)):
            raise ValueError(f"sketches overflow the storage dtype {store.dtype}")
        ts = _timestamps(timestamps, n)
        lab = _labels(labels, n)
        # the modules of these sketches, in the same transaction
        def hook(new_ids: np.ndarray) -> None:
            if registry:
                self._store_registry(self._sketcher)
            if objects is not None:
                oids = self._objects.write(objects, new_ids)
                if signed is not None:
                    spec, keys = signed
                    at = [r for r, key in enumerate(keys) if key is not None]
                    self._signed.write(spec, oids[at].tolist(),
                                       [objects.module[r] for r in at], [keys[r] for r in at])
        return store.append(stored, ids, ts, lab, in_transaction=hook)

    def add_graphs(self, graphs: Sequence[Any], *, objects: bool = False,
                   signatures: Optional[SignatureSpec] = None,
                   num_threads: Optional[int] = None, make_room: str = "error",
                   **kwargs: Any) -> np.ndarray:
        """Sketch graphs with the repository's Sketcher, record new modules, and :meth:`add`.

        With learned modules (:meth:`learn_module`, :meth:`add_learned`), each graph on
        whose sketch one fires gains that module's object and is sketched again
        (:func:`recsketch.learned.sketch_grown`); the stored sketch is the grown graph's.
        The object needs room: a graph whose output weights sum to more than ``1 -`` the
        firing modules' weights is a ValueError (``make_room="error"``, the default; nothing
        is stored), unless ``make_room="scale"``, which scales that graph's other output
        weights down to leave the room: the other modules' counts in that sketch then read
        back smaller by that factor (their queries need the scaled weights). To avoid both,
        choose the learned modules' weights to leave room (``weight=`` of
        :meth:`learn_module`).

        With ``objects=True`` every object's sketch is stored too (bit-identical to
        ``sketcher.sketch(g, return_objects=True)``), with its module, its graph's id, its
        ``Handle.index`` and its fingerprint, in the same transaction as the graphs' sketches:
        see :meth:`find_object` and :meth:`object_sketches`. Each object costs ``d`` values
        of the repository's dtype plus ``attribute_dim`` float32.

        With ``signatures=SignatureSpec(...)`` (needs ``objects=True``; opt-in, one spec per
        repository) every graph is signed first (``recsketch.signatures.sign_graph``: each
        object's attribute carries a code of its content key, so its module's attribute
        length grows by ``spec.dim``) and the keys are stored: see :meth:`find_signed`.
        Objects added by learned modules are not signed.
        """
        unknown = set(kwargs) - {"ids", "timestamps", "labels"}
        if unknown:
            raise TypeError(f"add_graphs got unexpected keywords {sorted(unknown)}")
        make_room = check_make_room(make_room)
        if not isinstance(objects, bool):
            raise TypeError(f"objects must be True or False, got {objects!r}")
        signed = None
        if signatures is not None:
            if not isinstance(signatures, SignatureSpec):
                raise TypeError("signatures must be a recsketch.signatures.SignatureSpec")
            if not objects:
                raise ValueError("signatures need objects=True (the keys name stored objects)")
            spec = signatures.checked()
            known = self._signed.spec()
            if known is not None and known != spec:
                raise ValueError(f"this repository signs objects with {known}, not {spec}")
            pairs = [sign_graph(g, spec) for g in graphs]  # validates every graph first
            graphs = [p[0] for p in pairs]
            signed = (spec, [p[1] for p in pairs])
        self._store.check_open()
        batch = None
        # sketching registers the graphs' new modules: a refused batch (no room for a
        # learned object, a bad object batch) unregisters them again
        with self._sketcher_lock, self._sketcher.registry_rollback():
            # sketch_many validates every graph before any is sketched or registered
            if self._learned:
                grown = sketch_grown(self._sketcher, graphs, list(self._learned.values()),
                                     num_threads=num_threads, make_room=make_room)
                s, graphs = grown.sketches, grown.graphs
            else:
                s = self._sketcher.sketch_many(graphs, num_threads=num_threads)
            if objects:
                batch = self._object_batch(graphs, num_threads)
        keys = None
        if signed is not None and batch is not None:
            per_graph = signed[1]
            keys = (signed[0], [per_graph[g][i] if i < len(per_graph[g]) else None
                                for g, i in zip(batch.graph.tolist(), batch.index.tolist())])
        return self._add(s, kwargs.get("ids"), kwargs.get("timestamps"), kwargs.get("labels"),
                         registry=True, objects=batch, signed=keys)

    def _object_batch(self, graphs: Sequence[Any], num_threads: Optional[int]
                      ) -> ObjectBatch:
        """Under the Sketcher's lock: the object sketches of every graph and their
        fingerprints. (The Sketcher returns object sketches one graph at a time, so the
        graphs are sketched a second time here.)"""
        sk = self._sketcher
        dt = self._store.dtype
        gpos: List[int] = []
        index: List[int] = []
        module: List[str] = []
        rows: List[np.ndarray] = []
        for k, g in enumerate(graphs):
            _, objs = sk.sketch(g, return_objects=True, num_threads=num_threads)
            for h in g:
                gpos.append(k)
                index.append(h.index)
                module.append(h.module)
            rows.append(np.asarray(objs))
        d = self._store.d
        sketches = np.concatenate(rows) if rows else np.zeros((0, d))
        stored = sketches.astype(dt)
        if not np.all(np.isfinite(stored)):
            raise ValueError(f"object sketches overflow the storage dtype {dt}")
        fps: List[Optional[np.ndarray]] = [None] * len(module)
        names = np.asarray(module, dtype=object)
        for name in sorted(set(module)):
            at = np.flatnonzero(names == name)
            # read from the stored values, so a fingerprint matches what find_object re-reads
            fp = fingerprints(sk, name, stored[at].astype(np.float64))
            for r, a in enumerate(at.tolist()):
                fps[a] = fp[r]
        return ObjectBatch(np.asarray(gpos, np.int64), np.asarray(index, np.int64), module,
                           stored, fps)  # type: ignore[arg-type]

    def delete(self, ids: Any) -> int:
        """Delete sketches by id (unknown ids are a ValueError, nothing deleted); returns the
        number deleted, and their stored objects go with them. Their space is reclaimed by the
        next :meth:`forget` or :meth:`compact` (theirs and their objects')."""
        def drop(graph_ids: np.ndarray) -> None:
            self._objects.delete_graphs(graph_ids)
            self._signed.delete_orphans()
        return self._store.delete(ids, in_transaction=drop)

    # -- learned modules (paper §1.1, "Learning New Modules") ----------------------------------
    @property
    def learned_modules(self) -> Dict[str, LearnedModule]:
        """The learned modules :meth:`add_graphs` applies, by name (a copy). They are stored
        in the repository (:meth:`open` restores them); a module added by another process
        is seen after reopening."""
        return dict(self._learned)

    def learn_module(self, name: str, clusters: Clusters, cluster: int, *,
                     since: TimeLike, max_past: int = 1000, seed: int = 0,
                     **options: Any) -> LearnedModule:
        """Learn a module from a cluster of stored sketches and add it (:meth:`add_learned`).

        The cluster's members (``clusters.members(cluster)``, e.g. one of
        ``clusters.new_since(since)``) are the positives; the stored sketches dated before
        ``since`` are the past it is told apart from (at most ``max_past`` of them, drawn with
        ``seed``). ``since`` is required (a time, as in :meth:`select`). ``options`` go to
        :meth:`LearnedModule.fit` (``rank``, ``components``, ``threshold``, ``weight``,
        ``min_novelty``). When forgetting has cut some of these sketches, the detector is
        fitted on (and reads) the prefix every one of them keeps (``module.prefix``), so
        zeros standing for forgotten coordinates are never taken for novelty. A
        ``RuntimeWarning`` if the cluster is not one of ``clusters.new_since(since)`` (its
        members are mostly older: a detector of it tells little new apart).
        """
        t = check_learn_arguments(name, clusters, cluster, since, max_past)
        with self._sketcher_lock:
            if name in self._learned or name in self._sketcher.modules:
                raise ValueError(f"module {name!r} already exists")
        past_ids = self.select(until=t)
        if past_ids.size > max_past:
            rng = np.random.default_rng(seed)
            past_ids = np.sort(rng.choice(past_ids, int(max_past), replace=False))
        if past_ids.size == 0:
            raise ValueError(f"no stored sketch is dated before since={since!r}")
        module = fit_cluster(name, clusters, int(cluster), t, past_ids, self.get, self.lengths,
                             self._store.d, options)
        self.add_learned(module)
        return module

    def add_learned(self, module: LearnedModule) -> None:
        """Register a learned module: from now on :meth:`add_graphs` adds its object to
        every graph on whose sketch it fires, and its counts and attributes are queried like
        any module's (depth 2, weight ``module.weight``). ValueError if a module of that
        name exists (learned, or in the Sketcher's registry)."""
        self._store.check_open()
        with self._sketcher_lock:
            check_learned(self._sketcher, [module])
            if module.name in self._learned or module.name in self._sketcher.modules:
                raise ValueError(f"module {module.name!r} already exists")
        with self._store.writer():
            with self._store.transaction():
                # another process may have registered the name meanwhile: the stored registry
                stored = Sketcher.from_json(self._store.meta()["sketcher"])
                if module.name in stored.modules:
                    raise ValueError(f"module {module.name!r} already exists")
                self._learned_store.write(module)
                # registered in a copy: our Sketcher learns the name only once it is committed
                # (else a failed call would leave it half-registered, and the next add_graphs
                # would store the name without its module)
                register_learned(stored, module)
                merged = self._store_registry(stored, apply=False)
            with self._sketcher_lock:
                self._apply_registry(merged)
                self._learned[module.name] = module

    # -- stored objects ---------------------------------------------------------------------------
    def object_sketches(self, graph_id: int) -> Tuple[List[str], np.ndarray]:
        """``(modules, sketches)`` of the objects stored with a graph's sketch, in
        ``Handle.index`` order: ``sketches`` is float32 ``(n_objects, d)``. ValueError if the
        graph was stored without its objects (or is unknown)."""
        graph_id = one_id(graph_id, "graph_id")   # (1.0 as well: the ids' rule)
        for attempt in range(_SNAPSHOT_ATTEMPTS):
            idx, modules, off, gen = self._objects.of_graph(graph_id)
            if idx.size == 0:
                raise ValueError(f"no objects stored for sketch {graph_id}")
            try:
                return modules, self._objects.read(off, gen)
            except FileNotFoundError:  # compacted meanwhile, three times: a new snapshot
                if attempt == _SNAPSHOT_ATTEMPTS - 1:
                    raise

    def object_count(self) -> int:
        """How many object sketches are stored."""
        return self._objects.count()

    def find_object(self, s: Any, module: str, k: int = 10, *,
                    path: Optional[Sequence[int]] = None, candidates: Optional[int] = None,
                    rerank: bool = False, method: str = "matched") -> ObjectMatches:
        """The ``k`` stored objects of ``module`` that best match the object of that module in
        the sketch ``s`` (an overall sketch ``(d,)``, an :class:`ErasedSketch` or a
        :class:`SubSketch`), best first: :class:`ObjectMatches` (object ids, graph ids,
        indices in the graphs, scores, fingerprint scores). Needs graphs added with
        ``add_graphs(..., objects=True)``.

        1. Fingerprint: the object's attribute is recovered from ``s`` (``sketcher.attributes``
           with ``path``, the input positions from the output down to the object; without it
           the module must have one object in ``s``) and compared with every stored fingerprint
           of the module (the attribute read back from each stored object sketch when it was
           added). ``fingerprint_scores`` are these cosines; without re-ranking they are also
           ``scores``. Cost: one read-out of ``s`` and a product with the module's stored
           fingerprints (held in memory for the query: ``attribute_dim`` float32 each).
        2. With ``rerank=True`` (and a ``path``, or ``s`` the object's own SubSketch), the
           ``candidates`` best (default ``max(10 k, 100)``) are re-ranked: the object's sketch is
           rebuilt from ``s`` (its sub-sketch wrapped by ``P(R[M,0])``) and ``scores`` are the
           cosines between it and each candidate's stored object sketch, both centred on the
           candidates' mean. Off by default: on the scenes of ``bench/find_object.py`` it
           identifies the object less often than the fingerprints alone (docs/objects.md).
        """
        from ..queries import SubSketch
        if not isinstance(module, str):
            raise TypeError(f"module must be a str, got {type(module).__name__}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not isinstance(rerank, bool):
            raise TypeError(f"rerank must be True or False, got {rerank!r}")
        if candidates is None:
            candidates = max(10 * int(k), 100)
        if isinstance(candidates, bool) or not isinstance(candidates, numbers.Integral) \
                or candidates < k:
            raise ValueError(f"candidates must be an integer >= k, got {candidates!r}")
        self._store.check_open()
        own = isinstance(s, SubSketch) and s.module == module and not path
        with self._sketcher_lock:
            info = self._sketcher.module_info(module)
            # on the object's own SubSketch the Sketcher reads the object's attribute (no path)
            est = self._sketcher.attributes(s, module, None if own else path, method=method)
            x = np.asarray(est.attributes, np.float64)
            if x.ndim != 1:
                raise ValueError("find_object takes one sketch, not a batch")
            if not np.all(np.isfinite(x)):
                raise ValueError("the sketch contains NaN or infinity")
            target = rebuild_object_sketch(self._sketcher, s, module, path) \
                if rerank and (path or own) else None
        for attempt in range(_SNAPSHOT_ATTEMPTS):
            try:
                return match_objects(self._objects, module, info.attribute_dim, x, target,
                                     int(k), int(candidates))
            except FileNotFoundError:  # compacted meanwhile, three times: a new snapshot
                if attempt == _SNAPSHOT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def find_signed(self, s: Any, module: str, k: int = 10, *,
                    path: Optional[Sequence[int]] = None, method: str = "matched"
                    ) -> ObjectMatches:
        """The ``k`` stored signed objects of ``module`` whose signature codes best match the
        code read back from ``s`` at ``path`` (graphs added with ``signatures=...``), best
        first. Identification is up to content: identical objects share a key and a code
        and score alike (ties ordered by object id). ``scores``: inner products of the code
        estimate with each stored code;
        ``fingerprint_scores``: the fingerprint cosines of the same objects. Costs: one
        read-out of ``s``, and the code positions of every signed object of the module (drawn
        from their keys per query). Measured against :meth:`find_object`: docs/objects.md.
        """
        if not isinstance(module, str):
            raise TypeError(f"module must be a str, got {type(module).__name__}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self._store.check_open()
        spec = self._signed.spec()
        if spec is None:
            raise ValueError("no signed objects in this repository (add_graphs(..., "
                             "objects=True, signatures=SignatureSpec()))")
        with self._sketcher_lock:
            info = self._sketcher.module_info(module)
            if info.attribute_dim <= spec.dim:
                raise ValueError(f"module {module!r} is not signed (attribute length "
                                 f"{info.attribute_dim} <= the code's {spec.dim})")
            est = self._sketcher.attributes(s, module, path, method=method)
            x = np.asarray(est.attributes, np.float64)
            if x.ndim != 1:
                raise ValueError("find_signed takes one sketch, not a batch")
        return match_signed(self._signed, self._objects, module, spec, info.attribute_dim, x,
                            int(k))

    # -- reading -------------------------------------------------------------------------------
    def get(self, ids: Any) -> np.ndarray:
        """Stored sketches ``(n, d)`` float32 in the order of ``ids`` (a truncated sketch has
        zeros past its kept prefix: see :meth:`lengths`). Unknown ids raise ValueError."""
        r, data = self._store.located(ids)
        out = self._store.load(r.offsets, r.lengths, data)
        return out[0] if np.ndim(ids) == 0 else out

    def lengths(self, ids: Any) -> np.ndarray:
        """How many leading coordinates of each sketch are kept (d unless forgotten)."""
        return self._store.lookup(ids).lengths

    def ids(self) -> np.ndarray:
        return self._store.rows().ids

    def timestamps(self, ids: Optional[Any] = None) -> np.ndarray:
        """Unix-second timestamps of ``ids`` (default: every sketch, in id order)."""
        if ids is None:
            return self._store.rows().timestamps
        return self._store.lookup(ids).timestamps  # one snapshot: ids and their timestamps

    def labels(self, ids: Any) -> List[Any]:
        return self._store.labels(ids)

    def select(self, *, since: Optional[TimeLike] = None, until: Optional[TimeLike] = None,
               where: Optional[Dict[str, Any]] = None) -> np.ndarray:
        """Ids of the sketches with ``since <= timestamp < until`` whose labels (a JSON object)
        have every ``key: value`` of ``where``."""
        return self._store.rows(*selection(since, until, where)).ids

    # -- queries on stored sketches --------------------------------------------------------------
    def _query_args(self, module: Any, method: Any, weight: Any = 1.0, fan_in: Any = None
                    ) -> float:
        """Check an aggregate's arguments before anything is read: an empty selection answers
        nothing, so a mistake would otherwise pass unnoticed. Returns the weight."""
        check_method(method, fan_in)   # fan_in: method="joint" only, as on the Sketcher
        with self._sketcher_lock:
            self._sketcher.module_info(module)  # TypeError / ValueError naming the module
        return check_fraction(weight, "weight")

    def count(self, module: str, weight: float, *, since: Any = None, until: Any = None,
              where: Optional[Dict[str, Any]] = None, method: str = "matched",
              fan_in: Optional[int] = None,
              denoise: Optional[Union[Subspace, GuidedReader]] = None
              ) -> Tuple[np.ndarray, np.ndarray]:
        """Per-sketch counts of ``module`` (Theorem 3) over the selected sketches:
        ``(ids, counts)``, computed chunk by chunk (one matrix product per chunk).
        ``fan_in``: the joint read-out's bound (``method="joint"`` only, as on the Sketcher).
        ``denoise``: a :class:`recsketch.denoise.Subspace` (:meth:`denoiser`): each sketch is
        projected on it (a forgotten one completed) and read by ``method``; or a
        :class:`recsketch.guided.GuidedReader` (:meth:`guided_reader`, ``method="joint"``):
        the joint fit on the words the subspace spans. Either must come from this repository's
        Sketcher (the same family, d, seed, block size and density; ValueError naming both
        otherwise). On full-length clean sketches a Subspace changes nothing (they are their
        own projection): it pays off for forgotten sketches (completed from their prefixes;
        a RuntimeWarning when that is ill-conditioned) and through a GuidedReader. See
        :meth:`denoiser` for when each helps."""
        weight = self._query_args(module, method, weight, fan_in)
        how = check_denoise(denoise, self._store.d, method, fan_in, self._identity())
        rows, fd = self._streamed_for(how, since, until, where)
        if how.reader is not None:
            reader = how.reader
            return self._aggregates.per_sketch(
                lambda sk, s: reader.count(s, module, weight), rows, fd, self._chunk_bytes)
        return self._aggregates.per_sketch(
            lambda sk, s: sk.count(s, module, weight, method, fan_in=fan_in),
            rows, fd, self._chunk_bytes, how.transform)

    def mass(self, module: str, *, since: Any = None, until: Any = None,
             where: Optional[Dict[str, Any]] = None, method: str = "matched",
             fan_in: Optional[int] = None,
             denoise: Optional[Union[Subspace, GuidedReader]] = None
             ) -> Tuple[np.ndarray, np.ndarray]:
        """Per-sketch summed effective weight of ``module``: ``(ids, masses)`` (``denoise``
        as in :meth:`count`: no change for full-length clean sketches; pays off for
        forgotten ones and through a GuidedReader)."""
        self._query_args(module, method, fan_in=fan_in)
        how = check_denoise(denoise, self._store.d, method, fan_in, self._identity())
        rows, fd = self._streamed_for(how, since, until, where)
        if how.reader is not None:
            reader = how.reader
            return self._aggregates.per_sketch(
                lambda sk, s: reader.mass(s, module), rows, fd, self._chunk_bytes)
        return self._aggregates.per_sketch(
            lambda sk, s: sk.mass(s, module, method, fan_in=fan_in),
            rows, fd, self._chunk_bytes, how.transform)

    def mean_attributes(self, module: str, *, since: Any = None, until: Any = None,
                        where: Optional[Dict[str, Any]] = None, method: str = "matched",
                        fan_in: Optional[int] = None,
                        denoise: Optional[Union[Subspace, GuidedReader]] = None
                        ) -> np.ndarray:
        """The weight-averaged attribute vector of ``module`` pooled over the selected sketches
        (sum over sketches of the summed attributes / sum of the masses; ``denoise`` as in
        :meth:`count`: no change for full-length clean sketches; pays off for forgotten ones
        and through a GuidedReader)."""
        self._query_args(module, method, fan_in=fan_in)
        how = check_denoise(denoise, self._store.d, method, fan_in, self._identity())
        rows, fd = self._streamed_for(how, since, until, where)
        read = None
        if how.reader is not None:
            reader = how.reader

            def read(s: Any) -> Tuple[np.ndarray, np.ndarray]:
                return reader.summed_attributes(s, module), reader.mass(s, module)
        return self._aggregates.mean_attributes(module, method, rows, fd, self._chunk_bytes,
                                                fan_in=fan_in, transform=how.transform,
                                                read=read)

    def _streamed_for(self, how: DenoisedRead, since: Any, until: Any,
                      where: Optional[Dict[str, Any]]) -> Tuple[Any, int]:
        """The selected rows and their descriptor, after checking that a denoised read can
        complete every forgotten sketch among them (the descriptor is closed if not)."""
        rows, fd = self._store.streamed(*selection(since, until, where))
        try:
            check_kept_lengths(how, rows)
        except ValueError:
            if fd >= 0:
                os.close(fd)
            raise
        return rows, fd

    def _identity(self) -> Any:
        """What defines this repository's matrices (checked against a ``denoise=``)."""
        with self._sketcher_lock:
            return sketcher_identity(self._sketcher)

    def guided_reader(self, subspace: Subspace, *, fan_in: Optional[int] = None
                      ) -> GuidedReader:
        """The joint read-out restricted to the words ``subspace`` spans
        (:class:`recsketch.guided.GuidedReader`, built with this repository's Sketcher and
        registry): pass it as ``denoise=`` with ``method="joint"`` to :meth:`count`,
        :meth:`mass` and :meth:`mean_attributes`, or call its queries on any sketch.

        It scores every path up to ``fan_in`` (default 8) against the subspace and fits only
        the paths the stored sketches use: where the plain joint fit cannot enumerate every
        path (its budget), this one is exact on sketches of the layout the subspace spans
        (docs/denoise.md); modules the layout does not hold read 0. ``reader.coverage`` below 1
        means the subspace spans something no searched path does (noise kept by the rank
        rule, positions above ``fan_in``): the read is then not exact. Building costs one
        design row per candidate unknown (measured: docs/denoise.md); queries one product.
        ``subspace`` must come from this repository's Sketcher (ValueError naming both
        otherwise)."""
        with self._sketcher_lock:
            return GuidedReader(self._sketcher, subspace, fan_in=fan_in)

    def denoiser(self, *, since: Any = None, until: Any = None,
                 where: Optional[Dict[str, Any]] = None, rank: Optional[int] = None,
                 energy: Optional[float] = None, noise_std: Optional[float] = None,
                 rtol: Optional[float] = None, max_rank: Optional[int] = None) -> Subspace:
        """The principal subspace of the selected stored sketches (``recsketch.denoise``), to
        pass as ``denoise=`` to :meth:`count`, :meth:`mass` and :meth:`mean_attributes`, or
        to call ``.project(s)`` on any sketch.

        Fitted chunk by chunk (:attr:`chunk_bytes` at a time; memory the chunk plus about
        ``32 d (k + m) + 56 (k + m)^2`` bytes with ``k + m <= 2 max(max_rank, 64)``, a
        ``d x d`` SVD when that reaches ``d``: see
        :class:`recsketch.denoise.SubspaceFitter`) on the selected sketches that keep
        all their coordinates; forgotten ones are left out of the fit and completed from it
        when read. The rank: one rule of ``rank``, ``energy``, ``noise_std`` or ``rtol``
        (default ``rtol=recsketch.denoise.DEFAULT_RTOL``, relative to the largest singular
        value: it drops real but weak directions of deep or weakly weighted layouts, whose
        modules a GuidedReader then reads as 0; pass ``rank=`` there; see
        :meth:`recsketch.denoise.SubspaceFitter.subspace`); ``max_rank`` bounds what the
        streamed fit keeps (default ``min(d // 2, 1024)``).

        When it helps and when it hurts (measured, docs/denoise.md): sketches of one layout
        (the same modules on the same paths) span a subspace of at most
        ``sum (attribute_dim + 1)`` over its (module, path) pairs. A sketch in the span is its
        own projection, so every linear read-out (paper, matched, joint) answers the same with
        or without it: the other objects' cross-talk is inside the span. Projecting helps
        forgotten sketches (completed from their prefixes: each method back to its
        full-sketch error) and barely helps against noise; :meth:`guided_reader` uses the
        subspace to choose the joint fit's paths, which is exact on the layout. A sketch of
        a layout the selection did not span (graphs that vary per input, a new module) loses
        what lies outside: check ``subspace.residual(s)`` before trusting it there.
        """
        rule = check_rule(rank=rank, energy=energy, noise_std=noise_std, rtol=rtol)
        d = self._store.d
        with self._sketcher_lock:
            fitter = SubspaceFitter(d, max_rank, sketcher=self._sketcher)   # checks max_rank
        rows, fd = self._store.streamed(*selection(since, until, where))
        if rows.ids.size == 0:
            raise ValueError("no sketch matches the selection: nothing to fit the subspace on")
        return fit_stored(self._aggregates, rows, fd, self._chunk_bytes, d, fitter, rule)

    # -- retrieval --------------------------------------------------------------------------------
    def search(self, query: Any, k: int = 10, *, candidates: Optional[int] = None,
               exclude: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` stored sketches most similar (cosine) to ``query``: ``(ids, cosines)``.

        ``query`` is a sketch ``(d,)`` or a stored id (that id is then excluded). Candidates
        come from the approximate index over the prefixes (``candidates``, default
        ``max(10 k, 100)``) and are re-ranked exactly on the coordinates both sketches keep.
        """
        return self._index.search(query, k, candidates, exclude)

    # -- clusters, explanation ----------------------------------------------------------------------
    def clusters(self, k: int, *, since: Any = None, until: Any = None,
                 where: Optional[Dict[str, Any]] = None, seed: int = 0) -> Clusters:
        """k-means (scikit-learn) on the unit-normalised index prefixes of the selected sketches
        (they are held in memory: ``index_dim`` float32 values per sketch)."""
        store = self._store
        (ids, ts, off, ln, _, _), data = store.selected(*selection(since, until, where))
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= ids.size:
            raise ValueError(f"k must be an integer in [1, {ids.size}] (the selected sketches)")
        seed = check_int(seed, "seed", minimum=0, maximum=2**32 - 1)   # (scikit-learn's range)
        prefixes = store.load(off, ln, data, width=store.index_dim)
        return kmeans(ids, ts, prefixes, int(k), seed)

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
        store = self._store
        r, data = store.located([id_a, id_b])
        ln = r.lengths
        rows = store.load(r.offsets, ln, data)
        d = store.d
        # a forgotten sketch is read as the prefix it kept, rescaled (graceful erasure)
        pair = [rows[k] if ln[k] == d else
                ErasedSketch(rows[k, :ln[k]].copy(), np.arange(ln[k]), d, "prefix", 0)
                for k in range(2)]
        with self._sketcher_lock:
            return explain_pair(self._sketcher, pair, paths, method)

    # -- forgetting -----------------------------------------------------------------------------------
    def forget(self, policy: Optional[ForgetPolicy] = None, *, now: Any = None
               ) -> Dict[str, int]:
        """Truncate older sketches to shorter prefixes in tiers and reclaim the space.

        ``policy`` is a list of ``(age, fraction)`` tiers, ages increasing: a sketch at most
        ``age`` old keeps ``fraction`` of its coordinates (of the first tier that covers it;
        beyond the last tier it keeps the last fraction). Default: full for 30 days, 1/4 up to a
        year, 1/16 after. A sketch is never cut below ``index_dim`` nor lengthened. Queries keep
        working on truncated sketches (graceful erasure). The bytes of deleted stored objects
        are reclaimed too (object sketches are not truncated); nothing is rewritten when no
        sketch is cut and nothing was deleted. Returns counts and bytes reclaimed.
        """
        tiers = parse_policy(policy)
        t_now = time.time() if now is None else to_seconds(now, "now")
        store = self._store
        # nothing is rewritten when no sketch is cut and nothing was deleted (a scheduled
        # forget is then free)
        out = store.rewrite(lambda ts: target_lengths(ts, t_now, tiers, store.d,
                                                      store.index_dim), force=False)
        out.update(self._objects.compact(force=False))
        return out

    def compact(self, *, force: bool = False) -> Dict[str, int]:
        """Reclaim the space of deleted sketches and of their stored objects (no
        truncation). Returns counts and bytes before and after. The sketches' data file and
        the objects' file are each rewritten (into a new generation) only when they hold
        dead bytes, unless ``force=True``."""
        if not isinstance(force, bool):
            raise TypeError(f"force must be True or False, got {force!r}")
        out = self._store.rewrite(None, force=force)
        out.update(self._objects.compact(force=force))
        return out

    def stats(self) -> Dict[str, Any]:
        """Counts, time range, kept lengths and disk use."""
        store = self._store
        ids, ts, _, ln, gen, end = store.rows()
        lengths, counts = np.unique(ln, return_counts=True)
        with self._sketcher_lock:
            modules = sorted(self._sketcher.modules)
        return {
            "sketches": int(ids.size),
            "d_sketch": store.d,
            "dtype": store.dtype.name,
            "first": float(ts.min()) if ts.size else None,
            "last": float(ts.max()) if ts.size else None,
            "kept_lengths": {int(a): int(b) for a, b in zip(lengths, counts)},
            "data_bytes": end * store.dtype.itemsize,
            "disk_bytes": store.disk_bytes(),
            "modules": modules,
        }


def _timestamps(timestamps: Any, n: int) -> List[float]:
    if timestamps is None:
        return [time.time()] * n
    if isinstance(timestamps, (str, _dt.date, np.datetime64, numbers.Real)):
        return [to_seconds(timestamps)] * n
    seq = list(np.asarray(timestamps).tolist()) if isinstance(timestamps, np.ndarray) \
        and timestamps.dtype.kind != "M" else list(timestamps)
    if len(seq) != n:
        raise ValueError(f"timestamps: expected {n}, got {len(seq)}")
    return [to_seconds(t) for t in seq]


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
