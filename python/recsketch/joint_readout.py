"""The joint read-out's state for one Sketcher: plans, cached Gram factors and probes.

``joint.py`` holds the model (blocks, design, factor, solves); this file decides, per query,
what is fitted (:meth:`JointReadout.plan`) and keeps what the fit reuses in the Decoder's
byte-bounded cache: the Gram factor, the probes of the queries (one per module and path,
both channels), and the design where there is room for it; what the cache cannot keep is
rebuilt, the same bits, when needed again. The Decoder hands its queries with ``method="joint"`` here.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ._cache import ByteLRU
from ._checks import check_int
from .joint import (JOINT_FAN_IN, JOINT_MAX_BUILD_BYTES, JOINT_MAX_UNKNOWNS, Block, Extension,
                    build_too_large, cache_bytes_fast, cache_bytes_needed, cache_too_small,
                    check_fan_in, design_bytes, design_rows, extend,
                    extra_blocks, gram_factor, over_budget, plan_blocks, read_out,
                    unknowns_budget)

if TYPE_CHECKING:  # pragma: no cover
    from .sketcher import Sketcher

__all__ = ["JointPlan", "JointReadout"]


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the caller of this function point at
    the first frame outside the recsketch package (the user's call), however deep inside the
    package it was raised."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back
        level += 1
    return level


class JointPlan(NamedTuple):
    """One joint query's plan (:meth:`JointReadout.plan`), made once and passed down."""

    blocks: Tuple[Block, ...]
    budget: int
    max_unknowns: int
    key: Tuple[Any, ...]                   # the design's cache key (budget included)
    kept_key: Optional[Tuple[Any, ...]]    # an erased sketch's kept coordinates
    registry: Dict[str, Any]               # the registry snapshot it plans
    fan_in: int
    need: int                              # cache bytes it must hold (cache_bytes_needed)
    fast: int                              # cache bytes that keep everything (cache_bytes_fast)
    probe_modules: Tuple[str, ...]         # the planned modules


