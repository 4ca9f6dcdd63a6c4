"""The Sketcher: the seed, the matrix family and the matrices of the recursive sketch."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import MAX_D_SKETCH, MAX_POSITION, check_int, check_num_threads
from ._forksafe import fork_safe_rlock
from ._native import _core
from .alloc import check_alloc
from .block_sparse import default_block_size, resolve_density, suggest_block_sparse
from .decoder import QUERY_CACHE_BYTES, Decoder
from .embeddings import LeafEmbeddings
from .graph import Graph, flatten
from .matrices import RandomMatrix
from .queries import AttributeEstimate, SubSketch
from .tuple_sampling import MAX_TUPLE_SAMPLING, sampled_sketch

__all__ = ["Sketcher", "FAMILIES", "ModuleInfo"]

FAMILIES = ("block_sparse", "orthogonal")
_FORMAT = "recsketch.Sketcher"
_FORMAT_VERSION = 2
_CONFIG_KEYS = frozenset({"format", "format_version", "d_sketch", "family", "block_size",
                          "density", "seed", "dtype", "modules", "joint_max_unknowns"})


@dataclass(frozen=True)
class ModuleInfo:
    """What a Sketcher knows of a module: its depth (Section 2.2) and attribute length."""

    depth: int
    attribute_dim: int


class Sketcher:
    """Owns the seed and the random-matrix family of a recursive sketch (paper Section 3).

    Parameters
    ----------
    d_sketch : int
        Dimension of every sketch and matrix, at most ``2**31 - 1``. For ``block_sparse`` it
        must be a multiple of a valid block size (see :func:`recsketch.suggest_block_sparse`);
        for ``orthogonal`` a power of two (at most ``2**30``).
    family : {"block_sparse", "orthogonal"}
        ``block_sparse`` is the paper's D(b, q, d) (Section 4.3), needed to learn matrices back
        (Section 4); ``orthogonal`` is an exactly orthonormal O(d log d) construction.
    block_size : int, optional
        ``b`` of D(b, q, d); default the smallest valid ``b`` dividing ``d_sketch``.
    density : float, "paper" or None
        ``q`` of D(b, q, d), the probability that a block is nonzero. None (default):
        :func:`recsketch.default_density`, the smallest ``q`` that leaves a column with no
        nonzero block with probability at most 1e-8 (about 18 nonzero blocks per column; chosen
        by measurement, ``docs/density.md``); ``"paper"``: the paper's
        ``min(1, log2 d / sqrt d)`` (:func:`recsketch.paper_density`); a float in
        ``[MIN_DENSITY, 1]`` (``recsketch.MIN_DENSITY = 2**-32``, the resolution of the 32-bit
        gap draw). ``block_size`` and ``density`` are not allowed with ``orthogonal``.
    seed : int
        In ``[0, 2**64)``. Every matrix is a pure function of ``(family parameters, seed, role)``:
        the same seed gives bit-identical matrices on every machine and thread count.
    dtype : "float32" or "float64"
        dtype of the sketches this Sketcher produces.
    query_cache_bytes : int
        Budget of the query cache (probes, probe matrices, column norms; see
        :class:`recsketch.Decoder`), default 256 MiB; also settable later through
        ``sk.decoder.cache_bytes``. Not part of the configuration (``to_dict``).

    Sketching, the registry and every query are thread-safe: one Sketcher may be shared by
    threads (each cache changes only under its lock), with the results of a single thread.

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range, naming it.
    """

    def __init__(self, d_sketch: int, *, family: str = "block_sparse",
                 block_size: Optional[int] = None, density: Union[float, str, None] = None,
                 seed: int = 0, dtype: Any = "float32",
                 query_cache_bytes: int = QUERY_CACHE_BYTES):
        d = check_int(d_sketch, "d_sketch", minimum=2, maximum=MAX_D_SKETCH)
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        seed = check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {dt}")

        if family == "orthogonal":
            if block_size is not None or density is not None:
                raise ValueError("block_size and density apply to the block_sparse family only")
            _core.OrthogonalMatrix(d, 0, 0)  # validates d
            self._native_family = None
        else:
            if block_size is None:
                block_size = default_block_size(d)
                if block_size is None:
                    hint = suggest_block_sparse(d) if d >= 24 else None
                    raise ValueError(
                        f"d_sketch={d} is not a multiple of any valid block size"
                        + (f"; the nearest valid size is d_sketch={hint.d_sketch} "
                           f"(block_size={hint.block_size})" if hint else ""))
            block_size = check_int(block_size, "block_size", minimum=3)
            density = resolve_density(density, d, block_size)
            self._native_family = _core.BlockSparseFamily(d, block_size, density)

        self._d = d
        self._family = family
        self._block_size = block_size
        self._density = density
        self._seed = seed
        self._dtype = dt
        self._matrices: Dict[Tuple[Any, ...], RandomMatrix] = {}
        self._modules: Dict[str, ModuleInfo] = {}
        # Guards the matrix map and the registry (check-then-record must not interleave).
        self._lock = fork_safe_rlock()
        self._leaf_embeddings = LeafEmbeddings()
        self._decoder = Decoder(self, query_cache_bytes)

    # -- configuration -------------------------------------------------------------------------
    @property
    def d_sketch(self) -> int:
        return self._d

    @property
    def family(self) -> str:
        return self._family

    @property
    def block_size(self) -> Optional[int]:
        """``b`` of D(b, q, d); None for the orthogonal family."""
        return self._block_size

    @property
    def density(self) -> Optional[float]:
        """``q`` of D(b, q, d) (probability that a block is nonzero); None for orthogonal."""
        return self._density

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __repr__(self) -> str:
        extra = (f", block_size={self._block_size}, density={self._density!r}"
                 if self._family == "block_sparse" else "")
        return (f"Sketcher(d_sketch={self._d}, family={self._family!r}{extra}, "
                f"seed={self._seed}, dtype={self._dtype.name!r})")

    def __eq__(self, other: object) -> bool:
        """Same matrices, dtype and module registry."""
        if not isinstance(other, Sketcher):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # The registry grows as graphs are sketched, so a Sketcher is not hashable.
    __hash__ = None  # type: ignore[assignment]

    def same_matrices(self, other: "Sketcher") -> bool:
        """True if ``other`` generates the same matrices and sketches (registry aside)."""
        a, b = self.to_dict(), other.to_dict()
        for c in (a, b):   # the registry, and a setting of the queries only
            c.pop("modules")
            c.pop("joint_max_unknowns", None)
        return a == b

    # -- module registry -----------------------------------------------------------------------
    @property
    def modules(self) -> Dict[str, ModuleInfo]:
        """The module registry: name -> ModuleInfo(depth, attribute_dim) (a copy)."""
        return dict(self._modules)

    def register_module(self, name: str, depth: int, attribute_dim: int) -> None:
        """Declare a module's depth (2 = top level) and attribute length before sketching it.

        Raises ValueError if the module is already known with other values.
        """
        if not isinstance(name, str) or not name:
            raise TypeError("module name must be a non-empty str")
        info = ModuleInfo(check_int(depth, "depth", minimum=2),
                          check_int(attribute_dim, "attribute_dim", minimum=1, maximum=self._d))
        with self._lock:
            self._check_registry({name: info.depth}, {name: info.attribute_dim})
            self._modules.setdefault(name, info)

    @contextmanager
    def registry_rollback(self) -> Iterator[None]:
        """Modules first registered inside the block (by sketching or ``register_module``)
        are unregistered again if the block raises: a caller that sketches and then fails
        (e.g. a Repository refusing the batch) leaves the registry as it found it. Modules
        that another thread registered meanwhile under a new name are removed too: use it
        where the caller serialises the Sketcher's registrations."""
        with self._lock:
            before = set(self._modules)
        try:
            yield
        except BaseException:
            with self._lock:
                for name in set(self._modules) - before:
                    del self._modules[name]
            raise

    def _check_registry(self, depth: Dict[str, int], dim: Dict[str, int]) -> None:
        for name, h in depth.items():
            known = self._modules.get(name)
            if known is None:
                continue
            if known.depth != h:
                raise ValueError(f"module {name!r} is registered at depth {known.depth}, "
                                 f"not {h}")
            if known.attribute_dim != dim[name]:
                raise ValueError(f"module {name!r} is registered with {known.attribute_dim} "
                                 f"attributes, not {dim[name]}")

    def module_info(self, name: str) -> ModuleInfo:
        """The registry's entry of a module; ValueError if it is not registered."""
        if not isinstance(name, str):
            raise TypeError(f"module must be a str, got {type(name).__name__}")
        info = self._modules.get(name)
        if info is None:
            raise ValueError(f"module {name!r} is not registered with this Sketcher; sketch a "
                             "graph containing it or call register_module")
        return info


    # -- sketching -----------------------------------------------------------------------------
    def sketch(self, graph: Graph, *, return_objects: bool = False,
               num_threads: Optional[int] = None, tuple_sampling: Optional[int] = None,
               sample_seed: int = 0
               ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """The overall sketch of a graph (paper Section 3.3), shape ``(d_sketch,)``.

        With ``return_objects=True`` returns ``(sketch, objects)`` where ``objects[k]`` is the
        object sketch of the graph's object ``k`` (its ``Handle.index``). Validates the graph
        and the module registry first (ValueError naming the object or module); on success
        records new modules in the registry. ``num_threads``: None for every thread, else
        1 to ``recsketch._checks.MAX_NUM_THREADS`` (256), the same for every entry point.

        Memory: object sketches in flight and level scratch stay within 256 MiB
        (``kSketchWorkingBytes``) *except* that one graph's widest level keeps all of its
        object sketches (``d_sketch`` values each) until their parents are done, whatever the
        budget; add the leaf-embedding cache (``EMBEDDING_BUDGET_BYTES``, 256 MiB), the walk
        cache (``recsketch.set_walk_cache_limit``, 64 MiB by default, block_sparse), the
        outputs (with ``return_objects``: one row per object) and the flattened copy of the
        input (docs/sketch_schedule.md, Memory).

        ``tuple_sampling=k`` (an int >= 1; default None, the plain sketch): the paper's
        footnote 2, every tuple keeps ``k`` sampled draws of its terms, reweighted so that the
        sketch is an unbiased estimate of the plain one (:mod:`recsketch.tuple_sampling`:
        the scheme, and why: with ``k = 1`` a deep object's words are alone in some samples,
        where its identity word decodes; every per-sample query gets far noisier). The draws
        are a function of the Sketcher seed, ``sample_seed`` (in ``[0, 2**64)``) and the graph's
        content: the same graph gives the same sketch (vary ``sample_seed`` for independent
        samples of one input). Not with ``return_objects``. Memory in this mode is not the
        budget above: one float64 ``d_sketch`` vector per object of the sampled graph's
        frontier, plus a few scratch vectors (module docstring). Sampled sketches are for
        learning (``recsketch.learn_network``): a query on one is unbiased over the draws but very
        noisy, so do not mix them into a :class:`Repository` that answers queries.
        """
        if not isinstance(graph, Graph):
            raise TypeError(f"sketch takes a recsketch.Graph, got {type(graph).__name__}")
        overall, objects = self._sketch([graph], return_objects, num_threads,
                                        *_sampling_args(tuple_sampling, sample_seed,
                                                        return_objects))
        if not return_objects:
            return overall[0]
        return overall[0], objects

    def sketch_many(self, graphs: Sequence[Graph], *, num_threads: Optional[int] = None,
                    tuple_sampling: Optional[int] = None,
                    sample_seed: Union[int, Sequence[int]] = 0) -> np.ndarray:
        """Sketches of many graphs, shape ``(n, d_sketch)``, computed together: level by level,
        every product that shares a matrix across the batch is one batched product.

        Bit-identical to calling :meth:`sketch` on each graph, in any order and with any
        ``num_threads`` (at most 256). Every graph is validated before
        any is sketched or registered.

        Memory: object sketches in flight and level scratch stay within 256 MiB
        (``kSketchWorkingBytes``) *except* that (graphs are grouped to fit, but) each graph's widest level keeps all of its
        object sketches (``d_sketch`` values each) until their parents are done, whatever the
        budget; add the leaf-embedding cache (``EMBEDDING_BUDGET_BYTES``, 256 MiB), the walk
        cache (``recsketch.set_walk_cache_limit``, 64 MiB by default, block_sparse), the
        outputs (with ``return_objects``: one row per object) and the flattened copy of the
        input (docs/sketch_schedule.md, Memory).

        ``tuple_sampling``, ``sample_seed``: as in :meth:`sketch` (each graph's draws depend on
        its content, not on its place in the batch, so ``sketch_many([g] * 5, tuple_sampling=1)``
        gives five identical sketches); ``sample_seed`` may also be a sequence of one seed per
        graph (e.g. ``range(len(graphs))`` for independent samples of repeated inputs).
        """
        if isinstance(graphs, Graph) or not isinstance(graphs, Sequence):
            raise TypeError("sketch_many takes a sequence of recsketch.Graph")
        sampling = _sampling_args(tuple_sampling, sample_seed, False, len(graphs))
        if len(graphs) == 0:
            return np.zeros((0, self._d), dtype=self._dtype)
        return self._sketch(list(graphs), False, num_threads, *sampling)[0]

    def _sketch(self, graphs: List[Graph], return_objects: bool,
                num_threads: Optional[int], tuple_sampling: Optional[int] = None,
                sample_seed: Union[int, List[int]] = 0, *, halves_checked: bool = False
                ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        threads = check_num_threads(num_threads)
        flat = flatten(graphs, self._d)
        self._check_registry(flat.module_depth, flat.module_dim)
        if tuple_sampling is not None:
            seeds = sample_seed if isinstance(sample_seed, list) else [sample_seed] * len(graphs)
            # The output, filled one sampled sketch at a time (no n x d float64 stack).
            check_alloc(len(graphs) * self._d * self._dtype.itemsize,
                        f"sketch_many: {len(graphs)} sampled sketches of d={self._d} "
                        f"{self._dtype.name}")
            overall = np.empty((len(graphs), self._d), dtype=self._dtype)
            for row, (g, s) in enumerate(zip(graphs, seeds)):
                overall[row] = sampled_sketch(self, g, tuple_sampling, s, num_threads)
            self._record(flat)
            return overall, None
        flags, chosen = self._leaf_embeddings.plan(self, flat)
        if (len(graphs) > 1 and
                self._leaf_embeddings.bytes_needed(self, chosen) > self._leaf_embeddings.budget_bytes):
            # The batch's embeddings do not fit the budget together (each graph's do): sketch it
            # in halves. A graph's rows are chosen from the graph alone, so its bits do not change.
            half = len(graphs) // 2
            # Both halves and their concatenation are held at once at the end. Checked at the
            # top level only: a half and its own halves, freed before this concatenation, hold
            # less.
            if not halves_checked:
                check_alloc(2 * len(graphs) * self._d * self._dtype.itemsize,
                            f"sketch_many: {len(graphs)} sketches of d={self._d} "
                            f"{self._dtype.name} in two halves (the halves and the result)")
            first = self._sketch(graphs[:half], False, num_threads, halves_checked=True)[0]
            second = self._sketch(graphs[half:], False, num_threads, halves_checked=True)[0]
            return np.concatenate([first, second]), None
        modules = [tuple(self.module_matrix(name, k)._native for k in range(3))
                   for name in flat.modules]
        positions = [self.position_matrix(i)._native for i in range(1, flat.max_fan_in + 1)]
        if return_objects:
            # The object sketches in Handle.index order are a copy of the core's rows, held
            # with them and the overall sketches.
            check_alloc((len(graphs) + len(flat.module) + flat.object_rows.size)
                        * self._d * self._dtype.itemsize,
                        f"sketch: {len(graphs)} sketches and {flat.object_rows.size} object "
                        f"sketches of d={self._d} {self._dtype.name} (the core's rows and their "
                        f"reordered copy)")
        leaf_embed = (self._leaf_embeddings.arrays(self, flat, chosen, num_threads)
                      if chosen else [])
        overall, objects = _core.sketch_graphs(
            modules, positions, self._d, flat.graph_ptr, flat.module,
            flat.attr_ptr, flat.attr,
            flat.input_ptr, flat.input_row, flat.input_weight,
            self._dtype == np.float64, return_objects, threads, leaf_embed, flags)
        if objects is not None:  # one row per object, in Handle.index order (no output rows)
            objects = objects[flat.object_rows]
        self._record(flat)
        return overall, objects

    def _record(self, flat: Any) -> None:
        """Record a sketched batch's modules in the registry."""
        with self._lock:
            # another thread may have registered a module meanwhile: check again, then record
            self._check_registry(flat.module_depth, flat.module_dim)
            for name in flat.modules:
                self._modules.setdefault(name, ModuleInfo(flat.module_depth[name],
                                                          flat.module_dim[name]))

    # -- matrices ------------------------------------------------------------------------------
    def _matrix(self, role: Tuple[Any, ...], key: int) -> RandomMatrix:
        mat = self._matrices.get(role)
        if mat is None:
            with self._lock:
                mat = self._matrices.get(role)
                if mat is None:
                    if self._family == "orthogonal":
                        native = _core.OrthogonalMatrix(self._d, self._seed, key)
                    else:
                        native = _core.BlockSparseMatrix(self._native_family, self._seed, key)
                    mat = RandomMatrix(native, self._d, self._family, role)
                    self._matrices[role] = mat
        return mat

    def module_matrix(self, name: str, k: int) -> RandomMatrix:
        """``R[name, k]``: k = 0 wraps the module's object sketches, 1 carries attributes, 2
        carries ``e_1`` (for counting). The key hashes the UTF-8 name (stable across processes)."""
        if not isinstance(name, str):
            raise TypeError(f"module name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("module name must not be empty")
        k = check_int(k, "k", minimum=0, maximum=2)
        return self._matrix(("module", name, k), _core.module_key(name, k))

    def position_matrix(self, i: int) -> RandomMatrix:
        """``R[i]``, the matrix of tuple position ``i >= 1``, shared by every tuple sketch."""
        i = check_int(i, "i", minimum=1, maximum=MAX_POSITION)
        return self._matrix(("position", i), _core.position_key(i))

    # -- queries (answered by the Decoder, decoder.py) -----------------------------------------
    @property
    def decoder(self) -> Decoder:
        """The :class:`recsketch.Decoder` answering this Sketcher's queries (its cache budget:
        ``sk.decoder.cache_bytes``)."""
        return self._decoder

    def attributes(self, s: Any, module: str, path: Optional[Sequence[int]] = None,
                   weight: Optional[float] = None, method: str = "matched", *,
                   num_threads: Optional[int] = None, fan_in: Optional[int] = None
                   ) -> Union[np.ndarray, AttributeEstimate]:
        return self._decoder.attributes(s, module, path, weight, method,
                                        num_threads=num_threads, fan_in=fan_in)

    def mass(self, s: Any, module: str, method: str = "matched", *,
             num_threads: Optional[int] = None, fan_in: Optional[int] = None
             ) -> Union[float, np.ndarray]:
        return self._decoder.mass(s, module, method, num_threads=num_threads, fan_in=fan_in)

    def count(self, s: Any, module: str, weight: float, method: str = "matched", *,
              num_threads: Optional[int] = None, fan_in: Optional[int] = None
              ) -> Union[float, np.ndarray]:
        return self._decoder.count(s, module, weight, method, num_threads=num_threads,
                                   fan_in=fan_in)

    def summed_attributes(self, s: Any, module: str, weight: float, method: str = "matched",
                          *, num_threads: Optional[int] = None, fan_in: Optional[int] = None
                          ) -> np.ndarray:
        return self._decoder.summed_attributes(s, module, weight, method,
                                               num_threads=num_threads, fan_in=fan_in)

    def mean_attributes(self, s: Any, module: str, weight: Optional[float] = None,
                        method: str = "matched", *, num_threads: Optional[int] = None,
                        fan_in: Optional[int] = None) -> np.ndarray:
        return self._decoder.mean_attributes(s, module, weight, method,
                                             num_threads=num_threads, fan_in=fan_in)

    def subsketch(self, s: Any, path: Sequence[int], module: Optional[str] = None,
                  method: str = "matched", *, weight: Optional[float] = None,
                  num_threads: Optional[int] = None) -> SubSketch:
        return self._decoder.subsketch(s, path, module, method, weight=weight,
                                       num_threads=num_threads)

    # The Decoder's docstrings are the queries' documentation.
    attributes.__doc__ = Decoder.attributes.__doc__
    mass.__doc__ = Decoder.mass.__doc__
    count.__doc__ = Decoder.count.__doc__
    summed_attributes.__doc__ = Decoder.summed_attributes.__doc__
    mean_attributes.__doc__ = Decoder.mean_attributes.__doc__
    subsketch.__doc__ = Decoder.subsketch.__doc__

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The configuration as plain JSON-compatible values. ``decoder.joint_max_unknowns``
        is part of it, always (it decides what ``method="joint"`` answers, so a stored value
        never follows a later change of the default), so a Repository and a pickled Sketcher
        (Dask) answer as this one does."""
        config = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "d_sketch": self._d,
            "family": self._family,
            "block_size": self._block_size,
            "density": self._density,
            "seed": self._seed,
            "dtype": self._dtype.name,
            "modules": {name: {"depth": info.depth, "attribute_dim": info.attribute_dim}
                        for name, info in sorted(self._modules.items())},
            "joint_max_unknowns": self._decoder.joint_max_unknowns,
        }
        return config

    def to_json(self) -> str:
        """The configuration as JSON; ``Sketcher.from_json`` rebuilds an identical Sketcher."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, config: Dict[str, Any]) -> "Sketcher":
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if config.get("format") != _FORMAT:
            raise ValueError(f"not a Sketcher configuration (format={config.get('format')!r})")
        version = config.get("format_version")
        if version not in (1, _FORMAT_VERSION):  # version 1 had no module registry
            raise ValueError(f"unsupported Sketcher format_version {version!r}")
        unknown = sorted(map(str, config.keys() - _CONFIG_KEYS))
        if unknown:
            # a key this version does not know may change the answers: never ignored
            raise ValueError(f"Sketcher configuration has unknown keys {unknown}")
        missing = {"d_sketch", "family", "block_size", "density", "seed", "dtype"} - config.keys()
        if missing:
            raise ValueError(f"Sketcher configuration lacks {sorted(missing)}")
        sk = cls(config["d_sketch"], family=config["family"], block_size=config["block_size"],
                 density=config["density"], seed=config["seed"], dtype=config["dtype"])
        modules = config.get("modules", {})
        if not isinstance(modules, dict):
            raise ValueError("Sketcher configuration: 'modules' must be an object")
        for name, info in modules.items():
            if not isinstance(info, dict) or {"depth", "attribute_dim"} - info.keys():
                raise ValueError(f"Sketcher configuration: module {name!r} needs depth and "
                                 "attribute_dim")
            sk.register_module(name, info["depth"], info["attribute_dim"])
        if "joint_max_unknowns" in config:   # configurations written before it was stored lack it
            try:
                sk.decoder.joint_max_unknowns = config["joint_max_unknowns"]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"Sketcher configuration: {exc}") from None
        return sk

    def __reduce__(self) -> Tuple[Any, Tuple[str, int]]:
        """Pickle as the JSON configuration only (registry included) and the query-cache
        budget: every matrix is a pure function of the JSON, so a pickled Sketcher is a few
        hundred bytes whatever it has cached."""
        return (_unpickle_sketcher, (self.to_json(), self._decoder.cache_bytes))

    @classmethod
    def from_json(cls, text: str) -> "Sketcher":
        """Inverse of :meth:`to_json`. Raises ValueError on malformed or foreign JSON."""
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid Sketcher JSON: {exc}") from exc
        return cls.from_dict(config)


def _sampling_args(tuple_sampling: Any, sample_seed: Any, return_objects: bool,
                   n_graphs: Optional[int] = None) -> Tuple[Optional[int], Union[int, List[int]]]:
    """Validated ``(tuple_sampling, sample_seed)`` of a sketching call; with ``n_graphs``
    (sketch_many) ``sample_seed`` may be a sequence of that many seeds (returned as a list)."""
    if (n_graphs is not None and not isinstance(sample_seed, (str, bytes))
            and isinstance(sample_seed, (Sequence, np.ndarray))):
        if len(sample_seed) != n_graphs:
            raise ValueError(f"sample_seed has {len(sample_seed)} seeds for {n_graphs} graphs")
        seed: Union[int, List[int]] = [check_int(s, f"sample_seed[{i}]", minimum=0,
                                                 maximum=2**64 - 1)
                                       for i, s in enumerate(sample_seed)]
    else:
        seed = check_int(sample_seed, "sample_seed", minimum=0, maximum=2**64 - 1)
    if tuple_sampling is None:
        return None, 0
    k = check_int(tuple_sampling, "tuple_sampling", minimum=1, maximum=MAX_TUPLE_SAMPLING)
    if return_objects:
        raise ValueError("return_objects is not available with tuple_sampling (the object "
                         "sketches of a sampled sketch are drawn only where a kept term "
                         "reaches them)")
    return k, seed


def _unpickle_sketcher(text: str, query_cache_bytes: int) -> Sketcher:
    sk = Sketcher.from_json(text)
    sk.decoder.cache_bytes = query_cache_bytes
    return sk
