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
   on the same nearly orthogonal words (all nonnegative, so their cosine is large), two
   sketches of different objects lie on different words (cosine near the words'
   non-orthogonality, ~0.01 at d = 2^19); the clusters are the connected components of
   "cosine above ``min_cosine``";
2. give each object's span of words: the row space of its cluster (its rank is the dimension
   over which the object's attributes vary, at most attribute length + 1);
3. the plain sketches' coordinates in the direct sum of those spans are unique, so every plain
   sketch splits exactly into one part per object (:meth:`ObjectSeparation.part`): each part
   is that object's words with its own per-sample coefficients, and every other object's
   words removed -- not by a prior, by the sampled sketches.

What no sampled sketch holds (an object never drawn, or drawn fewer times than its span's
dimension) stays in the ``unassigned`` directions: the part of the row space of the plain
sketches orthogonal to every object's span, separated from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

from .._checks import check_int, check_real
from .unmixing import RANK_FLOOR, _basis, _check_sketches, _choose_rank

__all__ = ["ObjectSeparation", "separate_objects"]

# Smallest singular value of the stacked object spans (orthonormal within each object) below
# which two objects' spans are taken as overlapping: distinct objects' words are nearly
# orthogonal (their spans' smallest value is near 1), while a sampled sketch holding two objects
# makes its cluster's span share a direction with theirs exactly (a value at rounding level).
OVERLAP_FLOOR = 1e-3


@dataclass(frozen=True)
class ObjectSeparation:
    """The plain sketches split by object (:func:`separate_objects`).

    ``basis``: ``(d, K)`` orthonormal basis of the joint row space of the sketches and the
    sampled sketches. ``spans``: per object, ``(r_o, K)`` orthonormal rows (coordinates in
    ``basis``) spanning its words; ``members``: per object, the indices of the sampled
    sketches that hold it. ``unassigned``: ``(r_u, K)`` orthonormal rows of the directions in
    no object's span (``r_u = K - sum r_o``). ``coordinates``: ``(S, K)``, every plain sketch
    in the concatenated rows of ``spans`` and then ``unassigned`` (a square, invertible
    system), so that part ``o`` of sketch ``s`` is ``coordinates[s, rows_o] @ spans[o] @
    basis.T``."""

    basis: np.ndarray
    spans: List[np.ndarray]
    members: List[np.ndarray]
    unassigned: np.ndarray
    coordinates: np.ndarray

    @property
    def n_objects(self) -> int:
        return len(self.spans)

    def _rows(self, o: int) -> slice:
        lo = sum(s.shape[0] for s in self.spans[:o])
        return slice(lo, lo + self.spans[o].shape[0])

    def part(self, o: int, dtype: object = np.float64, *, chunk: int = 1 << 16) -> np.ndarray:
        """``(S, d)``: the plain sketches' share of object ``o`` (``0 <= o < n_objects``), or
        of the unassigned directions for ``o == n_objects``, in ``dtype`` (float32/float64),
        formed column chunk by column chunk (the float64 product is never held whole)."""
        n_parts = self.n_objects + (1 if self.unassigned.shape[0] else 0)
        o = check_int(o, "o", minimum=0, maximum=n_parts - 1)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        chunk = check_int(chunk, "chunk", minimum=1)
        if o < self.n_objects:
            Z = self.coordinates[:, self._rows(o)] @ self.spans[o]
        else:
            Z = self.coordinates[:, sum(s.shape[0] for s in self.spans):] @ self.unassigned
        d = self.basis.shape[0]
        out = np.empty((Z.shape[0], d), dt)
        for lo in range(0, d, chunk):
            out[:, lo:lo + chunk] = Z @ self.basis[lo:lo + chunk].T
        return out

    def parts(self, dtype: object = np.float64) -> Iterator[np.ndarray]:
        """Every object's part in order, then the unassigned part if it has any direction; one
        ``(S, d)`` array alive at a time if the caller drops each before the next."""
        for o in range(self.n_objects + (1 if self.unassigned.shape[0] else 0)):
            yield self.part(o, dtype)


