"""The Decoder: every query of the paper (Theorems 1-3, Section 3) as a linear read-out of a
sketch, and the cache of what the read-outs need.

Each query peels known matrices off the sketch (a *probe*, see ``_probes.py``) and divides by
the probe's gain. Two estimators exist side by side: ``"paper"``, the literal read-outs of
MATH.md §3, and ``"matched"`` (default), which also sums the copies of the signal carried by the
object's module wrapper and attribute slot, divides by the exact gain and, for block-sparse
matrices, by the exact squared norm of each column it reads (DESIGN.md §4).

A probe that ends in a module matrix is applied as one dense ``(k, d)`` matrix (cached), so a
query on many stored sketches is a single matrix product; longer outputs and sub-sketches go
through the native transposes.

``"joint"`` fits the whole sketch instead: a least-squares solve over the words of every
registered module on every path up to a fan-in bound (the model in ``joint.py``; its plans,
Gram factors and probes in ``joint_readout.py``, cached in this Decoder's cache like the probe
matrices).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ._cache import ByteLRU
from ._checks import (FLOAT_DTYPES, MAX_POSITION, as_sketches, check_int, check_num_threads,
                      check_real)
from .alloc import check_alloc
from ._probes import POSITION, Letter, Probe, WeightedWord, Word, build_probe
from .erasure import ErasedSketch
from .joint import JOINT_FAN_IN, check_fan_in, check_method
from .joint_readout import JointPlan, JointReadout
from .queries import AttributeEstimate, SubSketch

if TYPE_CHECKING:  # pragma: no cover
    from .matrices import RandomMatrix
    from .sketcher import Sketcher

__all__ = ["Decoder", "QUERY_CACHE_BYTES"]

# Default budget of a Decoder's cache (probes, probe matrices, column norms).
QUERY_CACHE_BYTES = 256 << 20
_PROBE_MATRIX_MAX_K = 256   # longer outputs use the transposes instead of a cached (k, d) matrix


def _threads(num_threads: Optional[int]) -> Optional[int]:
    """Validate ``num_threads`` and hand it on unchanged (None = every thread)."""
    check_num_threads(num_threads)
    return num_threads


class _Input(NamedTuple):
    values: np.ndarray            # (n, d) or (n, d_kept)
    indices: Optional[np.ndarray]  # kept coordinates of an erased sketch
    scale: float                  # d / d_kept
    root_depth: int               # 1: overall sketch; h >= 2: tuple sketch of an object
    root_module: Optional[str]
    root_path: Tuple[int, ...]
    was_1d: bool


class Decoder:
    """Answers every query of :class:`recsketch.Sketcher` from sketches: it builds the probes,
    the dense probe matrices and the exact column norms from the Sketcher's matrices and keeps
    them in one cache bounded by bytes (least recently used evicted first).

    Every Sketcher owns one (``sk.decoder``); the Sketcher's query methods delegate to it.
    Thread-safe: queries may run concurrently from many threads on one Sketcher (the cache
    changes only under its lock; everything else a query touches is local or immutable) and
    give the results a single thread gives.

    Parameters
    ----------
    sketcher : Sketcher
        Supplies the matrices, the module registry and the family parameters.
    cache_bytes : int
        Budget of the cache (default :data:`QUERY_CACHE_BYTES`, 256 MiB). A module's entries
        take about ``8 * d_sketch * (attribute_dim + 1)`` bytes per (method, path), plus
        ``16 * d_sketch`` for its column norms; change the budget with :attr:`cache_bytes`.
        ``method="joint"`` keeps its Gram factor (``8 n^2`` bytes for ``n`` unknowns) and its
        probes here, and its design (``8 n d_sketch``) too where there is room for everything
        (else the design is rebuilt, the same bits, when a probe not yet made needs it), or
        refuses the query below the factor and one probe (the cache never changes which
        levels are enumerated: :attr:`joint_max_unknowns` and the coordinates read do;
        ``joint_plan`` shows ``cache_bytes_needed`` and ``cache_bytes_fast``).
    """

    def __init__(self, sketcher: "Sketcher", cache_bytes: int = QUERY_CACHE_BYTES):
        from .sketcher import Sketcher  # the Sketcher module imports this one
        if not isinstance(sketcher, Sketcher):
            raise TypeError(f"sketcher must be a recsketch.Sketcher, got {type(sketcher).__name__}")
        self._sk = sketcher
        self._d = sketcher.d_sketch
        self._cache = ByteLRU(cache_bytes)
        self._joint = JointReadout(sketcher, self._cache)

    @property
    def joint_max_unknowns(self) -> int:
        """Most unknowns ``method="joint"`` may fit (default
        :data:`recsketch.joint.JOINT_MAX_UNKNOWNS`, 4096; also at most half the coordinates
        read). With the registry and ``fan_in`` it decides the plan, so the answers; the query
        cache must then hold the plan's factor and one probe
        (``joint_plan()["cache_bytes_needed"]``). Part of the Sketcher's configuration when not
        the default (``Sketcher.to_json``, pickling): a Repository created with this Sketcher,
        and reopened, answers with it (it keeps the value its Sketcher had at ``create``;
        setting it later on ``repo.sketcher.decoder`` changes that session only, it is not
        saved)."""
        return self._joint.max_unknowns

    @joint_max_unknowns.setter
    def joint_max_unknowns(self, value: int) -> None:
        self._joint.max_unknowns = value

    @property
    def joint_max_build_bytes(self) -> int:
        """Most working memory (bytes) one ``method="joint"`` build of a design and its Gram
        factor may take (default :data:`recsketch.joint.JOINT_MAX_BUILD_BYTES`, 4 GiB;
        settable, a nonnegative int). The design is not kept by the query cache, so this is
        what bounds a query's allocation: a plan whose ``joint_plan()["design_bytes"]`` exceeds
        it is refused with a ValueError before anything is allocated. It never changes the
        plan or the answers of the plans that fit; not part of the configuration (like
        :attr:`cache_bytes`, it is the machine's, not the answers')."""
        return self._joint.max_build_bytes

    @joint_max_build_bytes.setter
    def joint_max_build_bytes(self, value: int) -> None:
        self._joint.max_build_bytes = value

    @property
    def cache_bytes(self) -> int:
        """The cache's budget in bytes (settable; shrinking it evicts at once)."""
        return self._cache.limit

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        self._cache.limit = value

    def cache_info(self) -> Dict[str, int]:
        """``bytes`` held, ``limit``, ``entries``, ``hits`` and ``misses`` of the cache."""
        return self._cache.info()

    def clear_cache(self) -> None:
        """Drop every cached entry (and reset the counters); results do not change."""
        self._cache.clear()

    def joint_plan(self, fan_in: Optional[int] = None, d_kept: Optional[int] = None
                   ) -> Dict[str, Any]:
        """What ``method="joint"`` fits for the current registry: ``unknowns``, the depths whose
        paths are enumerated (``path_depths``) and those fitted path-free (``path_free_depths``),
        ``budget`` (the most unknowns it may fit: half of the coordinates read, at most
        :attr:`joint_max_unknowns`), ``design_bytes`` (the peak working memory of a build: the
        design, ``8 * unknowns * d_sketch``, with its shared partial products, or with the Gram
        matrix and factor, :func:`recsketch.joint.design_bytes`; queries refuse a plan above
        :attr:`joint_max_build_bytes`),
        ``cache_bytes_needed`` (the factor, ``8 * unknowns^2``, and one query's probe,
        ``8 * d_sketch * (attribute_dim + 1)`` of the largest planned module: a smaller
        :attr:`cache_bytes` refuses the queries) and ``cache_bytes_fast`` (the design, the factor
        and every planned module's probe: nothing is rebuilt). Between the two the cache
        decides speed only, never the plan or the answers. Queries
        refuse a plan with ``unknowns > budget``. ``d_kept``: the coordinates an erased sketch
        keeps (default all)."""
        return self._joint.describe(fan_in, d_kept)

    def joint_residual(self, s: Any, fan_in: Optional[int] = None, *,
                       num_threads: Optional[int] = None) -> Union[float, np.ndarray]:
        """Fraction of a sketch's norm that the joint fit leaves unexplained,
        ``||s - A^T theta|| / ||s||`` (per sketch of a batch; 0 for a zero sketch).

        About 1e-7 (float32 rounding) when every object's path is enumerated; clearly larger
        when something is outside the design: a level fitted path-free, or an object at an
        input position above ``fan_in``, which biases the read-out of what is left out
        (docs/joint.md). Check it before trusting ``method="joint"`` on new graphs."""
        f = check_fan_in(JOINT_FAN_IN if fan_in is None else fan_in)
        threads = _threads(num_threads)
        inp = self._input(s)
        if inp.root_depth != 1:
            raise ValueError("joint_residual takes overall sketches (arrays or ErasedSketch)")
        values = inp.values.astype(np.float64, copy=False)
        if not np.all(np.isfinite(values)):
            raise ValueError("sketch contains NaN or infinity")
        out = self._joint.residual(values, inp.indices, f, threads)
        return float(out[0]) if inp.was_1d else out

    # -- input handling ------------------------------------------------------------------------
    def _input(self, s: Any) -> _Input:
        if isinstance(s, SubSketch):
            arr, depth, module, path = s.values, s.depth, s.module, s.path
        else:
            arr, depth, module, path = s, 1, None, ()
        if isinstance(arr, ErasedSketch):
            if arr.d_sketch != self._d:
                raise ValueError(f"the erased sketch has d_sketch={arr.d_sketch}, this "
                                 f"Sketcher has {self._d}")
            vals = arr.values
            was_1d = vals.ndim == 1
            return _Input(vals.reshape(1, -1) if was_1d else vals, arr.indices,
                          arr.d_sketch / arr.d_kept, depth, module, path, was_1d)
        a = as_sketches(arr, "sketch", self._d)
        # Finiteness is checked on the (small) results instead: NaN and infinity propagate
        # through every read-out, and a second pass over a large batch would double its cost.
        was_1d = a.ndim == 1
        return _Input(np.ascontiguousarray(a.reshape(1, -1) if was_1d else a), None, 1.0,
                      depth, module, path, was_1d)

    @staticmethod
    def _method(method: str, fan_in: Optional[int] = None) -> str:
        return check_method(method, fan_in)

    def _target(self, inp: _Input, module: str, path: Optional[Sequence[int]]
                ) -> Tuple[int, Optional[Tuple[int, ...]]]:
        """Depth of ``module`` and the validated path (relative to the sketch's root)."""
        h = self._sk.module_info(module).depth
        if h < inp.root_depth or (h == inp.root_depth and module != inp.root_module):
            raise ValueError(f"module {module!r} sits at depth {h}, which is not below this "
                             f"sub-sketch of module {inp.root_module!r} at depth {inp.root_depth}")
        if path is None:
            return h, None
        if isinstance(path, (str, bytes)) or not isinstance(path, Sequence):
            raise TypeError("path must be a sequence of input positions (ints >= 1)")
        steps = tuple(check_int(p, f"path entry {k}", minimum=1, maximum=MAX_POSITION)
                      for k, p in enumerate(path))
        need = h - max(inp.root_depth, 1)
        if len(steps) != need:
            where = "the output" if inp.root_depth == 1 else "this sub-sketch's object"
            raise ValueError(f"module {module!r} sits at depth {h}, so its path from {where} "
                             f"needs {need} positions, got {len(steps)}")
        return h, steps

    # -- matrices of a probe -------------------------------------------------------------------
    def _letter_matrix(self, letter: Letter) -> "RandomMatrix":
        if letter.kind == POSITION:
            return self._sk.position_matrix(letter.key)
        return self._sk.module_matrix(letter.key, 0)

    def _column_norms2(self, module: str, channel: int, k: int) -> np.ndarray:
        """Exact squared norms of the first k columns of R[module, channel]."""
        sk = self._sk

        def build() -> np.ndarray:
            if sk.family != "block_sparse":
                return np.ones(self._d)
            counts = sk.module_matrix(module, channel).column_block_counts()
            return counts * (sk.block_size / (self._d * sk.density))

        norms = self._cache.get(("norms", module, channel), build)
        empty = np.flatnonzero(norms[:k] == 0)
        if empty.size:
            # A column without a nonzero block (probability (1 - q)^(d / b)) records nothing:
            # what it would carry is in no sketch, and no read-out can recover it.
            raise ValueError(
                f"column {int(empty[0])} of R[{module!r}, {channel}] has no nonzero block "
                f"(block_size={sk.block_size}, density={sk.density}), so the "
                f"{'attribute' if channel == 1 else 'count'} it would carry is recorded in no "
                "sketch; use a larger density (or d_sketch) for this module")
        return norms[:k]

    def _peel(self, words: Sequence[WeightedWord], x: np.ndarray, threads: Optional[int]
              ) -> np.ndarray:
        """sum_u a_u u^T x, sharing the transposes of common prefixes."""
        memo: Dict[Word, np.ndarray] = {(): x}

        def get(u: Word) -> np.ndarray:
            if u not in memo:
                memo[u] = self._letter_matrix(u[-1]).rmatvec(get(u[:-1]), num_threads=threads)
            return memo[u]

        out = np.zeros(x.shape, dtype=np.float64)
        try:
            for u, a in words:
                out += a * get(u)
        finally:
            memo.clear()   # ``get`` closes over itself: break the cycle holding the products
        return out

    def _probe_matrix(self, probe: Probe, module: str, channel: int, k: int, normalise: bool,
                      threads: Optional[int]) -> np.ndarray:
        """The (k, d) matrix Z with estimate = Z s: rows are (sum_u a_u u) R[M,ch] e_j / gain."""
        # the identity, its columns' products and Z, held at once (k attributes, up to d)
        check_alloc(8 * k * k + 3 * 8 * k * self._d,
                    f"the read-out of module {module!r} ({k} attributes, d_sketch={self._d})")
        cols = self._sk.module_matrix(module, channel).apply_short(np.eye(k), num_threads=threads)
        memo: Dict[Word, np.ndarray] = {(): cols}

        def get(u: Word) -> np.ndarray:  # u applied to the columns, innermost letter first
            if u not in memo:
                memo[u] = self._letter_matrix(u[0]).matvec(get(u[1:]), num_threads=threads)
            return memo[u]

        z = np.zeros((k, self._d))
        try:
            for u, a in probe.words:
                z += a * get(u)
        finally:
            memo.clear()   # ``get`` closes over itself: break the cycle holding the products
        z /= probe.gain
        if normalise:
            z /= self._column_norms2(module, channel, k)[:, None]
        return z

    def _estimate(self, inp: _Input, module: str, depth: int, path: Optional[Tuple[int, ...]],
                  channel: int, k: int, method: str, threads: Optional[int],
                  fan_in: Optional[int] = None, plan: Optional[JointPlan] = None
                  ) -> np.ndarray:
        """Read-out of R[module, channel]^T ... s, first k coordinates, at unit weight: (n, k).
        ``plan``: a joint read-out's plan (:meth:`JointReadout.plan`; default: made for this
        call), so that the two channels of one query fit the same registry snapshot and plan."""
        if method == "joint":
            if plan is None:
                plan = self._joint_plan_of(inp, method, fan_in)
            return self._joint.estimate(inp.values, inp.indices, module, path, channel, k, plan,
                                        threads)
        key = (module, channel, inp.root_depth, path, method)
        probe = self._cache.get(("probe",) + key, lambda: build_probe(
            inp.root_depth, depth, module, path, method, "channel"))
        normalise = method == "matched"
        if k <= _PROBE_MATRIX_MAX_K:
            z = self._cache.get(("z", k) + key, lambda: self._probe_matrix(
                probe, module, channel, k, normalise, threads))
            if inp.indices is not None:
                z = z[:, inp.indices]
            est = (inp.values @ z.T.astype(inp.values.dtype)).astype(np.float64) * inp.scale
            if not np.all(np.isfinite(est)):
                raise ValueError("sketch contains NaN or infinity")
            return est
        full = self._dense(inp)
        v = self._peel(probe.words, full, threads)
        est = self._sk.module_matrix(module, channel).rmatvec(v, num_threads=threads)[:, :k]
        est = est / probe.gain
        if normalise:
            est = est / self._column_norms2(module, channel, k)
        return est

    def _joint_plan_of(self, inp: _Input, method: str, fan_in: Optional[int]
                       ) -> Optional[JointPlan]:
        """One query's joint plan for the current registry (None for the other methods)."""
        if method != "joint":
            return None
        if inp.root_depth != 1:
            raise ValueError("method='joint' fits overall sketches (arrays or ErasedSketch), "
                             "not a SubSketch; query the overall sketch with a path instead")
        return self._joint.plan(inp.values, inp.indices,
                                JOINT_FAN_IN if fan_in is None else fan_in)

    def _dense(self, inp: _Input) -> np.ndarray:
        if inp.indices is None:
            return inp.values
        full = np.zeros((inp.values.shape[0], self._d), dtype=np.float64)
        full[:, inp.indices] = inp.values * inp.scale
        return full

    @staticmethod
    def _shape(x: np.ndarray, was_1d: bool) -> Any:
        return x[0] if was_1d else x

    @staticmethod
    def _weight(weight: Any, name: str = "weight") -> float:
        w = check_real(weight, name)
        if not np.isfinite(w) or not 0.0 < w <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {w!r}")
        return w

    # -- queries ---------------------------------------------------------------------------
    def attributes(self, s: Any, module: str, path: Optional[Sequence[int]] = None,
                   weight: Optional[float] = None, method: str = "matched", *,
                   num_threads: Optional[int] = None, fan_in: Optional[int] = None
                   ) -> Union[np.ndarray, AttributeEstimate]:
        """Attributes of an object of ``module`` recovered from a sketch (Theorem 1).

        Case (i), ``path=None``: the module has one object in the sketch. Case (ii): ``path``
        lists the input positions (from 1) from the output down to the object, so it is found
        even when its module produced several objects.

        With ``weight`` (the object's effective weight, the product of weights on its path)
        returns the attribute estimate, shape ``(attribute_dim,)`` or ``(n, attribute_dim)``.
        Without it returns :class:`AttributeEstimate` ``(attributes, weight)``: the estimate
        clipped at zero and unit-normalised, and the weight estimated from the e_1 channel.
        ``s`` may be a sketch ``(d,)``, a batch ``(n, d)``, an :class:`ErasedSketch` or a
        :class:`SubSketch` (paths then start at its object).

        ``method="joint"`` fits every registered module's words on every path whose input
        positions are at most ``fan_in`` (default :data:`recsketch.joint.JOINT_FAN_IN`, 8) by
        least squares (``joint.py``); it reads overall sketches (and erased ones), not a
        SubSketch. ``fan_in`` is refused by the other methods. The same holds for every query.
        """
        method = self._method(method, fan_in)
        threads = _threads(num_threads)
        inp = self._input(s)
        h, steps = self._target(inp, module, path)
        dim = self._sk.module_info(module).attribute_dim
        if weight is not None:
            w = self._weight(weight)
            x = self._estimate(inp, module, h, steps, 1, dim, method, threads, fan_in) / w
            return self._shape(x, inp.was_1d)
        plan = self._joint_plan_of(inp, method, fan_in)   # one plan for both channels
        x = self._estimate(inp, module, h, steps, 1, dim, method, threads, fan_in, plan)
        w_hat = self._estimate(inp, module, h, steps, 2, 1, method, threads, fan_in, plan)[:, 0]
        x = np.clip(x, 0.0, None)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
        if inp.was_1d:
            return AttributeEstimate(x[0], float(w_hat[0]))
        return AttributeEstimate(x, w_hat)

    def mass(self, s: Any, module: str, method: str = "matched", *,
             num_threads: Optional[int] = None, fan_in: Optional[int] = None
             ) -> Union[float, np.ndarray]:
        """Sum of the effective weights of the module's objects in the sketch (e_1 channel)."""
        method = self._method(method, fan_in)
        inp = self._input(s)
        h, _ = self._target(inp, module, None)
        m = self._estimate(inp, module, h, None, 2, 1, method, _threads(num_threads), fan_in)
        return float(m[0, 0]) if inp.was_1d else m[:, 0]

    def count(self, s: Any, module: str, weight: float, method: str = "matched", *,
              num_threads: Optional[int] = None, fan_in: Optional[int] = None
              ) -> Union[float, np.ndarray]:
        """Number of objects of ``module`` in the sketch, when each has effective weight
        ``weight`` (Theorem 3(i)); with unequal weights, their sum divided by ``weight``.
        Returns a float: round it when the error is below 1/2 (larger d, higher weights)."""
        w = self._weight(weight)
        return self.mass(s, module, method, num_threads=num_threads, fan_in=fan_in) / w

    def summed_attributes(self, s: Any, module: str, weight: float, method: str = "matched",
                          *, num_threads: Optional[int] = None, fan_in: Optional[int] = None
                          ) -> np.ndarray:
        """Sum of the attribute vectors of the module's objects (Theorem 3(ii)), each object
        counted with its effective weight divided by ``weight``."""
        method = self._method(method, fan_in)
        w = self._weight(weight)
        inp = self._input(s)
        h, _ = self._target(inp, module, None)
        dim = self._sk.module_info(module).attribute_dim
        x = self._estimate(inp, module, h, None, 1, dim, method, _threads(num_threads), fan_in)
        return self._shape(x / w, inp.was_1d)

    def mean_attributes(self, s: Any, module: str, weight: Optional[float] = None,
                        method: str = "matched", *, num_threads: Optional[int] = None,
                        fan_in: Optional[int] = None) -> np.ndarray:
        """Mean attribute vector of the module's objects.

        With ``weight`` (every object's effective weight): summed attributes divided by the
        rounded count, as in the paper (NaN where the count rounds to 0). Without: the
        weight-free, weight-averaged mean ``summed / mass`` read from the two channels.
        """
        method = self._method(method, fan_in)
        threads = _threads(num_threads)
        inp = self._input(s)
        h, _ = self._target(inp, module, None)
        dim = self._sk.module_info(module).attribute_dim
        plan = self._joint_plan_of(inp, method, fan_in)   # one plan for both channels
        x = self._estimate(inp, module, h, None, 1, dim, method, threads, fan_in, plan)
        m = self._estimate(inp, module, h, None, 2, 1, method, threads, fan_in, plan)
        if weight is not None:
            w = self._weight(weight)
            n = np.round(m / w)
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(n > 0, (x / w) / np.where(n > 0, n, 1), np.nan)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(m != 0, x / np.where(m != 0, m, 1), np.nan)
        return self._shape(out, inp.was_1d)

    def subsketch(self, s: Any, path: Sequence[int], module: Optional[str] = None,
                  method: str = "matched", *, weight: Optional[float] = None,
                  num_threads: Optional[int] = None) -> SubSketch:
        """Unroll the sketch to the tuple sketch of the object at ``path`` (MATH.md §3.3).

        ``module`` is the object's module; it may be omitted when the registry has a single
        module at that depth. The result is a :class:`SubSketch`, on which every query works
        with paths relative to the object. Without ``weight`` it estimates ``w * t`` (``t``
        the object's tuple sketch, ``w`` its effective weight), so weights passed to later
        queries stay those of the original sketch; with the object's ``weight`` it estimates
        ``t`` itself and later weights are relative to the object. Both methods peel the
        positions and slots on the path plainly (so other objects of the module stay out);
        ``matched`` peels the object's own wrapper by its adjoint, ``paper`` plainly.
        """
        method = self._method(method)
        if method == "joint":
            raise ValueError("subsketch has no 'joint' read-out: query the overall sketch "
                             "with method='joint' and a path instead")
        threads = _threads(num_threads)
        inp = self._input(s)
        if isinstance(path, (str, bytes)) or not isinstance(path, Sequence) or len(path) == 0:
            raise ValueError("path must be a non-empty sequence of input positions")
        depth = max(inp.root_depth, 1) + len(path)
        if module is None:
            candidates = sorted(n for n, i in self._sk.modules.items() if i.depth == depth)
            if len(candidates) != 1:
                raise ValueError(f"pass module=: the registry has {len(candidates)} modules at "
                                 f"depth {depth} ({candidates})")
            module = candidates[0]
        h, steps = self._target(inp, module, path)
        assert steps is not None
        key = ("tuple", module, inp.root_depth, steps, method)
        probe = self._cache.get(key, lambda: build_probe(inp.root_depth, h, module, steps,
                                                         method, "tuple"))
        full = self._dense(inp)
        gain = probe.gain * (1.0 if weight is None else self._weight(weight))
        t = self._peel(probe.words, full, threads) / gain
        values = t.astype(full.dtype if full.dtype in FLOAT_DTYPES else np.float64)
        return SubSketch(values[0] if inp.was_1d else values, h, module,
                         inp.root_path + steps, method)
