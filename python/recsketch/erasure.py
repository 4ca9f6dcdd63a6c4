"""Graceful erasure (paper Section 3.1): keep part of a sketch and still answer every query."""

from __future__ import annotations

import math
import numbers
from typing import Any, Tuple, Union

import numpy as np

from ._checks import (FLOAT_DTYPES, MAX_D_SKETCH, all_finite, as_real_array, as_sketches,
                      check_int, check_real)
from .alloc import check_alloc

__all__ = ["ErasedSketch", "erase", "random_mask"]

_MODES = ("prefix", "random")


class ErasedSketch:
    """A sketch (or a batch of sketches) of which only the coordinates ``indices`` are kept.

    Every query of :class:`recsketch.Sketcher` and :func:`recsketch.similarity` accepts it and
    reads it as ``(d / d_kept) * mask * s`` (MATH.md §3.8), which is unbiased; errors grow about
    as ``sqrt(d / d_kept)``. ``values`` holds only the kept coordinates, so an erased sketch
    takes ``d_kept / d`` of the space.

    Its parts are read-only (``values`` and ``indices`` are read-only views): they were checked
    against each other once, when it was made.
    """

    __slots__ = ("_values", "_indices", "_d_sketch", "_mode", "_seed")

    def __init__(self, values: Any, indices: Any, d_sketch: int, mode: str, seed: int = 0):
        """An erased sketch from its parts, as :func:`erase` makes them (and as they can be
        stored): ``values`` ``(d_kept,)`` or ``(n, d_kept)``, float32 or float64 and finite;
        ``indices`` the ``d_kept`` kept coordinates of a ``d_sketch``-dimensional sketch,
        exactly those that ``mode`` keeps (``"prefix"``: ``0 .. d_kept - 1``; ``"random"``:
        :func:`random_mask` of ``seed``). TypeError or ValueError naming the part otherwise."""
        d = check_int(d_sketch, "d_sketch", minimum=1, maximum=MAX_D_SKETCH)
        if not isinstance(mode, str) or mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        seed = check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        idx = np.asarray(indices) if not isinstance(indices, np.ndarray) else indices
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be an array of integers, got dtype {idx.dtype}")
        if idx.ndim != 1 or not 1 <= idx.size <= d:
            raise ValueError(f"indices must be a 1-D array of 1 to d_sketch={d} coordinates, "
                             f"got shape {idx.shape}")
        arr = as_sketches(values, "values", idx.size)   # one row of values per index
        if mode == "prefix":
            want = np.arange(idx.size, dtype=np.int64)
        else:
            want = random_mask(d, idx.size, seed)
        if not np.array_equal(idx, want):
            raise ValueError(f"indices are not the {idx.size} coordinates that mode={mode!r}"
                             + (f" with seed={seed}" if mode == "random" else "")
                             + f" keeps of d_sketch={d}: build erased sketches with "
                             "recsketch.erase, or pass the parts it returned")
        if not all_finite(arr):
            raise ValueError("values contain NaN or infinity")
        # C order, as erase makes them: the queries' sums then run in the same order whatever
        # the layout passed in (a Fortran-ordered batch gave answers 1 ulp apart)
        # a copy: the checks above must hold for good, whatever the caller writes later
        self._set(np.array(arr, order="C", copy=True), want, d, mode, seed)

    def _set(self, values: np.ndarray, indices: np.ndarray, d_sketch: int, mode: str,
             seed: int) -> None:
        self._values = _read_only(values)
        self._indices = _read_only(indices)
        self._d_sketch = d_sketch
        self._mode = mode
        self._seed = seed

    def __reduce__(self) -> Tuple[Any, ...]:
        # through __init__, so that an unpickled one is checked and read-only like any other
        return (type(self), (np.array(self._values), np.array(self._indices), self._d_sketch,
                             self._mode, self._seed))

    @property
    def values(self) -> np.ndarray:
        """The kept coordinates ``(d_kept,)`` or ``(n, d_kept)``, float32 or float64 (a
        read-only view)."""
        return self._values

    @property
    def indices(self) -> np.ndarray:
        """The ``d_kept`` kept coordinates of the full sketch, int64 ascending (read-only)."""
        return self._indices

    @property
    def d_sketch(self) -> int:
        """Dimension of the full sketch."""
        return self._d_sketch

    @property
    def mode(self) -> str:
        """``"prefix"`` or ``"random"``: which coordinates were kept."""
        return self._mode

    @property
    def seed(self) -> int:
        """Seed of the random subset (``mode="random"``; 0 and unused for ``"prefix"``)."""
        return self._seed

    @classmethod
    def _checked(cls, values: np.ndarray, indices: np.ndarray, d_sketch: int, mode: str,
                 seed: int) -> "ErasedSketch":
        """One whose parts the caller has made and checked (:func:`erase`)."""
        out = cls.__new__(cls)
        out._set(values, indices, d_sketch, mode, seed)
        return out

    @property
    def d_kept(self) -> int:
        return int(self.indices.size)

    @property
    def kept_fraction(self) -> float:
        return self.d_kept / self.d_sketch

    @property
    def shape(self) -> Tuple[int, ...]:
        """Shape of the full sketch(es) this stands for: ``(d,)`` or ``(n, d)``."""
        return self.values.shape[:-1] + (self.d_sketch,)

    def to_dense(self) -> np.ndarray:
        """The kept coordinates in place and zeros elsewhere (not rescaled)."""
        check_alloc(math.prod(self.shape) * self.values.dtype.itemsize,
                    f"ErasedSketch.to_dense() of shape {self.shape}")
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out[..., self.indices] = self.values
        return out

    def rescaled(self) -> np.ndarray:
        """``(d / d_kept) * mask * s``: the unbiased stand-in for the full sketch."""
        return self.to_dense() * (self.d_sketch / self.d_kept)

    def __repr__(self) -> str:
        return (f"ErasedSketch(shape={self.shape}, d_kept={self.d_kept}, mode={self.mode!r}"
                + (f", seed={self.seed}" if self.mode == "random" else "") + ")")


