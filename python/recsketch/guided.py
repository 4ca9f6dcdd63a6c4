"""The joint read-out on the words a batch's subspace spans (issue 15, docs/denoise.md).

``method="joint"`` fits every registered module on every path up to ``fan_in``: exact when
all those unknowns fit its budget (half the coordinates), not when they do not (deeper levels
are then fitted path-free). A batch of sketches of one layout tells which paths are used: their
words lie in the batch's principal subspace (:class:`recsketch.denoise.Subspace`), the words
of unused paths do not. :class:`GuidedReader` scores every candidate block (module, path,
ancestors; the joint read-out's blocks, ``recsketch.joint``) by how much of it lies outside
the subspace, keeps the fewest best-scored blocks whose words span the subspace, and fits only
those by least squares. It then needs ``K`` unknowns (the layout's), not every path's, so it
is exact where the plain joint fit is not (measured: docs/denoise.md), and modules the layout
does not hold read 0.

When it is not exact: the subspace spans something no candidate spans (a path above
``fan_in``, noise kept by the rank rule, a depth beyond ``max_candidates``): :attr:`coverage`
is then below 1 and the fit reads what the selected words explain. Sketches of a layout the
batch did not span are read on the wrong words (check ``subspace.residual(s)``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import check_int, check_real
from .denoise import (COND_WARN, Subspace, check_same_sketcher, checked_erased,
                      checked_sketches, sketcher_identity)
from .erasure import ErasedSketch
from .joint import JOINT_FAN_IN, Block, check_fan_in, design_rows, plan_blocks

if TYPE_CHECKING:  # pragma: no cover
    from .sketcher import Sketcher

__all__ = ["GuidedReader", "MAX_CANDIDATES", "MAX_SCORE", "COVERAGE_TOL"]

# Most candidate unknowns (design rows) scored; deeper levels beyond it are not searched.
MAX_CANDIDATES = 1 << 16
# A block is a candidate when the median of its columns' out-of-span fractions is at most this:
# a used path's attribute columns lie in the span (0 up to rounding; its count column may not,
# when the weights are linearly tied, e.g. children's weights summing to their parent's),
# an unused path's are mostly outside (measured: docs/denoise.md).
MAX_SCORE = 0.5
# The selection stops at the fewest candidates whose words leave at most this fraction of the
# subspace's squared basis norm unexplained.
COVERAGE_TOL = 1e-6
# Bytes of design rows built at a time while scoring candidates.
_GROUP_BYTES = 64 << 20


class GuidedReader:
    """The joint least-squares read-out restricted to the words a :class:`Subspace` spans.

    Parameters
    ----------
    sketcher : Sketcher
        The sketches' Sketcher (its matrices and module registry).
    subspace : Subspace
        Principal subspace of a batch of sketches of this Sketcher (``Repository.denoiser()``
        or :func:`recsketch.denoise.fit_subspace`).
    fan_in : int
        Largest input position searched (default ``recsketch.joint.JOINT_FAN_IN``, 8).
    max_candidates : int
        Most candidate unknowns scored (default :data:`MAX_CANDIDATES`); levels beyond it are
        not searched (:attr:`unsearched_depths`).

    Building scores every candidate path's words against the subspace (design rows built
    ``64 MiB`` at a time, about three times that in memory, ``(candidate unknowns) x (chain
    letters)`` products in all); a query is then one product with the cached probe
    ``(K, d)``. Not changed after building; thread-safe.

    Attributes
    ----------
    blocks : tuple of recsketch.joint.Block
        The selected (module, path, ancestors) blocks, in the joint plan's order.
    coverage : float
        Fraction of the subspace the selected words span (1 when they explain it).
    scores : ndarray
        Every candidate's median column out-of-span fraction (0: inside the subspace).
    unsearched_depths : list of int
        Depths beyond ``max_candidates`` (a RuntimeWarning says so): their modules read 0.
    sketcher_identity : tuple
        What defines the matrices of the Sketcher it was built with
        (:func:`recsketch.denoise.sketcher_identity`); a Repository with another Sketcher
        refuses the reader (ValueError).
    """

    def __init__(self, sketcher: "Sketcher", subspace: Subspace, *,
                 fan_in: Optional[int] = None, max_candidates: int = MAX_CANDIDATES):
        from .sketcher import Sketcher
        if not isinstance(sketcher, Sketcher):
            raise TypeError(f"sketcher must be a recsketch.Sketcher, got "
                            f"{type(sketcher).__name__}")
        if not isinstance(subspace, Subspace):
            raise TypeError(f"subspace must be a recsketch.denoise.Subspace, got "
                            f"{type(subspace).__name__}")
        if subspace.d_sketch != sketcher.d_sketch:
            raise ValueError(f"the subspace has d_sketch={subspace.d_sketch}, the Sketcher "
                             f"{sketcher.d_sketch}")
        identity = sketcher_identity(sketcher)
        check_same_sketcher(subspace.sketcher_identity, identity, "the subspace",
                            "this GuidedReader")
        self.fan_in = check_fan_in(JOINT_FAN_IN if fan_in is None else fan_in)
        limit = check_int(max_candidates, "max_candidates", minimum=1)
        self._sk = sketcher
        self._d = sketcher.d_sketch
        self._modules = dict(sketcher.modules)
        plan = plan_blocks(self._modules, self.fan_in, limit)
        candidates = tuple(b for b in plan if b.path is not None)
        self.unsearched_depths = sorted({b.depth for b in plan if b.path is None})
        if self.unsearched_depths:
            warnings.warn(f"GuidedReader searches no path at depths {self.unsearched_depths} "
                          f"(more than max_candidates={limit} unknowns with fan_in="
                          f"{self.fan_in}): their modules read 0; raise max_candidates or "
                          "lower fan_in", RuntimeWarning, stacklevel=2)
        scores, kept_rows = self._score(candidates, subspace)
        scores.setflags(write=False)
        self.scores = scores
        self.blocks, rows = self._select(candidates, scores, kept_rows, subspace)
        self.coverage = _coverage(rows, subspace.basis)
        self.sketcher_identity = identity
        self._probe, self._cond = _pseudo_inverse(rows)
        self._probe.setflags(write=False)
        self._rows = rows
        del self._sk      # the matrices are needed to build only; the reader is then plain data

    # -- building ---------------------------------------------------------------------------
    def _score(self, candidates: Sequence[Block], subspace: Subspace
               ) -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
        """Each candidate's median column out-of-span fraction, and the rows of those at most
        :data:`MAX_SCORE` (the others are dropped group by group: memory stays bounded)."""
        d = self._sk.d_sketch
        basis = subspace.basis
        per_group = max(1, _GROUP_BYTES // (8 * d))
        scores = np.empty(len(candidates))
        kept: Dict[int, np.ndarray] = {}
        k = 0
        while k < len(candidates):
            group: List[Block] = []
            rows_in = 0
            while k + len(group) < len(candidates) and (
                    not group or rows_in + candidates[k + len(group)].size <= per_group):
                rows_in += candidates[k + len(group)].size
                group.append(candidates[k + len(group)])
            rows = design_rows(self._sk, group, None)
            inside = (rows @ basis.T) @ basis
            norms = np.linalg.norm(rows, axis=1)
            out = np.linalg.norm(rows - inside, axis=1)
            frac = np.divide(out, norms, out=np.ones_like(norms), where=norms > 0)
            first = group[0].start
            for j, b in enumerate(group):
                lo = b.start - first
                scores[k + j] = float(np.median(frac[lo:lo + b.size]))
                if scores[k + j] <= MAX_SCORE:
                    kept[k + j] = rows[lo:lo + b.size].copy()
            k += len(group)
        return scores, kept

    @staticmethod
    def _select(candidates: Sequence[Block], scores: np.ndarray,
                kept: Dict[int, np.ndarray], subspace: Subspace
                ) -> Tuple[Tuple[Block, ...], np.ndarray]:
        """The fewest best-scored candidates whose words span the subspace (to
        :data:`COVERAGE_TOL`), or all the kept ones when even they do not."""
        order = sorted(kept, key=lambda i: (scores[i], i))
        if not order:
            return (), np.zeros((0, subspace.d_sketch))

        def rows_of(n: int) -> np.ndarray:
            return np.concatenate([kept[i] for i in order[:n]])

        # coverage grows with the prefix: the smallest prefix reaching the tolerance
        lo, hi = 1, len(order)
        if 1.0 - _coverage(rows_of(hi), subspace.basis) > COVERAGE_TOL:
            lo = hi
        while lo < hi:
            mid = (lo + hi) // 2
            if 1.0 - _coverage(rows_of(mid), subspace.basis) <= COVERAGE_TOL:
                hi = mid
            else:
                lo = mid + 1
        chosen = sorted(order[:lo])          # plan order: deterministic
        blocks, start = [], 0
        for i in chosen:
            blocks.append(candidates[i]._replace(start=start))
            start += candidates[i].size
        return tuple(blocks), np.concatenate([kept[i] for i in chosen])

    # -- reading ----------------------------------------------------------------------------
    @property
    def d_sketch(self) -> int:
        return self._d

    @property
    def unknowns(self) -> int:
        return int(self._rows.shape[0])

    def __repr__(self) -> str:
        return (f"GuidedReader({len(self.blocks)} blocks, {self.unknowns} unknowns, "
                f"fan_in={self.fan_in}, coverage={self.coverage:.6g})")

    def fit(self, s: Any) -> np.ndarray:
        """The fitted unknowns ``(K,)`` or ``(n, K)`` of sketch(es) ``s`` (arrays or an
        :class:`ErasedSketch`, fitted on its kept coordinates)."""
        if isinstance(s, ErasedSketch):
            vals = checked_erased(s, self._d, self.unknowns, "the fit's unknowns")
            probe, cond = _pseudo_inverse(self._rows[:, s.indices])
            # the full sketch's fit has its own conditioning (tied words); warn on what the
            # erasure adds to it
            if cond > COND_WARN * max(self._cond, 1.0):
                warnings.warn(f"fitting an erased sketch from {s.d_kept} kept coordinates is "
                              f"ill-conditioned (cond={cond:.3g}, {cond / self._cond:.3g} "
                              f"times the full sketch's, above {COND_WARN:g}): its error is "
                              "about the noise times that factor; keep more coordinates",
                              RuntimeWarning, stacklevel=2)
            theta = vals.reshape(-1, s.d_kept) @ probe.T
            return theta[0] if vals.ndim == 1 else theta
        x = checked_sketches(s, self._d)
        return x @ self._probe.T

    def _sum(self, s: Any, module: str, path: Optional[Sequence[int]], channel: int
             ) -> np.ndarray:
        """The fitted unknowns of ``module`` (on ``path`` if given) summed over its selected
        blocks: ``(n, attribute_dim)`` (channel 1) or ``(n, 1)`` (channel 2)."""
        return self._summed(self._checked(module, path), np.atleast_2d(self.fit(s)), channel)

    def _checked(self, module: str, path: Optional[Sequence[int]]
                 ) -> Tuple[str, Optional[Tuple[int, ...]]]:
        if not isinstance(module, str):
            raise TypeError(f"module must be a str, got {type(module).__name__}")
        if module not in self._modules:
            raise ValueError(f"module {module!r} was not registered when this reader was built")
        info = self._modules[module]
        key_path = None
        if path is not None:
            if isinstance(path, (str, bytes)) or not isinstance(path, Sequence):
                raise TypeError("path must be a sequence of input positions (ints >= 1)")
            key_path = tuple(check_int(p, f"path entry {k}", minimum=1)
                             for k, p in enumerate(path))
            if len(key_path) != info.depth - 1:
                raise ValueError(f"module {module!r} sits at depth {info.depth}, so its path "
                                 f"needs {info.depth - 1} positions, got {len(key_path)}")
        return module, key_path

    def _summed(self, target: Tuple[str, Optional[Tuple[int, ...]]], theta: np.ndarray,
                channel: int) -> np.ndarray:
        module, key_path = target
        info = self._modules[module]
        out = np.zeros((theta.shape[0], info.attribute_dim if channel == 1 else 1))
        for b in self.blocks:
            if b.module == module and (key_path is None or b.path == key_path):
                out += (theta[:, b.start:b.start + b.dim] if channel == 1
                        else theta[:, b.start + b.dim:b.start + b.dim + 1])
        return out

    @staticmethod
    def _shaped(s: Any, x: np.ndarray) -> Any:
        one = (s.values.ndim == 1) if isinstance(s, ErasedSketch) else np.ndim(s) == 1
        return x[0] if one else x

    def mass(self, s: Any, module: str) -> Union[float, np.ndarray]:
        """Summed effective weight of ``module``'s objects (0 where no selected path holds
        it)."""
        m = self._shaped(s, self._sum(s, module, None, 2)[:, 0])
        return float(m) if np.ndim(m) == 0 else m

    def count(self, s: Any, module: str, weight: float) -> Union[float, np.ndarray]:
        """Objects of ``module`` when each has effective weight ``weight``."""
        return self.mass(s, module) / _weight(weight)

    def summed_attributes(self, s: Any, module: str, weight: float = 1.0) -> np.ndarray:
        """Sum of the attribute vectors of ``module``'s objects, each counted with its effective
        weight divided by ``weight``."""
        return self._shaped(s, self._sum(s, module, None, 1) / _weight(weight))

    def attributes(self, s: Any, module: str, path: Optional[Sequence[int]] = None,
                   weight: float = 1.0) -> np.ndarray:
        """Attributes of the object of ``module`` (case (i); at ``path``, case (ii)) times its
        effective weight divided by ``weight`` (pass the object's weight for its attributes)."""
        return self._shaped(s, self._sum(s, module, path, 1) / _weight(weight))

    def mean_attributes(self, s: Any, module: str) -> np.ndarray:
        """Weight-averaged mean attribute vector ``summed / mass`` (NaN where the mass is 0)."""
        target = self._checked(module, None)
        theta = np.atleast_2d(self.fit(s))          # one fit for both channels
        x = self._summed(target, theta, 1)
        m = self._summed(target, theta, 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(m != 0, x / np.where(m != 0, m, 1), np.nan)
        return self._shaped(s, out)


def _weight(weight: Any) -> float:
    w = check_real(weight, "weight")
    if not np.isfinite(w) or not 0.0 < w <= 1.0:
        raise ValueError(f"weight must be in (0, 1], got {w!r}")
    return w


def _coverage(rows: np.ndarray, basis: np.ndarray) -> float:
    """Fraction of the subspace's squared basis norm inside the span of ``rows``."""
    if rows.shape[0] == 0:
        return 0.0
    q, _ = np.linalg.qr(rows.T)                    # (d, K): never d x d
    inside = (basis @ q)
    return float(np.sum(inside ** 2) / basis.shape[0])


def _pseudo_inverse(rows: np.ndarray) -> Tuple[np.ndarray, float]:
    """``(A A^T)^+ A`` for rows ``A`` (K, d), by a thin SVD (rank-revealing: words tied by the
    layout's weights are fitted jointly, not refused), and the condition number of ``A``
    (over the whole spectrum: a rank lost to an erasure counts as inf)."""
    if rows.shape[0] == 0:
        return np.zeros((0, rows.shape[1])), 1.0
    u, sv, vt = np.linalg.svd(rows, full_matrices=False)
    keep = sv > sv[0] * max(rows.shape) * np.finfo(np.float64).eps
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    return (u[:, keep] / sv[keep]) @ vt[keep], cond