class JointReadout:
    """``method="joint"`` for one Sketcher, caching in the Decoder's ``cache``.

    Inputs are overall sketches as ``values`` ``(n, d_kept)`` and, for an erased sketch, the
    ``indices`` of the kept coordinates (None: all ``d_sketch``). Thread-safe as the Decoder
    is: the cache changes only under its lock, everything else is local or immutable.
    """

    def __init__(self, sketcher: "Sketcher", cache: ByteLRU):
        self._sk = sketcher
        self._d = sketcher.d_sketch
        self._cache = cache
        self._max_unknowns = JOINT_MAX_UNKNOWNS
        self._max_build_bytes = JOINT_MAX_BUILD_BYTES

    @property
    def max_unknowns(self) -> int:
        """``Decoder.joint_max_unknowns``."""
        return self._max_unknowns

    @max_unknowns.setter
    def max_unknowns(self, value: int) -> None:
        self._max_unknowns = check_int(value, "joint_max_unknowns", minimum=1)

    @property
    def max_build_bytes(self) -> int:
        """``Decoder.joint_max_build_bytes``."""
        return self._max_build_bytes

    @max_build_bytes.setter
    def max_build_bytes(self, value: int) -> None:
        self._max_build_bytes = check_int(value, "joint_max_build_bytes", minimum=0)

    def describe(self, fan_in: Optional[int] = None, d_kept: Optional[int] = None
                 ) -> Dict[str, Any]:
        """``Decoder.joint_plan``."""
        f = check_fan_in(JOINT_FAN_IN if fan_in is None else fan_in)
        kept = self._d if d_kept is None else check_int(d_kept, "d_kept", minimum=1,
                                                          maximum=self._d)
        budget = unknowns_budget(kept, self._max_unknowns)
        modules = self._sk.modules
        blocks = plan_blocks(modules, f, budget)
        n = sum(b.size for b in blocks)
        sizes = [i.attribute_dim + 1 for m, i in modules.items()
                 if any(b.module == m for b in blocks)]
        return {"unknowns": n,
                "budget": budget,
                "path_depths": sorted({b.depth for b in blocks if b.path is not None}),
                "path_free_depths": sorted({b.depth for b in blocks if b.path is None}),
                "design_bytes": design_bytes(blocks, self._d,
                                             None if d_kept is None else kept),
                "cache_bytes_needed": cache_bytes_needed(n, self._d, max(sizes, default=0)),
                "cache_bytes_fast": cache_bytes_fast(n, self._d, sum(sizes))}

    def residual(self, values: np.ndarray, indices: Optional[np.ndarray], fan_in: int,
                 threads: Optional[int]) -> np.ndarray:
        """``Decoder.joint_residual`` of finite float64 ``values`` ``(n, d_kept)``: (n,)."""
        plan = self.plan(values, indices, fan_in)
        rows = self._rows(plan, indices, threads)
        factor = self._factor(plan, indices, threads, rows)
        import scipy.linalg as sla

        half = sla.solve_triangular(factor, rows() @ values.T, lower=True)   # L^-1 A s
        total = np.einsum("ij,ij->i", values, values)
        left = np.maximum(total - np.einsum("ij,ij->j", half, half), 0.0)
        return np.sqrt(np.divide(left, total, out=np.zeros_like(total), where=total > 0))

    def plan(self, values: np.ndarray, indices: Optional[np.ndarray], fan_in: int
             ) -> JointPlan:
        """The plan of one query, made once: its blocks, budget and cache keys, from a snapshot
        of the registry, ``fan_in``, the coordinates read and :attr:`max_unknowns` only.
        Refuses a plan over the budget, one whose factor and probe the cache cannot keep, and
        one whose build exceeds :attr:`max_build_bytes` (neither limit ever changes the plan),
        before anything is built."""
        registry = self._sk.modules
        kept = values.shape[1]
        max_unknowns = self._max_unknowns
        budget = unknowns_budget(kept, max_unknowns)
        blocks = plan_blocks(registry, fan_in, budget)
        n = sum(b.size for b in blocks)
        if n > budget:
            raise over_budget(n, len(registry), kept, max_unknowns)
        probe_modules = tuple(sorted({b.module for b in blocks}))
        sizes = [registry[m].attribute_dim + 1 for m in probe_modules]
        need = cache_bytes_needed(n, self._d, max(sizes, default=0))
        limit = self._cache.limit
        if need > limit:
            raise cache_too_small(n, self._d, need, limit)
        build = design_bytes(blocks, self._d, None if indices is None else kept)
        if build > self._max_build_bytes:
            raise build_too_large(build, self._max_build_bytes)
        reg_key = tuple(sorted((m, i.depth, i.attribute_dim) for m, i in registry.items()))
        kept_key = None
        if indices is not None:
            idx = np.ascontiguousarray(indices, dtype=np.int64)
            kept_key = ("kept", int(idx.size),
                        hashlib.blake2b(idx.tobytes(), digest_size=16).hexdigest())
        return JointPlan(blocks, budget, max_unknowns, ("joint", fan_in, budget, reg_key),
                         kept_key, registry, fan_in, need,
                         cache_bytes_fast(n, self._d, sum(sizes)), probe_modules)

    def estimate(self, values: np.ndarray, indices: Optional[np.ndarray], module: str,
                 path: Optional[Tuple[int, ...]], channel: int, k: int, plan: JointPlan,
                 threads: Optional[int]) -> np.ndarray:
        """The joint fit's summed unknowns of ``module`` (on ``path`` if given): (n, k)."""
        # checked before the (costly) design is built, not after
        if not np.all(np.isfinite(values)):
            raise ValueError("sketch contains NaN or infinity")
        z = self._probe(values.shape[1], indices, module, path, channel, k, plan, threads)
        # float64 whatever the sketch's dtype: where the model is exact the read-out is exact to
        # the sketch's own rounding, which a float32 product would not keep (large, cancelling z)
        return values.astype(np.float64, copy=False) @ z.T

    def _probe(self, kept: int, indices: Optional[np.ndarray], module: str,
               path: Optional[Tuple[int, ...]], channel: int, k: int, plan: JointPlan,
               threads: Optional[int]) -> np.ndarray:
        """The joint read-out of ``module`` (on ``path`` if given) as a ``(k, d_kept)`` probe
        matrix: the rows of ``S G^-1 A`` that sum the module's fitted unknowns (``joint.py``).
        Cached like the matched probes; for an erased sketch, per set of kept coordinates."""
        blocks, budget, key, kept_key, registry = (plan.blocks, plan.budget, plan.key,
                                                   plan.kept_key, plan.registry)
        depth = registry[module].depth
        if not any(b.module == module for b in blocks):
            # plan_blocks gives every module a block but those no path reaches
            empty = [lv for lv in range(2, depth) if all(i.depth != lv for i in registry.values())]
            raise ValueError(
                f"method='joint' has nothing to fit for module {module!r} at depth {depth}: no "
                f"module is registered at depth {', '.join(map(str, empty))}, so no path reaches "
                "it (no sketch of this registry can hold its objects)")
        more: Tuple[Block, ...] = ()
        if path is not None and not any(b.module == module and b.path == path for b in blocks):
            # a path-free module, or a position above fan_in: the path's own blocks
            more = extra_blocks(registry, module, path, sum(b.size for b in blocks))
        every = blocks + more
        n_all = sum(b.size for b in every)
        if n_all > budget:
            raise over_budget(n_all, len(registry), kept, plan.max_unknowns,
                              f"the path {list(path or ())} of {module!r} ({len(more)} "
                              f"blocks, {n_all - sum(b.size for b in blocks)} unknowns)")
        if more:
            # the extension's rows and partial products come on top of the plan's design
            build = design_bytes(every, self._d, None if indices is None else kept)
            if build > self._max_build_bytes:
                raise build_too_large(build, self._max_build_bytes)
        if path is None and all(b.path is None for b in blocks if b.module == module):
            # its objects are read on the path-free words only, beside every other module's
            # words: not exact (docs/joint.md); cheap, so said on every such query
            warnings.warn(
                f"method='joint' fits module {module!r} (depth {depth}) path-free: the plan "
                f"enumerates no paths at its depth (budget {budget} unknowns, "
                f"fan_in={plan.fan_in}), so its read-out is not exact and can be worse than "
                "method='matched'; see sk.decoder.joint_plan() and joint_residual()",
                RuntimeWarning, stacklevel=_user_stacklevel())

        def build() -> np.ndarray:
            rows = self._rows(plan, indices, threads)
            factor = self._factor(plan, indices, threads, rows)
            ext = None
            if more:
                erows = self._cache.get(key + ("extra rows", module, path),
                                        lambda: design_rows(self._sk, more, threads))
                if kept_key is not None:
                    erows = erows[:, indices]
                both = self._cache.get(key + ("extension", module, path, kept_key),
                                       lambda: extend(rows(), factor, erows))
                ext = Extension(erows, both[:, :factor.shape[0]], both[:, factor.shape[0]:])
            z = _select_probe(rows(), factor, every, registry[module].attribute_dim, module,
                              path, ext)
            if path is None:
                # the design is at hand: make the other modules' probes now (each exactly as
                # its own query would), as many as the cache has room for beside the factor
                # and this probe, so that they do not each rebuild the design
                room = self._cache.limit - factor.nbytes - z.nbytes
                if plan.fast <= self._cache.limit:
                    room -= 8 * n_all * self._d       # the design is kept too
                for other in plan.probe_modules:
                    size = 8 * (registry[other].attribute_dim + 1) * kept
                    if other == module or size > room:
                        continue
                    room -= size
                    self._cache.get(key + ("z", other, None, kept_key),
                                    lambda o=other: _select_probe(
                                        rows(), factor, blocks, registry[o].attribute_dim,
                                        o, None, None))
            return z

        # both channels of the module's (path's) unknowns in one probe: attributes, then count
        z = self._cache.get(key + ("z", module, path, kept_key), build)
        return z[:k] if channel == 1 else z[registry[module].attribute_dim:][:1]

    def _rows(self, plan: JointPlan, indices: Optional[np.ndarray], threads: Optional[int]
              ) -> Callable[[], np.ndarray]:
        """A function returning the plan's design rows (restricted to an erased sketch's
        coordinates), built at most once per call: kept in the cache when it has room for
        everything of the plan (:func:`recsketch.joint.cache_bytes_fast`), else rebuilt for each
        use (the same bits: the cache decides speed, never answers)."""
        blocks, key = plan.blocks, plan.key
        held: List[np.ndarray] = []

        def build() -> np.ndarray:
            if blocks and all(b.path is None for b in blocks):
                # measured (docs/joint.md): with every module path-free the fit loses its
                # exactness and can be worse than the matched filter (case (ii); masses as
                # unused registered modules accumulate)
                kept = self._d if indices is None else len(indices)
                warnings.warn(
                    f"method='joint' enumerates no level's paths here ({len(plan.registry)} "
                    f"registered modules, fan_in={plan.fan_in}, {kept} "
                    "coordinates read), so it fits every module path-free: not exact, and it "
                    "can be worse than method='matched' (docs/joint.md); lower fan_in, use a "
                    "larger d_sketch, raise sk.decoder.joint_max_unknowns or register fewer "
                    "modules (see sk.decoder.joint_plan())",
                    RuntimeWarning, stacklevel=_user_stacklevel())
            return design_rows(self._sk, blocks, threads)

        def rows() -> np.ndarray:
            if not held:
                if plan.fast <= self._cache.limit:
                    full = self._cache.get(key + ("rows",), build)
                else:
                    full = build()
                held.append(full if plan.kept_key is None else full[:, indices])
            return held[0]

        return rows

    def _factor(self, plan: JointPlan, indices: Optional[np.ndarray], threads: Optional[int],
                rows: Optional[Callable[[], np.ndarray]] = None) -> np.ndarray:
        """The Cholesky factor of the plan's Gram matrix (per set of kept coordinates);
        ``rows``: the design's getter of this call (:meth:`_rows`), so that a design not kept
        in the cache is built once for the factor and what follows."""
        if rows is None:
            rows = self._rows(plan, indices, threads)
        getter = rows
        return self._cache.get(plan.key + ("factor", plan.kept_key),
                               lambda: gram_factor(getter()))


def _select_probe(rows: np.ndarray, factor: np.ndarray, blocks: Tuple[Block, ...], dim: int,
                  module: str, path: Optional[Tuple[int, ...]], ext: Optional[Extension]
                  ) -> np.ndarray:
    """The probe ``(dim + 1, d_kept)`` that sums the fitted unknowns of ``module``'s blocks on
    ``path`` (None: every block of the module): its ``dim`` attribute rows, then its count
    row (:func:`recsketch.joint.read_out`)."""
    select = np.zeros((dim + 1, sum(b.size for b in blocks)))
    for b in blocks:
        if b.module == module and (path is None or b.path == path):
            select[np.arange(dim + 1), b.start + np.arange(dim + 1)] = 1.0
    return read_out(rows, factor, select, ext)
