"""Separating the objects of fixed-tree sketches with sketches that hold one object each.

Unmixing (:mod:`recsketch.network.unmixing`) finds the row space of ``Y = C A^T`` and every
word's spike in it, but not which share of a block belongs to which word: ``Y`` is unchanged by
``C -> C T``, ``A -> A T^-T``, the spikes fix only ``T``'s diagonal, and every linear read of a
depth-3 word picks the heavier words' values on its blocks through a prior (``docs/unmix.md``,
rounds 6 and 9: that prior is what keeps the depth-3 attributes at 0.05-0.38 l-inf at
d = 524,262).

Footnote 2's sampled tuples remove the ambiguity. With ``tuple_sampling=1`` every tuple keeps one
of its terms, so a sampled sketch of a fixed tree holds the words of exactly **one** object
(``Sketcher.sketch_many(graphs, tuple_sampling=1, sample_seed=range(n))``): its coefficient
matrix is block-diagonal by object, and the only ``T`` that keeps it so is block-diagonal too.
So the sampled sketches, in the joint row space of both sets,

1. cluster by object: two sketches of one object have coefficients ``[x; 1]`` and ``[x'; 1]``
   on the same nearly orthogonal words, all nonnegative (attributes are), so their cosine is
   large (about 1/2 or more when the count word is as long as the attribute words); two
   sketches of different objects lie on different words, so their cosine is the words'
   non-orthogonality (about ``1 / sqrt(d / b)`` blocks: below 0.02 at d = 2^19, ~0.05 at
   d = 2^16). The clusters are the connected components of "cosine above ``min_cosine``";
2. give each object's span of words: the row space of its cluster (its rank is the dimension
   over which the object's attributes vary, at most attribute length + 1). A cluster with no
   more members than its rank may hold only part of that span (the next member could add a
   direction); its directions are left unassigned (below);
3. the plain sketches' coordinates in the direct sum of those spans are unique, so every plain
   sketch splits exactly into one part per object (:meth:`ObjectSeparation.part`): each part
   is that object's words with its own per-sample coefficients, and every other object's
   words removed -- not by a prior, by the sampled sketches.

What no cluster spans (an object never drawn, or drawn no more times than its span's dimension)
stays in the ``unassigned`` directions: the part of the joint row space orthogonal to every
object's span, separated from nothing (its part is unmixed as a whole, as without sampling).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator, List, Tuple

import numpy as np
from numpy.typing import DTypeLike

from .._checks import all_finite, check_int, check_real
from .unmixing import RANK_FLOOR, _basis, _check_sketches, _choose_rank

__all__ = ["ObjectSeparation", "separate_objects"]

# Smallest singular value of the stacked object spans (orthonormal within each object) below
# which two objects' spans are taken as overlapping. Distinct objects' words are nearly
# orthogonal (their stacked spans' smallest value is near 1 less the words' cosines, ~0.05-0.2
# at d = 2^16), while a sampled sketch holding two objects makes its cluster's span share a
# direction with another's exactly (a value at rounding level). Coordinates in nearly
# overlapping spans would amplify rounding by 1 / this.
OVERLAP_FLOOR = 0.1

# Largest principal cosine between an object's span and the plain sketches' row space below
# which the object is not in the plain sketches: every object of a fixed tree is, at cosine 1
# (to rounding), when both sets come from the same Sketcher; with another Sketcher's matrices
# the cosine is the words' non-orthogonality (measured 0.02-0.03 at d = 2^16).
SHARED_FLOOR = 0.5


@dataclass(frozen=True, eq=False)
class ObjectSeparation:
    """The plain sketches split by object (:func:`separate_objects`).

    ``basis``: ``(d, K)`` orthonormal basis of the joint row space of the sketches and the
    sampled sketches. ``spans``: per object, ``(r_o, K)`` orthonormal rows (coordinates in
    ``basis``) spanning its words; ``members``: per object, the indices of the sampled
    sketches that hold it. ``unassigned``: ``(r_u, K)`` orthonormal rows of the directions in
    no object's span (``r_u = K - sum r_o``); ``set_aside``: the indices of the sampled
    sketches of clusters left unassigned (no more members than their rank) and of the sampled
    sketches at rounding level (all zero). ``coordinates``: ``(S, K)``, every plain sketch in
    the concatenated rows of ``spans`` and then ``unassigned`` (a square, invertible system),
    so that part ``o`` of sketch ``s`` is ``coordinates[s, rows_o] @ spans[o] @ basis.T``.
    ``margin``: the smallest singular value of the stacked spans (1 for orthogonal spans; how
    much a part's coordinates can amplify rounding is about ``1 / margin``)."""

    basis: np.ndarray
    spans: Tuple[np.ndarray, ...]
    members: Tuple[np.ndarray, ...]
    unassigned: np.ndarray
    set_aside: np.ndarray
    coordinates: np.ndarray
    margin: float

    @property
    def n_objects(self) -> int:
        return len(self.spans)

    @property
    def n_parts(self) -> int:
        """Objects, and one more if any direction is unassigned."""
        return self.n_objects + (1 if self.unassigned.shape[0] else 0)

    @property
    def part_norms(self) -> np.ndarray:
        """``(n_parts,)``: the Frobenius norm of every part (objects, then the unassigned
        directions if any), from the coordinates (the spans' rows and the basis are
        orthonormal): a part at rounding level holds nothing of the sketches."""
        bounds = np.cumsum([0] + [s.shape[0] for s in self.spans]
                           + ([self.unassigned.shape[0]] if self.unassigned.shape[0] else []))
        return np.array([np.linalg.norm(self.coordinates[:, lo:hi])
                         for lo, hi in zip(bounds[:-1], bounds[1:])])

    def part(self, o: int, dtype: DTypeLike = np.float64, *, chunk: int = 1 << 16
             ) -> np.ndarray:
        """``(S, d)``: the plain sketches' share of object ``o`` (``0 <= o < n_objects``), or
        of the unassigned directions for ``o == n_objects`` (if any), in ``dtype``
        (float32/float64), formed column chunk by column chunk (the float64 product is never
        held whole)."""
        o = check_int(o, "o", minimum=0, maximum=self.n_parts - 1)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        chunk = check_int(chunk, "chunk", minimum=1)
        lo = sum(s.shape[0] for s in self.spans[:o])
        rows = self.spans[o] if o < self.n_objects else self.unassigned
        Z = self.coordinates[:, lo:lo + rows.shape[0]] @ rows
        d = self.basis.shape[0]
        out = np.empty((Z.shape[0], d), dt)
        for c in range(0, d, chunk):
            out[:, c:c + chunk] = Z @ self.basis[c:c + chunk].T
        return out

    def parts(self, dtype: DTypeLike = np.float64, *, chunk: int = 1 << 16
              ) -> Iterator[np.ndarray]:
        """Every object's part in order, then the unassigned part if it has any direction; one
        ``(S, d)`` array alive at a time if the caller drops each before the next."""
        for o in range(self.n_parts):
            yield self.part(o, dtype, chunk=chunk)


def separate_objects(sketches: np.ndarray, sampled_sketches: np.ndarray, *,
                     min_cosine: float = 0.25, chunk: int = 1 << 16) -> ObjectSeparation:
    """Split fixed-tree sketches into one part per object, from sampled sketches of the same
    tree that hold one object each (module docstring).

    Parameters
    ----------
    sketches : ndarray ``(S, d)``, float32 or float64
        Plain overall sketches of a fixed tree (a memory map is read in column chunks).
    sampled_sketches : ndarray ``(S', d)``, float32 or float64
        Sketches of the same tree with the same Sketcher made with ``tuple_sampling=1`` (any
        inputs, e.g. the same ones with ``sample_seed=range(S')``). An object's span is found
        only if more sampled sketches hold it than the dimension over which its attributes
        vary (attribute length + 1 at most); each object is held in about ``w 2^-m`` of them
        (path weight ``w``, ``m`` the objects with inputs on its path, itself included: each
        such object's tuple keeps its attribute or its input term, 1/2 each).
    min_cosine : float in (0, 1)
        Two sampled sketches whose cosine exceeds it hold the same object. The default 0.25
        sits between same-object cosines (about 1/2 and up for nonnegative attributes) and
        different objects' (the words' non-orthogonality, ``~1 / sqrt(d / b)``: 0.02 at
        d = 2^19, 0.05 at 2^16); at a much smaller ``d / b``, or with attributes whose
        supports are disjoint and a zero count word, the two overlap (too high a value splits
        one object's sketches into small clusters: the warning below, or the ValueError when
        their spans overlap).
    chunk : columns per pass over the sketches.

    Returns
    -------
    ObjectSeparation

    Raises
    ------
    TypeError, ValueError
        Before any work: arrays not 2-D non-empty float32/float64, different ``d``,
        ``min_cosine`` not in (0, 1), ``chunk`` < 1. After the pass that forms the joint Gram
        matrix (no state is kept): NaN/inf (naming the array), sketches too large or small for
        float64 or all zero (as :func:`~recsketch.network.unmixing.sketch_basis`); objects'
        spans that overlap (a sampled sketch holding two objects: made without
        ``tuple_sampling=1``, or a graph that is not a fixed tree; or ``min_cosine`` too high);
        an object that is not in the sketches' row space (sampled sketches of another
        Sketcher, or of another network). A sampled sketch holding two objects whose cosine
        with both exceeds ``min_cosine`` merges their clusters instead: they are then one
        object, not separated from each other.

    Warns
    -----
    RuntimeWarning
        Nothing separated (no object, or one object and no unassigned direction: plain
        sketches passed as sampled ones?); clusters left unassigned for lack of members.

    Memory: the ``(S + S') ** 2`` Gram matrix, the ``(d, K)`` float64 basis, one column chunk
    of both sets, and ``S' ** 2`` booleans for the clustering; neither set is copied whole.
    """
    for arr, name in ((sketches, "sketches"), (sampled_sketches, "sampled_sketches")):
        try:
            _check_sketches(arr)
        except (TypeError, ValueError) as err:
            raise type(err)(str(err).replace("Y", name, 1)) from None
    if sampled_sketches.shape[1] != sketches.shape[1]:
        raise ValueError(f"sampled_sketches has d_sketch={sampled_sketches.shape[1]} but "
                         f"sketches has {sketches.shape[1]}")
    cos_min = check_real(min_cosine, "min_cosine")
    if not 0.0 < cos_min < 1.0:
        raise ValueError(f"min_cosine must be in (0, 1), got {min_cosine!r}")
    chunk = check_int(chunk, "chunk", minimum=1)
    n = sketches.shape[0]
    try:
        _, V, K, YV = _basis(_Stacked(sketches, sampled_sketches), None, chunk)
    except ValueError as err:
        for arr, name in ((sketches, "sketches"), (sampled_sketches, "sampled_sketches")):
            if not all_finite(arr):
                raise ValueError(f"{name} contains NaN or infinity") from None
        raise ValueError(str(err).replace("Y is", "the sketches and sampled_sketches are", 1)
                         ) from None
    Zp, Zs = YV[:n], YV[n:]
    clusters, zero = _clusters(Zs, cos_min)
    spans, members, aside = [], [], [zero]
    for idx in clusters:
        _, sv, Wt = np.linalg.svd(Zs[idx], full_matrices=False)
        r = _choose_rank(sv)
        if len(idx) <= r:
            aside.append(idx)
            continue
        spans.append(Wt[:r])
        members.append(idx)
    if len(aside) > 1:
        warnings.warn(f"{len(aside) - 1} clusters of sampled_sketches have no more members than "
                      "their rank (they may hold part of an object's words only) and are left "
                      f"unassigned: sample more sketches (or lower min_cosine={cos_min:g}, if "
                      "it splits objects)", RuntimeWarning, stacklevel=2)
    B = np.concatenate(spans) if spans else np.empty((0, K))
    overlap = ("they do not hold one object each (made with tuple_sampling=1, of a fixed "
               f"tree?), or min_cosine={cos_min:g} splits one object's sketches")
    if B.shape[0] > K:
        raise ValueError(f"the objects of sampled_sketches span {B.shape[0]} directions in a "
                         f"row space of {K}: {overlap}")
    if spans:
        _, sB, Wt = np.linalg.svd(B, full_matrices=True)
        margin = float(sB[-1])
    else:
        Wt, margin = np.eye(K), 1.0
    if margin < OVERLAP_FLOOR:
        raise ValueError(f"two objects' spans in sampled_sketches overlap (smallest singular "
                         f"value {margin:.2g}): {overlap}")
    _check_shared(Zp, spans)
    unassigned = Wt[B.shape[0]:]
    coordinates = np.linalg.solve(np.concatenate([B, unassigned]).T, Zp.T).T
    if not spans or (len(spans) == 1 and not unassigned.shape[0]):
        warnings.warn(f"sampled_sketches hold {len(spans)} object(s) and nothing else: nothing "
                      "is separated (were they made with tuple_sampling=1?)", RuntimeWarning,
                      stacklevel=2)
    return ObjectSeparation(V, tuple(spans), tuple(members), unassigned,
                            np.sort(np.concatenate(aside)), coordinates, margin)


def _check_shared(Zp: np.ndarray, spans: List[np.ndarray]) -> None:
    """ValueError if an object's span is not in the plain sketches' row space (principal
    cosine below ``SHARED_FLOOR``). Skipped when the plain sketches are not low-rank (as many
    independent sketches as samples: then their row space need not hold every word)."""
    _, sp, Pt = np.linalg.svd(Zp, full_matrices=False)
    rank = _choose_rank(sp)
    if rank >= Zp.shape[0]:
        return
    P = Pt[:rank]
    for o, span in enumerate(spans):
        cosine = float(np.linalg.svd(span @ P.T, compute_uv=False)[0]) if rank else 0.0
        if cosine < SHARED_FLOOR:
            raise ValueError(f"object {o} of sampled_sketches is not in the sketches' row space "
                             f"(largest principal cosine {cosine:.2g}): made with another "
                             "Sketcher, or of another network?")


class _Stacked:
    """The rows of two sketch arrays read as one ``(S + S', d)`` array, a block at a time (for
    :func:`~recsketch.network.unmixing._basis`, which reads ``Y[rows, columns]`` with unit-step
    slices only): neither array is copied whole."""

    def __init__(self, top: np.ndarray, bottom: np.ndarray):
        self._top, self._bottom = top, bottom
        self.shape = (top.shape[0] + bottom.shape[0], top.shape[1])
        self.ndim = 2
        self.size = self.shape[0] * self.shape[1]
        self.dtype = np.result_type(top.dtype, bottom.dtype)

    def __array__(self, dtype: DTypeLike = None, copy: object = None) -> np.ndarray:
        # all of it at once: only for all_finite's arrays of at most its chunk of elements
        return self[:, :] if dtype is None else self[:, :].astype(dtype)

    def __getitem__(self, key: Tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        lo, hi, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("only unit-step row slices")
        n = self._top.shape[0]
        out = [self._top[min(lo, n):min(hi, n), cols],
               self._bottom[max(lo - n, 0):max(hi - n, 0), cols]]
        return np.concatenate([np.asarray(x, self.dtype) for x in out])


def _clusters(Z: np.ndarray, cos_min: float, rows: int = 1024
              ) -> Tuple[List[np.ndarray], np.ndarray]:
    """(connected components of "cosine > ``cos_min``" over the rows of ``Z``, each as sorted
    indices in order of its first member; the rows at rounding level, below ``RANK_FLOOR`` of
    the largest, which belong to none)."""
    norms = np.linalg.norm(Z, axis=1)
    top = norms.max() if norms.size else 0.0
    live = np.flatnonzero(norms > RANK_FLOOR * top) if top > 0 else np.empty(0, np.intp)
    zero = np.setdiff1d(np.arange(len(norms)), live)
    U = Z[live] / norms[live, None]
    m = len(live)
    linked = np.empty((m, m), bool)
    for lo in range(0, m, rows):
        linked[lo:lo + rows] = U[lo:lo + rows] @ U.T > cos_min
    label = np.full(m, -1)
    out: List[np.ndarray] = []
    for start in range(m):
        if label[start] >= 0:
            continue
        label[start] = len(out)
        frontier = np.array([start])
        while frontier.size:
            reach = np.flatnonzero(linked[frontier].any(axis=0) & (label < 0))
            label[reach] = len(out)
            frontier = reach
        out.append(live[np.flatnonzero(label == len(out))])
    return out, zero
