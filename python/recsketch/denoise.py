"""Denoising across a batch of sketches: the principal subspace of the batch, and a sketch read
through it (issue 15, docs/denoise.md).

Sketches of one network with one graph layout (the same modules on the same paths; attributes
and weights vary) are linear in a fixed set of unknowns: they lie in the span of that layout's
words, a subspace of dimension ``K = sum over (module, path) of attribute_dim + 1``, whatever
``d``. A batch of them spans it once it holds more than ``K`` varied sketches. What lies outside
the span is not signal: additive noise, storage rounding. And where coordinates are missing (a
forgotten or erased sketch), the span fills them in: the sketch's coefficients in the basis are
fitted on the coordinates it kept (least squares) and the full sketch is rebuilt.

What it cannot do (measured, docs/denoise.md): a sketch that lies in the span is its own
projection, so on noise-free sketches every linear read-out (``paper``, ``matched``,
``joint``) gives the same answer with or without it; the cross-talk of the other objects' words
is inside the span and stays. Graphs that vary per input make the span grow with the batch, and
a sketch whose layout the batch has not seen loses the part of it outside the span (its answers
are biased toward the batch). The subspace also tells which paths the layout uses:
``recsketch.guided.GuidedReader`` fits the joint read-out on those only.

:class:`SubspaceFitter` accumulates the batch in chunks (a streamed, truncated SVD: memory
about ``32 d (k + m) + 56 (k + m)^2`` bytes beside the chunk, ``k + m`` up to
``2 max(max_rank, 64)``; see the class); :meth:`SubspaceFitter.subspace` chooses the
rank by a documented rule and returns a :class:`Subspace`, whose :meth:`Subspace.project` denoises
arrays and completes :class:`recsketch.ErasedSketch` batches.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Iterable, Optional, Tuple, Union

import numpy as np

from ._checks import FLOAT_DTYPES, as_real_array, as_sketches, check_int
from .erasure import ErasedSketch

__all__ = ["COND_WARN", "DEFAULT_RTOL", "Subspace", "SubspaceFitter", "check_rule",
           "check_same_sketcher", "checked_erased", "checked_sketches", "fit_subspace",
           "sketcher_identity"]

# Default noise floor of the rank rule, relative to the largest singular value: float32 rounding
# of a sketch sits near 1e-7 of its norm, so components above 1e-5 of the largest are signal
# unless the sketches carry other noise (then pass noise_std, energy or rank).
DEFAULT_RTOL = 1e-5
# The fitter folds rows into its basis this many at a time at least: each fold is an SVD of
# (max_rank + rows) x d, so a few hundred rows keep it a matrix-matrix computation.
_MIN_STEP = 64
# Completing an erased sketch solves least squares on the kept coordinates; its error is about
# the noise outside the subspace times the condition number of the kept columns, so above this
# the completion warns (RuntimeWarning) rather than return an amplified answer silently.
COND_WARN = 100.0

Identity = Tuple[Tuple[str, Any], ...]


def sketcher_identity(sketcher: Any) -> Identity:
    """What defines a Sketcher's matrices (its configuration without the module registry,
    the sketches' dtype and query settings): family, ``d_sketch``, seed, block size, density,
    format. Two Sketchers with the same identity produce the same words."""
    config = dict(sketcher.to_dict())
    for key in ("modules", "joint_max_unknowns", "dtype"):
        config.pop(key, None)
    return tuple(sorted(config.items()))


def _describe(identity: Identity) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in identity if k not in ("format",)) + ")"


def check_same_sketcher(fitted: Optional[Identity], current: Identity, what: str,
                        against: str) -> None:
    """ValueError naming both when ``fitted`` (the Sketcher a subspace or reader was fitted
    with; None when unknown, then nothing is checked) is not ``current``."""
    if fitted is not None and tuple(fitted) != tuple(current):
        raise ValueError(f"{what} was fitted on sketches of the Sketcher {_describe(fitted)}, "
                         f"but {against} uses the Sketcher {_describe(current)}: its words "
                         "differ, so the answers would be wrong")


class Subspace:
    """An orthonormal basis of the principal subspace of a batch of sketches.

    Build it with :func:`fit_subspace`, :class:`SubspaceFitter` or
    ``Repository.denoiser()``. Immutable; thread-safe.

    Attributes
    ----------
    basis : ndarray, shape (rank, d)
        Orthonormal rows (float64).
    singular_values : ndarray, shape (rank,)
        The batch's singular values along them, largest first.
    spectrum : ndarray
        Every singular value the fitter kept before the rank was chosen (for choosing another).
    n_fitted : int
        Sketches the batch held.
    discarded_energy : float
        Fraction of the batch's squared norm outside the basis (what the rank rule left out,
        and what a streamed fit dropped beyond ``max_rank``).
    rule : str
        The rank rule that chose ``rank`` (``"rank"``, ``"energy"``, ``"noise_std"`` or
        ``"rtol"``), with its value.
    sketcher_identity : tuple or None
        What defines the matrices of the Sketcher whose sketches were fitted
        (:func:`sketcher_identity`: family, d, seed, block size, density), when the fit was
        given one (``Repository.denoiser()`` always is); a Repository or GuidedReader with
        another Sketcher refuses the subspace (ValueError). None: fitted on bare arrays,
        not checked.
    """

    __slots__ = ("basis", "singular_values", "spectrum", "n_fitted", "discarded_energy", "rule",
                 "sketcher_identity")

    def __init__(self, basis: np.ndarray, singular_values: np.ndarray, spectrum: np.ndarray,
                 n_fitted: int, discarded_energy: float, rule: str,
                 sketcher_identity: Optional[Identity] = None):
        basis = np.array(basis, dtype=np.float64, order="C")   # a copy: frozen below
        if basis.ndim != 2 or basis.shape[0] == 0 or not np.all(np.isfinite(basis)):
            raise ValueError(f"basis must be a finite (rank, d) array with rank >= 1, got "
                             f"shape {basis.shape}")
        if np.shape(singular_values) != (basis.shape[0],):
            raise ValueError(f"singular_values must have shape ({basis.shape[0]},), got "
                             f"{np.shape(singular_values)}")
        basis.setflags(write=False)
        self.basis = basis
        self.singular_values = np.array(singular_values, dtype=np.float64)
        self.spectrum = np.array(spectrum, dtype=np.float64)
        self.singular_values.setflags(write=False)
        self.spectrum.setflags(write=False)
        self.n_fitted = int(n_fitted)
        self.discarded_energy = float(discarded_energy)
        self.rule = rule
        self.sketcher_identity = None if sketcher_identity is None else tuple(sketcher_identity)

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    @property
    def d_sketch(self) -> int:
        return int(self.basis.shape[1])

    def __repr__(self) -> str:
        return (f"Subspace(rank={self.rank}, d_sketch={self.d_sketch}, n_fitted={self.n_fitted}, "
                f"rule={self.rule!r}, discarded_energy={self.discarded_energy:.3g})")

    def project(self, s: Any) -> np.ndarray:
        """The denoised sketch(es): ``s`` projected on the subspace, float64, shape of ``s``.

        ``s`` is a sketch ``(d,)``, a batch ``(n, d)`` or an :class:`ErasedSketch`; an erased
        sketch is *completed*: its coefficients in the basis are fitted by least squares on the
        coordinates it kept, and the full sketch ``basis^T c`` is returned (exact when the
        sketch lies in the subspace and the kept coordinates determine the coefficients;
        ValueError when it keeps fewer coordinates than the rank). The completion's error is
        about the noise outside the subspace times the condition number of the kept columns
        ``basis[:, kept]``: above :data:`COND_WARN` (100) a RuntimeWarning names it.
        """
        if isinstance(s, ErasedSketch):
            return self._complete(s)
        x = checked_sketches(s, self.d_sketch)
        return (x @ self.basis.T) @ self.basis

    def coefficients(self, s: Any) -> np.ndarray:
        """The sketch(es)' coordinates in the basis, ``(rank,)`` or ``(n, rank)`` (for an
        :class:`ErasedSketch`, fitted on the kept coordinates)."""
        if isinstance(s, ErasedSketch):
            return self._fit_kept(s)
        return checked_sketches(s, self.d_sketch) @ self.basis.T

    def residual(self, s: Any) -> Union[float, np.ndarray]:
        """Fraction of each sketch's norm outside the subspace, ``||s - P s|| / ||s||`` (0 for
        a zero sketch): near 0 for sketches of a layout the batch spans, clearly larger for a
        sketch the subspace does not describe (its read-out through the subspace is then
        biased). Arrays only."""
        if isinstance(s, ErasedSketch):
            raise TypeError("residual takes full sketches (arrays), not an ErasedSketch")
        p = self.project(s)
        x = np.asarray(s, dtype=np.float64)
        total = np.linalg.norm(x, axis=-1)
        left = np.linalg.norm(x - p, axis=-1)
        out = np.divide(left, total, out=np.zeros_like(total), where=total > 0)
        return float(out) if out.ndim == 0 else out

    def _fit_kept(self, e: ErasedSketch) -> np.ndarray:
        vals = checked_erased(e, self.d_sketch, self.rank, "the subspace's rank")
        kept = self.basis[:, e.indices]                     # (rank, d_kept)
        # least squares on the kept coordinates; rows (not the rescaled sketch): the kept values
        # are the sketch's own, only the missing ones are unknown
        coef, _, _, sv = np.linalg.lstsq(kept.T, vals.reshape(-1, e.d_kept).T, rcond=None)
        # lstsq's singular values are those of the kept columns: the guard costs nothing more
        cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf
        if cond > COND_WARN:
            warnings.warn(f"completing an erased sketch from {e.d_kept} kept coordinates is "
                          f"ill-conditioned (cond={cond:.3g} > {COND_WARN:g}, rank "
                          f"{self.rank}): its error is about the noise outside the subspace "
                          "times cond; keep more coordinates or fit a lower rank",
                          RuntimeWarning, stacklevel=3)
        out = coef.T
        return out[0] if vals.ndim == 1 else out

    def _complete(self, e: ErasedSketch) -> np.ndarray:
        return self._fit_kept(e) @ self.basis


class SubspaceFitter:
    """Streams a batch of sketches into a truncated SVD, chunk by chunk.

    Keeps at most ``max_rank`` directions (their singular values times the directions, a
    ``(max_rank, d)`` array); each :meth:`add` folds its rows in by an SVD of the
    ``(kept + rows) x d`` stack (rows taken ``max(max_rank, 64)`` at a time). Exact (to
    rounding) while the batch's rank stays within ``max_rank``; beyond it, each fold drops its
    smallest directions (reported as :attr:`Subspace.discarded_energy`), the usual streamed
    approximation of the top singular directions.

    Memory beside the chunk, with ``k <= max_rank`` directions kept and ``m = max(max_rank,
    64)`` rows per fold: the stack, LAPACK's copy of it, its right singular vectors and the
    rows and directions themselves, about ``8 d (k + m)`` bytes each, plus the SVD's
    workspace, about ``7 (k + m)^2`` doubles: in all about ``32 d (k + m) + 56 (k + m)^2``
    bytes (d = 4096: about 80-95 MiB at max_rank 256, 480-500 MiB at 1024; measured in
    docs/denoise.md). With the default
    ``max_rank = d // 2``, ``k + m`` reaches ``d`` for ``d <= 2048``: each fold is then a
    ``d x d`` SVD (about ``88 d^2`` bytes); pass a smaller ``max_rank`` when the batch's rank
    is known to be smaller.

    Parameters
    ----------
    d_sketch : int
        Length of the sketches.
    max_rank : int, optional
        Most directions kept (default ``min(d_sketch // 2, 1024)``).
    """

    def __init__(self, d_sketch: int, max_rank: Optional[int] = None, *,
                 sketcher: Any = None):
        self._d = check_int(d_sketch, "d_sketch", minimum=1)
        self._identity: Optional[Identity] = None
        if sketcher is not None:
            from .sketcher import Sketcher
            if not isinstance(sketcher, Sketcher):
                raise TypeError(f"sketcher must be a recsketch.Sketcher or None, got "
                                f"{type(sketcher).__name__}")
            if sketcher.d_sketch != self._d:
                raise ValueError(f"the Sketcher has d_sketch={sketcher.d_sketch}, the fitter "
                                 f"{self._d}")
            self._identity = sketcher_identity(sketcher)
        cap = min(max(self._d // 2, 1), 1024) if max_rank is None else \
            check_int(max_rank, "max_rank", minimum=1, maximum=self._d)
        self._max_rank = cap
        self._scaled = np.zeros((0, self._d))   # singular values x directions (rows)
        self._n = 0
        self._total = 0.0        # squared norm of everything added

    @property
    def n_added(self) -> int:
        return self._n

    @property
    def max_rank(self) -> int:
        return self._max_rank

    def add(self, sketches: Any) -> "SubspaceFitter":
        """Fold a chunk ``(n, d)`` (or one sketch ``(d,)``) into the fit; returns ``self``.
        Checked before anything changes (dtype float32/float64, as :meth:`Subspace.project`;
        shape; finiteness); the fit is updated only once the whole chunk is folded, so a
        failure leaves it as it was."""
        arr = as_real_array(sketches, "sketches")
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"sketches must have dtype float32 or float64, got {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self._d:
            raise ValueError(f"sketches must have shape (n, {self._d}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("sketches contain NaN or infinity")
        step = max(self._max_rank, _MIN_STEP)
        scaled, total = self._scaled, self._total
        for start in range(0, arr.shape[0], step):
            scaled, total = self._fold(scaled, total,
                                       arr[start:start + step].astype(np.float64, copy=False))
        self._scaled, self._total = scaled, total
        self._n += arr.shape[0]
        return self

    def _fold(self, scaled: np.ndarray, total: float, rows: np.ndarray
              ) -> Tuple[np.ndarray, float]:
        total += float(np.einsum("ij,ij->", rows, rows))
        stack = np.concatenate([scaled, rows])
        # thin SVD of a (k + m) x d stack: O(d (k + m)^2) time; memory in the class docstring
        _, sv, vt = np.linalg.svd(stack, full_matrices=False)
        keep = min(self._max_rank, int(np.count_nonzero(sv > 0)))
        return sv[:keep, None] * vt[:keep], total

    def spectrum(self) -> np.ndarray:
        """The singular values kept so far, largest first."""
        return np.linalg.norm(self._scaled, axis=1)

    def subspace(self, *, rank: Optional[int] = None, energy: Optional[float] = None,
                 noise_std: Optional[float] = None, rtol: Optional[float] = None) -> Subspace:
        """The fitted :class:`Subspace`, its rank chosen by one rule (at most one given):

        - ``rank``: that many directions (at most those kept);
        - ``energy`` in (0, 1]: the fewest directions holding that fraction of the batch's
          squared norm;
        - ``noise_std`` (>= 0): the standard deviation of independent noise on each
          coordinate; keeps the singular values above the largest one pure noise of that size
          reaches on an ``n x d`` batch, ``noise_std (sqrt(n) + sqrt(d))`` (Marchenko-Pastur
          edge), times 1.1;
        - ``rtol`` (default :data:`DEFAULT_RTOL`): singular values above ``rtol`` times the
          largest (a floor for float32 rounding; it keeps any noise above it). Relative to
          the *largest*: real directions that are weak because their words carry small
          products of weights fall below it too (a chain of 6 modules with weights 0.05-0.15
          at d = 1024: rank 12 of 24 unknowns), and a GuidedReader then reads those present
          deep modules as exactly 0. For deep or weakly weighted layouts pass ``rank`` (the
          layout's ``sum (attribute_dim + 1)``) or a smaller ``rtol``, after a look at
          :meth:`spectrum`.
        """
        rule = check_rule(rank=rank, energy=energy, noise_std=noise_std, rtol=rtol)
        if self._n == 0:
            raise ValueError("no sketch was added: nothing to fit")
        sv = self.spectrum()
        name, value = rule
        if name == "rank":
            if value > sv.size:
                raise ValueError(f"rank must be <= {sv.size} (the directions kept: at most "
                                 f"max_rank={self._max_rank} and the sketches added), got {value}")
            r = int(value)
        elif name == "energy":
            cum = np.cumsum(sv ** 2)
            r = min(int(np.searchsorted(cum, value * self._total * (1 - 1e-12))) + 1, sv.size)
        elif name == "noise_std":
            edge = 1.1 * value * (math.sqrt(self._n) + math.sqrt(self._d))
            r = int(np.count_nonzero(sv > edge))
        else:
            r = int(np.count_nonzero(sv > value * (sv[0] if sv.size else 0.0)))
        rule_text = f"{name}={value:g}"
        if r == 0:
            raise ValueError(f"the rank rule {rule_text} keeps no direction (largest singular "
                             f"value {sv[0] if sv.size else 0.0:.3g}): every added sketch is "
                             "zero or below the noise")
        basis = self._scaled[:r] / sv[:r, None]
        kept = float(np.sum(sv[:r] ** 2))
        left = max(self._total - kept, 0.0) / self._total if self._total > 0 else 0.0
        return Subspace(basis, sv[:r], sv, self._n, left, rule_text, self._identity)


def check_rule(*, rank: Optional[int] = None, energy: Optional[float] = None,
               noise_std: Optional[float] = None, rtol: Optional[float] = None
               ) -> Tuple[str, Union[int, float]]:
    """Validate a rank rule (at most one of the four; none means ``rtol=DEFAULT_RTOL``) and
    return it as ``(name, value)``: checked before anything is read or fitted."""
    given = [(k, v) for k, v in (("rank", rank), ("energy", energy), ("noise_std", noise_std),
                                 ("rtol", rtol)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one rank rule, got {[k for k, _ in given]}")
    if not given:
        return "rtol", DEFAULT_RTOL
    name, value = given[0]
    if name == "rank":
        return name, check_int(value, "rank", minimum=1)
    x = _real(value, name)
    if name == "energy" and not 0.0 < x <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {value!r}")
    if name == "noise_std" and not x >= 0.0:
        raise ValueError(f"noise_std must be >= 0, got {value!r}")
    if name == "rtol" and not 0.0 <= x < 1.0:
        raise ValueError(f"rtol must be in [0, 1), got {value!r}")
    return name, x


def fit_subspace(sketches: Union[np.ndarray, Iterable[np.ndarray]], *,
                 max_rank: Optional[int] = None, rank: Optional[int] = None,
                 energy: Optional[float] = None, noise_std: Optional[float] = None,
                 rtol: Optional[float] = None, sketcher: Any = None) -> Subspace:
    """The principal subspace of a batch ``(n, d)`` (or of an iterable of chunks ``(m, d)``),
    its rank chosen by the rule given (see :meth:`SubspaceFitter.subspace`; default
    ``rtol=DEFAULT_RTOL``). ``sketcher``: the Sketcher that made the sketches, recorded in
    :attr:`Subspace.sketcher_identity` so that another Sketcher's reads refuse it."""
    chunks = [sketches] if isinstance(sketches, np.ndarray) else sketches
    fitter: Optional[SubspaceFitter] = None
    for chunk in chunks:
        arr = as_real_array(chunk, "sketches")
        if fitter is None:
            if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
                raise ValueError(f"sketches must have shape (n, d), got {arr.shape}")
            fitter = SubspaceFitter(arr.shape[-1], max_rank, sketcher=sketcher)
        fitter.add(arr)
    if fitter is None:
        raise ValueError("no sketch was given: nothing to fit")
    return fitter.subspace(rank=rank, energy=energy, noise_std=noise_std, rtol=rtol)


def checked_sketches(s: Any, d: int) -> np.ndarray:
    """A sketch ``(d,)`` or batch ``(n, d)`` of float32/float64 as float64, finite (TypeError
    or ValueError naming the problem otherwise)."""
    x = as_sketches(s, "sketch", d).astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError("sketch contains NaN or infinity")
    return x


def checked_erased(e: ErasedSketch, d: int, unknowns: int, what: str) -> np.ndarray:
    """The kept values of an erased sketch as float64, after checking its ``d`` and that it
    keeps at least ``unknowns`` coordinates (a least-squares fit of that many needs them)."""
    if e.d_sketch != d:
        raise ValueError(f"the erased sketch has d_sketch={e.d_sketch}, expected {d}")
    if e.d_kept < unknowns:
        raise ValueError(f"the erased sketch keeps {e.d_kept} coordinates, fewer than "
                         f"{what} {unknowns}: its coefficients are undetermined")
    vals = np.asarray(e.values, dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        raise ValueError("sketch contains NaN or infinity")
    return vals


def _real(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out