def _read_only(arr: np.ndarray) -> np.ndarray:
    """A read-only view of ``arr`` (the array itself stays as writable as it was)."""
    view = arr.view()
    view.flags.writeable = False
    return view


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (same function as the core's ``mix64``)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def random_mask(d: int, d_kept: int, seed: int) -> np.ndarray:
    """The ``d_kept`` coordinates a random erasure keeps: a pure function of (d, d_kept, seed),
    the same on every platform and NumPy version (ranks of a SplitMix64 hash)."""
    # d hashed keys, their order and the mixing temporaries: four d-vectors of 8 bytes.
    check_alloc(32 * d, f"random_mask: ranking d={d} hashed coordinates")
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        keys = _mix64(np.arange(d, dtype=np.uint64) * golden + _mix64(np.array(seed, np.uint64)))
    keep = np.argsort(keys, kind="stable")[:d_kept]
    return np.sort(keep).astype(np.int64)


def erase(s: Any, keep: Union[int, float], mode: str = "prefix", seed: int = 0) -> ErasedSketch:
    """Erase all but part of a sketch ``(d,)`` or of each row of a batch ``(n, d)``.

    Parameters
    ----------
    keep : int or float
        Number of coordinates to keep (int, 1 <= keep <= d) or the fraction to keep
        (float in (0, 1], rounded to the nearest count, at least 1).
    mode : {"prefix", "random"}
        ``prefix`` keeps the first coordinates (the paper's Section 3.1); ``random`` keeps a
        seeded random subset (the abstract), the same subset for every row.
    seed : int
        Seed of the random subset (ignored for ``prefix``).
    """
    if isinstance(s, ErasedSketch):
        raise TypeError("the sketch is already erased; erase the original sketch")
    arr = as_real_array(s, "s")
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"s must have dtype float32 or float64, got {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"s must be a sketch (d,) or a batch (n, d), got shape {arr.shape}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    d = arr.shape[-1]
    if isinstance(keep, (bool, np.bool_)):
        raise TypeError("keep must be an int count or a float fraction")
    if isinstance(keep, numbers.Integral):
        d_kept = check_int(keep, "keep", minimum=1, maximum=d)
    elif isinstance(keep, numbers.Real):
        frac = check_real(keep, "keep")
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"a fractional keep must be in (0, 1], got {frac!r}")
        d_kept = max(1, int(round(frac * d)))
    else:
        raise TypeError(f"keep must be an int count or a float fraction, got {type(keep).__name__}")
    seed = check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
    rows = arr.shape[0] if arr.ndim == 2 else 1
    check_alloc(rows * d_kept * arr.dtype.itemsize + 8 * d_kept,
                f"erase: {rows} x {d_kept} kept coordinates")
    # Only the kept coordinates are read, so only they must be finite.
    if mode == "prefix":
        indices = np.arange(d_kept, dtype=np.int64)
        if not all_finite(arr[..., :d_kept]):
            raise ValueError("s contains NaN or infinity in the kept coordinates")
        values = np.array(arr[..., :d_kept], order="C", copy=True)   # not a view of s
    else:
        indices = random_mask(d, d_kept, seed)
        values = np.ascontiguousarray(arr[..., indices])
        if not all_finite(values):
            raise ValueError("s contains NaN or infinity in the kept coordinates")
    return ErasedSketch._checked(values, indices, d, mode, seed)
