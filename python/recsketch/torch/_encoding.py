"""From a layer's activations to nonnegative unit attributes and back (NumPy only).

The attribute of a layer's object is built in three documented steps:

1. *reduce* the output of one input row to a vector of ``width`` numbers (done by the capture:
   spatial mean of a convolution map, token mean of a sequence, else flattened);
2. if ``width`` is too long for the sketch, *fold* it to ``folded`` numbers with a seeded
   count sketch: coordinate ``i`` goes to bucket ``h(i)`` with sign ``s(i)``
   (``y[j] = sum_{h(i) = j} s(i) v[i]``; ``h`` is a seeded permutation taken modulo
   ``folded``, so buckets differ in size by at most one). Inner products are preserved in
   expectation over the seed, and ``s(i) y[h(i)]`` is an unbiased read-back of ``v[i]``.
   The permutation and the signs come from a splitmix64 hash of (seed, layer name, i), not
   from a NumPy generator's stream, so a capture's attributes do not change with the NumPy
   version;
3. *split* signed values into ``[relu(y), relu(-y)]`` (doubling the length) and scale to unit
   norm. A nonnegative layer captured with ``signed=False`` skips the split.

:meth:`LayerEncoding.decode` undoes steps 3 and 2: the recovered vector lives in the layer's
reduced activation space, up to one positive scale factor (lost to the normalisation).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = ["LayerEncoding", "fold_width"]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of every entry of a uint64 array (wrapping arithmetic)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fold_width(width: int, signed: bool, d_sketch: Optional[int]) -> int:
    """Length after step 2: ``width`` if the attribute fits in ``d_sketch``, else the largest
    length whose (split) attribute does."""
    factor = 2 if signed else 1
    if d_sketch is None or factor * width <= d_sketch:
        return width
    return max(1, d_sketch // factor)


@dataclass(frozen=True)
class LayerEncoding:
    """How one layer's reduced activations become attributes (see the module docstring)."""

    layer: str
    width: int                 # reduced activation length
    signed: bool               # split into positive and negative parts
    folded: int                # length after the seeded fold (== width when not folded)
    seed: int = 0
    _bucket: np.ndarray = field(init=False, repr=False, compare=False)
    _sign: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.folded < self.width:
            # The layer name enters the key so that two folded layers use different maps.
            key = _splitmix64(np.array([self.seed], dtype=np.uint64))[0] ^ np.uint64(
                zlib.crc32(self.layer.encode()))
            h = _splitmix64(key + np.arange(self.width, dtype=np.uint64))
            # rank of i among the hashes: a permutation (ties broken by index)
            rank = np.empty(self.width, dtype=np.int64)
            rank[np.argsort(h >> np.uint64(1), kind="stable")] = np.arange(self.width)
            bucket = rank % self.folded
            sign = (h & np.uint64(1)).astype(np.float64) * 2.0 - 1.0
        else:
            bucket = np.arange(self.width)
            sign = np.ones(self.width)
        object.__setattr__(self, "_bucket", bucket)
        object.__setattr__(self, "_sign", sign)

    @property
    def is_folded(self) -> bool:
        return self.folded < self.width

    @property
    def dim(self) -> int:
        """Attribute length."""
        return self.folded * (2 if self.signed else 1)

    def fold(self, v: np.ndarray) -> np.ndarray:
        """Step 2 on rows ``(n, width)`` -> ``(n, folded)``."""
        if not self.is_folded:
            return v
        out = np.zeros((v.shape[0], self.folded))
        np.add.at(out.T, self._bucket, (v * self._sign).T)
        return out

    def encode(self, v: np.ndarray) -> np.ndarray:
        """Rows ``(n, width)`` of reduced activations -> ``(n, dim)`` attributes, unit norm,
        or all zero for an all-zero row (such a row produces no object)."""
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.width:
            raise ValueError(f"layer {self.layer!r}: expected activations of width "
                             f"{self.width}, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"layer {self.layer!r}: the activations contain NaN or infinity")
        y = self.fold(v)
        if self.signed:
            y = np.concatenate([np.maximum(y, 0.0), np.maximum(-y, 0.0)], axis=1)
        elif np.any(y < 0):
            raise ValueError(f"layer {self.layer!r}: negative activations (min {y.min()!r}) "
                             "with signed=False; capture it with signed=True")
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        return np.divide(y, norm, out=np.zeros_like(y), where=norm > 0)

    def decode(self, attributes: Any) -> np.ndarray:
        """An attribute vector (or rows of them) back to the reduced activation space.

        Undoes the split (``positive - negative``) and the fold (``s(i) y[h(i)]``, an
        estimate when folded). The scale is lost: the result is the activations up to one
        positive factor per row."""
        x = np.asarray(attributes, dtype=np.float64)
        one = x.ndim == 1
        x = x.reshape(1, -1) if one else x
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"layer {self.layer!r}: attributes have length {self.dim}, got "
                             f"shape {np.shape(attributes)}")
        y = x[:, :self.folded] - x[:, self.folded:] if self.signed else x
        v = y[:, self._bucket] * self._sign if self.is_folded else y
        return v[0] if one else v
