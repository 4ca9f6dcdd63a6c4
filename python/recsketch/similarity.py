"""Sketch-to-sketch similarity (paper Theorem 2): the dot product of two sketches."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple, Union

import numpy as np

from ._checks import FLOAT_DTYPES, all_finite, as_real_array
from .alloc import check_alloc
from .erasure import ErasedSketch

__all__ = ["Similarity", "similarity"]


class Similarity(NamedTuple):
    """``dot`` (Theorem 2's estimator) and ``cosine``; floats for two vectors, else (n, m)."""

    dot: Union[float, np.ndarray]
    cosine: Union[float, np.ndarray]


def _parts(s: Any, name: str) -> Tuple[np.ndarray, Optional[np.ndarray], int, bool]:
    if isinstance(s, ErasedSketch):
        v, idx, d = s.values, s.indices, s.d_sketch
    else:
        v = as_real_array(s, name)
        idx, d = None, v.shape[-1] if v.ndim else 0
    if v.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {v.dtype}")
    if v.ndim not in (1, 2):
        raise ValueError(f"{name} must be a sketch (d,) or a batch (n, d), got shape {v.shape}")
    if not all_finite(v):
        raise ValueError(f"{name} contains NaN or infinity")
    return (v.reshape(1, -1) if v.ndim == 1 else v), idx, d, v.ndim == 1


def similarity(s1: Any, s2: Any) -> Similarity:
    """Dot products and cosines between sketches (Theorem 2).

    ``s1`` ``(d,)`` or ``(n, d)``, ``s2`` ``(d,)`` or ``(m, d)``; either may be an
    :class:`ErasedSketch`. Erased sketches are compared on the coordinates both kept, the dot
    product rescaled by ``d / d_common`` (unbiased); the cosine needs no rescaling. Returns
    floats for two vectors and ``(n, m)`` arrays otherwise.

    Theorem 2: sketches with no module in common have ``|dot| = O(1/sqrt d)``; sketches that
    share a module at the same depth have ``dot >= g g' - O(1/sqrt d)`` with ``g = w 2^-(4h-3)``;
    attributes changed by ``eps`` in l2 move an orthogonal-family sketch by at most ``eps / 2``.
    """
    a, ia, da, a1 = _parts(s1, "s1")
    b, ib, db, b1 = _parts(s2, "s2")
    if da != db:
        raise ValueError(f"the sketches have different dimensions ({da} and {db})")
    scale = 1.0
    if ia is not None or ib is not None:
        full_a = np.arange(da) if ia is None else ia
        full_b = np.arange(db) if ib is None else ib
        common, pa, pb = np.intersect1d(full_a, full_b, assume_unique=True, return_indices=True)
        if common.size == 0:
            raise ValueError("the erased sketches share no kept coordinate")
        a, b = a[:, pa], b[:, pb]
        scale = da / common.size
    n, m, k = a.shape[0], b.shape[0], a.shape[1]
    # Four n x m float64 arrays (products, norms' outer product, cosines, rescaled dots) and
    # float64 copies of the compared coordinates.
    check_alloc(4 * 8 * n * m + 8 * (n + m) * k,
                f"similarity: {n} x {m} dot products and cosines over {k} coordinates")
    a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    raw = a64 @ b64.T
    na = np.linalg.norm(a64, axis=1)
    nb = np.linalg.norm(b64, axis=1)
    denom = na[:, None] * nb[None, :]
    cosine = np.divide(raw, denom, out=np.zeros_like(raw), where=denom > 0)
    dot = raw * scale
    if a1 and b1:
        return Similarity(float(dot[0, 0]), float(cosine[0, 0]))
    if a1:
        return Similarity(dot[0], cosine[0])
    if b1:
        return Similarity(dot[:, 0], cosine[:, 0])
    return Similarity(dot, cosine)
