"""Argument checks shared by the public API: each error names the offending argument."""

from __future__ import annotations

import itertools
import numbers
from typing import Optional, Tuple

import numpy as np

from ._native import _core

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_int(value: object, name: str, *, minimum: Optional[int] = None,
              maximum: Optional[int] = None) -> int:
    """Return ``value`` as an ``int``; TypeError if it is not an integer, ValueError if out of range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {out}")
    return out


def check_flag(value: object, name: str) -> bool:
    """A flag is True/False or a NumPy bool, not any object with a truth value (as in the native
    core): TypeError otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_real(value: object, name: str) -> float:
    """Return ``value`` as a float: the one rule for real scalars, in the Python layer and the
    native core alike (cpp/bindings/scalars.hpp, real_arg). Any ``numbers.Real`` is accepted
    (int, float, NumPy integers and floats, ``fractions.Fraction``: rounded to the nearest
    float64, as ``float()`` does); TypeError for a bool, a complex, a string, a
    ``decimal.Decimal`` (not a ``numbers.Real``: Python keeps it apart from floats) or anything
    else; ValueError if it is beyond the range of float64. Finiteness and range are the
    caller's checks."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is out of range, got {value!r}") from None


def check_fraction(value: object, name: str, *, upper: float = 1.0) -> float:
    """Return ``value`` as a float in (0, upper]; TypeError if it is not a real number
    (:func:`check_real`), ValueError if out of range (NaN included)."""
    out = check_real(value, name)
    if not 0.0 < out <= upper:
        raise ValueError(f"{name} must be in (0, {upper}], got {value!r}")
    return out


def reals_as_float(arr: np.ndarray) -> np.ndarray:
    """An object array whose elements are all real numbers (``numbers.Real``, not bool:
    ``fractions.Fraction``, Python ints beyond int64, ...) as float64, element by element (the
    rule of :func:`check_real`); any other array unchanged, for the caller's dtype check (a
    Decimal, complex or string is not a ``numbers.Real`` and stays object)."""
    if arr.dtype != object or arr.size == 0:
        return arr
    flat = arr.ravel().tolist()
    if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in flat):
        return arr
    try:
        return np.array([float(v) for v in flat], dtype=np.float64).reshape(arr.shape)
    except OverflowError:
        return arr


def holds_bool(x: object) -> bool:
    """Whether ``x`` (what ``numpy.asarray`` would read: nested lists and tuples of scalars or
    arrays) holds a bool anywhere. NumPy reads ``[True, 1.0]`` as floats, so the converted
    dtype cannot tell; a bool is not a real number (:func:`check_real`), alone or mixed."""
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "b" or (x.dtype == object and any(map(holds_bool, x.flat)))
    if isinstance(x, (list, tuple)):
        types = set(map(type, x))   # one pass in C over a long flat list of numbers
        if types and all(issubclass(t, (list, tuple)) for t in types):
            # rows: the types of all their elements in one pass too (a Python call per row
            # cost 5x numpy.asarray on 300000 rows of 3)
            inner = set(map(type, itertools.chain.from_iterable(x)))
            if all(issubclass(t, _PLAIN_NUMBERS) and not issubclass(t, bool) for t in inner):
                return False
        if any(issubclass(t, (bool, np.bool_)) for t in types):
            return True
        if any(not issubclass(t, _PLAIN_NUMBERS) for t in types):
            return any(map(holds_bool, x))
        return False
    return isinstance(x, (bool, np.bool_)) or _bool_array_like(x)


# Element types that hold no bool: nothing inside them to look at.
_PLAIN_NUMBERS = (int, float, complex, str, bytes, np.number)


def _bool_array_like(x: object) -> bool:
    """Whether ``x`` is an array of another library that NumPy reads (``__array__``) and whose
    dtype is bool: a 0-d torch bool tensor in a list of floats converts to 1.0 silently. Read
    from its dtype where it has one, so that nothing is computed or copied to tell."""
    if not hasattr(x, "__array__"):
        return False
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return np.asarray(x).dtype.kind == "b"
    try:
        return np.dtype(dtype).kind == "b"
    except TypeError:           # torch.bool and the like: not a NumPy dtype
        return str(dtype).rsplit(".", 1)[-1].strip("<>'\" ").endswith("bool")


def check_real_dtype(arr: np.ndarray, name: str) -> None:
    """TypeError naming ``name`` unless ``arr`` has a float or integer dtype: bools, complex,
    strings and objects are refused rather than cast (NumPy would drop the imaginary parts,
    parse the strings, call each ``__float__``)."""
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of numbers (a float or integer dtype), got "
                        f"dtype {arr.dtype}")


def as_real_array(x: object, name: str) -> np.ndarray:
    """``x`` as an ndarray: an ndarray as it is (its dtype and layout are the caller's checks,
    :func:`check_real_dtype` among them), anything else through ``numpy.asarray`` as float64.
    TypeError naming ``name`` for what is not an array of real numbers: strings, None, ragged
    lists, bools (also beside numbers: :func:`holds_bool`), complex or object values (NumPy
    would parse the strings, drop the imaginary parts, call ``__float__``)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers ({exc})") from None
    arr = reals_as_float(arr)
    check_real_dtype(arr, name)
    if holds_bool(x):
        raise TypeError(f"{name} must be an array of numbers, got a {type(x).__name__} holding "
                        f"a bool (which NumPy would read as 0 or 1)")
    return arr.astype(np.float64, copy=False)