def separate_objects(sketches: np.ndarray, sampled: np.ndarray, *, min_cosine: float = 0.25,
                     chunk: int = 1 << 16) -> ObjectSeparation:
    """Split fixed-tree sketches into one part per object, from sampled sketches of the same
    tree that hold one object each (module docstring).

    Parameters
    ----------
    sketches : ndarray ``(S, d)``, float32 or float64
        Plain overall sketches of a fixed tree.
    sampled : ndarray ``(S', d)``, float32 or float64
        Sketches of the same tree with the same Sketcher made with ``tuple_sampling=1`` (any
        inputs, e.g. the same ones with ``sample_seed=range(S')``). An object's span is found
        only if it is held by at least as many sampled sketches as the dimension over which
        its attributes vary (attribute length + 1 at most); each object is held in about its
        path weight times ``2^-depth`` of them.
    min_cosine : float in (0, 1)
        Two sampled sketches whose cosine exceeds it hold the same object (default 0.25:
        measured same-object cosines are above 0.5, different objects' below 0.02 at
        d = 2^19; see the module docstring for why).
    chunk : columns per pass over the sketches.

    Returns
    -------
    ObjectSeparation

    Raises
    ------
    TypeError, ValueError
        Before any work: arrays not 2-D non-empty float32/float64, different ``d``,
        ``min_cosine`` not in (0, 1), ``chunk`` < 1. After the pass that forms the joint Gram
        matrix: NaN/inf, sketches too large or small for float64 or all zero
        (:func:`~recsketch.network.unmixing.sketch_basis`); sampled sketches that do not hold
        one object each (two objects' spans overlap: made without ``tuple_sampling=1``, or a
        graph that is not a fixed tree).

    Memory: a copy of both sets stacked (in the wider dtype), their ``(S + S') ** 2`` Gram
    matrix, the ``(d, K)`` float64 basis, and ``S' ** 2`` booleans for the clustering.
    """
    for arr, name in ((sketches, "sketches"), (sampled, "sampled")):
        try:
            _check_sketches(arr)
        except (TypeError, ValueError) as err:
            raise type(err)(str(err).replace("Y", name, 1)) from None
    if sampled.shape[1] != sketches.shape[1]:
        raise ValueError(f"sampled has d_sketch={sampled.shape[1]} but sketches has "
                         f"{sketches.shape[1]}")
    cos_min = check_real(min_cosine, "min_cosine")
    if not 0.0 < cos_min < 1.0:
        raise ValueError(f"min_cosine must be in (0, 1), got {min_cosine!r}")
    chunk = check_int(chunk, "chunk", minimum=1)
    n = sketches.shape[0]
    _, V, K, YV = _basis(np.concatenate([sketches, sampled]), None, chunk)
    Zp, Zs = YV[:n], YV[n:]
    members = _clusters(Zs, cos_min)
    spans = []
    for idx in members:
        _, sv, Wt = np.linalg.svd(Zs[idx], full_matrices=False)
        spans.append(Wt[:_choose_rank(sv)])
    B = np.concatenate(spans) if spans else np.empty((0, K))
    if B.shape[0] > K:
        raise ValueError(f"the sampled sketches' objects span {B.shape[0]} directions in a row "
                         f"space of {K}: they do not hold one object each (made with "
                         "tuple_sampling=1, of a fixed tree, with the sketches' matrices?)")
    _, sB, Wt = np.linalg.svd(B, full_matrices=True)
    if B.shape[0] and sB[-1] < OVERLAP_FLOOR:
        raise ValueError(f"two objects' spans in the sampled sketches overlap (smallest "
                         f"singular value {sB[-1]:.2g}): they do not hold one object each "
                         "(made with tuple_sampling=1, of a fixed tree?)")
    unassigned = Wt[B.shape[0]:]
    coordinates = np.linalg.solve(np.concatenate([B, unassigned]).T, Zp.T).T
    return ObjectSeparation(V, spans, members, unassigned, coordinates)


def _clusters(Z: np.ndarray, cos_min: float, rows: int = 1024) -> List[np.ndarray]:
    """Connected components of "cosine > ``cos_min``" over the rows of ``Z`` (zero rows and
    rows at rounding level, below ``RANK_FLOOR`` of the largest, belong to none), each as
    sorted indices, in order of their first member."""
    norms = np.linalg.norm(Z, axis=1)
    live = np.flatnonzero(norms > RANK_FLOOR * norms.max())
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
    return out