def as_finite_real_array(x: object, name: str, ndim: int, *, arrays_only: bool = False,
                         min_shape: Tuple[int, ...] = (1, 1), to_float64: bool = True
                         ) -> np.ndarray:
    """``x`` as a finite real array of ``ndim`` dimensions: the one check of the network
    functions' array arguments. TypeError naming ``name`` unless it is an array of real
    numbers (:func:`as_real_array`, :func:`check_real_dtype`; with ``arrays_only`` a numpy
    array, nothing converted); ValueError unless it has ``ndim`` dimensions, at least
    ``min_shape[i]`` entries along axis ``i`` (``(1, 1)``: non-empty; ``(1, 0)``: at least one
    row; ``(0,)``: may be empty) and no NaN/inf (checked in chunks, :func:`all_finite`).
    Returned as float64 (``to_float64``) or in its own dtype."""
    if arrays_only and not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    arr = as_real_array(x, name)
    check_real_dtype(arr, name)
    low = tuple(min_shape[:ndim]) + (0,) * (ndim - len(min_shape))
    if arr.ndim != ndim or any(n < m for n, m in zip(arr.shape, low)):
        need = ("" if not any(low) else " and non-empty" if all(low)
                else " with at least one row")
        raise ValueError(f"{name} must be {ndim}-D{need}, got shape {arr.shape}")
    if to_float64:
        arr = arr.astype(np.float64, copy=False)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def as_sketches(x: object, name: str, width: int) -> np.ndarray:
    """``x`` as a float32/float64 array ``(width,)`` or ``(n, width)`` (:func:`as_real_array`;
    layout and finiteness are the caller's checks): TypeError or ValueError naming ``name``."""
    arr = as_real_array(x, name)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    if arr.ndim not in (1, 2) or arr.shape[-1] != width:
        raise ValueError(f"{name} must have shape ({width},) or (n, {width}), got {arr.shape}")
    return arr


def all_finite(arr: np.ndarray, chunk: int = 1 << 22) -> bool:
    """Whether every element of ``arr`` (1-D or 2-D) is finite, checked in blocks of at most
    ``chunk`` elements: ``np.isfinite`` of the whole array would hold a bool per element (8 GiB
    for a broadcast view of 2**33 elements the caller never materialised)."""
    if arr.size <= chunk:
        return bool(np.isfinite(arr).all())
    a2 = arr.reshape(1, -1) if arr.ndim == 1 else arr
    rows, cols = a2.shape
    per_row = max(1, chunk // cols)
    per_col = min(cols, chunk)
    for r0 in range(0, rows, per_row):
        for c0 in range(0, cols, per_col):
            if not np.isfinite(a2[r0:r0 + per_row, c0:c0 + per_col]).all():
                return False
    return True


# Largest d_sketch of any family (block and row indices stay within 32 bits in the core).
MAX_D_SKETCH: int = int(_core.MAX_D_SKETCH)

# Largest tuple position i of R[i] (position keys are signed 64-bit in the core).
MAX_POSITION = 2**63 - 1

# Largest num_threads accepted anywhere (the native core refuses more, see cpp/bindings/arrays.hpp):
# OpenMP runtimes abort or crash when asked for thousands of threads.
MAX_NUM_THREADS: int = int(_core.MAX_NUM_THREADS)


def check_num_threads(num_threads: Optional[int]) -> int:
    """None means every available thread (passed to the core as 0); otherwise an integer in
    ``[1, MAX_NUM_THREADS]`` (256)."""
    if num_threads is None:
        return 0
    return check_int(num_threads, "num_threads", minimum=1, maximum=MAX_NUM_THREADS)


def as_float_batch(x: object, name: str, d: int, *, allow_short: bool = False
                   ) -> Tuple[np.ndarray, bool]:
    """Check a vector (m,) or a batch of row vectors (n, m) for a d x d matrix.

    Returns the array as 2-D and whether the input was 1-D. Arrays must be float32 or float64,
    C-contiguous and aligned (no silent copies); other sequences are converted with
    ``numpy.asarray``. m must equal d unless ``allow_short`` (then 1 <= m <= d). NaN and
    infinity are rejected by the core.
    """
    arr = as_real_array(x, name)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be a vector (m,) or a batch (n, m), got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass numpy.ascontiguousarray({name})")
    if not arr.flags.aligned:
        raise ValueError(f"{name} must be aligned to its dtype; numpy.array({name}) makes an "
                         "aligned copy")
    m = arr.shape[-1]
    if allow_short:
        if not 1 <= m <= d:
            raise ValueError(f"{name} has length {m}; a short vector needs 1 <= length <= d_sketch={d}")
    elif m != d:
        raise ValueError(f"{name} has length {m}, expected d_sketch={d}")
    return (arr.reshape(1, m) if arr.ndim == 1 else arr), arr.ndim == 1
