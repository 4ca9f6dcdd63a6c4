"""Seeded random matrices of a Sketcher, applied by the native core and never held densely."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

import numpy as np

from ._checks import as_float_batch, check_int, check_num_threads
from .alloc import alloc_limit, check_alloc
from ._native import _core

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse

__all__ = ["RandomMatrix"]

# Materialising more than the allocation limit (recsketch.alloc_limit(), default max(4 GiB, half
# the memory): to_dense, or to_scipy, which counts a block-sparse matrix's nonzeros first) is
# refused: use the products instead.
# Columns of an orthogonal matrix are generated this many bytes (float64) at a time, so that
# materialising it holds little more than the result.
_CHUNK_BYTES = 32 << 20

_Native = Union["_core.BlockSparseMatrix", "_core.OrthogonalMatrix"]


class RandomMatrix:
    """A ``d_sketch x d_sketch`` random matrix, a pure function of (family, seed, role).

    Obtain one from :meth:`recsketch.Sketcher.module_matrix` or
    :meth:`recsketch.Sketcher.position_matrix`. Products accept a vector ``(d,)`` or a batch of
    row vectors ``(n, d)``, float32 or float64, C-contiguous, and return the same dtype. Sums run
    in float64 whatever the dtype, and the result is bit-identical for any ``num_threads``.

    ``R @ x`` follows NumPy: ``x`` of shape ``(d,)`` or ``(d, k)`` (columns are vectors).
    For a batch of row vectors ``X`` of shape ``(n, d)`` use ``R.matvec(X)`` (same as
    ``X @ R.T``) and ``R.rmatvec(X)`` (same as ``X @ R``).
    """

    __slots__ = ("_native", "_d", "_family", "_role", "__weakref__")
    # Makes ``ndarray @ R`` defer to __rmatmul__ instead of NumPy treating R as an object.
    __array_ufunc__ = None

    def __init__(self, native: _Native, d_sketch: int, family: str, role: Tuple[Any, ...]):
        self._native = native
        self._d = d_sketch
        self._family = family
        self._role = role

    # -- description -----------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, int]:
        return (self._d, self._d)

    @property
    def family(self) -> str:
        return self._family

    @property
    def role(self) -> Tuple[Any, ...]:
        """``("module", name, k)`` or ``("position", i)``."""
        return self._role

    @property
    def key(self) -> int:
        """The 64-bit key derived from the role (stable across processes and machines)."""
        return int(self._native.key)

    @property
    def seed(self) -> int:
        return int(self._native.seed)

    @property
    def T(self) -> "_Transposed":
        """The transpose, as an operator: ``R.T @ y`` is ``R.rmatvec(y)``."""
        return _Transposed(self)

    def __repr__(self) -> str:
        return f"RandomMatrix(role={self._role!r}, family={self._family!r}, shape={self.shape})"

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        """Pickle as the generating parameters (a few numbers), never the matrix itself."""
        native = self._native
        params = ((int(native.block_size), float(native.density))
                  if self._family == "block_sparse" else None)
        return (_rebuild, (self._d, self._family, params, int(native.seed), int(native.key),
                           self._role))

    # -- products --------------------------------------------------------------------------
    def _apply(self, x: Any, *, transpose: bool, half: bool, short: bool,
               num_threads: Optional[int]) -> np.ndarray:
        name = "y" if transpose else "x"
        batch, was_1d = as_float_batch(x, name, self._d, allow_short=short)
        out = self._native.apply(batch, transpose, half, check_num_threads(num_threads))
        return out[0] if was_1d else out

    def matvec(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        """``R x`` for a vector ``(d,)`` or each row of a batch ``(n, d)``.

        Raises TypeError for a non-float dtype, ValueError for a wrong shape, a non-contiguous
        array, NaN or infinity.
        """
        return self._apply(x, transpose=False, half=False, short=False, num_threads=num_threads)

    def rmatvec(self, y: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        """``R^T y`` for a vector ``(d,)`` or each row of a batch ``(n, d)``."""
        return self._apply(y, transpose=True, half=False, short=False, num_threads=num_threads)

    def half(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        """``P(R) x = (x + R x) / 2``, the map applied to every input of a tuple sketch."""
        return self._apply(x, transpose=False, half=True, short=False, num_threads=num_threads)

    def half_T(self, y: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        """``P(R)^T y = (y + R^T y) / 2``."""
        return self._apply(y, transpose=True, half=True, short=False, num_threads=num_threads)

    def apply_short(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        """``R [x; 0]`` for a short vector ``(m,)`` or batch ``(n, m)`` with ``m <= d``.

        Equal to ``R.matvec`` of the zero-padded input, at a cost proportional to ``m``: this
        is how attribute vectors, shorter than the sketch, enter it. Returns shape ``(d,)`` or
        ``(n, d)``.
        """
        return self._apply(x, transpose=False, half=False, short=True, num_threads=num_threads)

    def __matmul__(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim == 1:
            return self.matvec(np.ascontiguousarray(arr))
        if arr.ndim == 2:
            if arr.shape[0] != self._d:
                raise ValueError(
                    f"R @ X multiplies the columns of X (NumPy semantics) and needs "
                    f"X.shape[0] == {self._d}, got {arr.shape}; for a batch of row vectors "
                    f"use R.matvec(X) or X @ R.T")
            return self.matvec(np.ascontiguousarray(arr.T)).T
        raise ValueError(f"R @ x needs a 1-D or 2-D array, got shape {arr.shape}")

    def __rmatmul__(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim not in (1, 2):
            raise ValueError(f"x @ R needs a 1-D or 2-D array, got shape {arr.shape}")
        return self.rmatvec(np.ascontiguousarray(arr))

    # -- materialisation, for tests and interoperability ---------------------------------------
    def to_scipy(self, dtype: Any = np.float64, *, columns: Optional[int] = None,
                 format: str = "csr") -> "scipy.sparse.spmatrix":
        """The matrix as a SciPy sparse matrix (``dtype`` float64 or float32). Needs SciPy.

        ``columns=m`` gives only the first ``m`` columns, shape ``(d, m)``, generating no
        other column: the part of ``R`` that :meth:`apply_short` uses for inputs of length
        ``m``. ``format`` is ``"csr"`` (default) or ``"csc"``; the block-sparse family is
        generated column by column, so ``"csc"`` skips a conversion.
        """
        import scipy.sparse as sp

        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        if format not in ("csr", "csc"):
            raise ValueError(f"format must be 'csr' or 'csc', got {format!r}")
        m = self._d if columns is None else check_int(columns, "columns", minimum=0,
                                                       maximum=self._d)
        if self._family == "orthogonal":
            return self._orthogonal_scipy(dt, m, format)
        # refused before anything of the size of the result is allocated (CSR is converted
        # from CSC: both are held at once). The native csc keeps its own count of each
        # column's blocks (one int64 each) while it fills the arrays; the count made here
        # is freed before csc runs, and alone was checked by _block_sparse_nnz.
        held = ("csc",) if format == "csc" else ("csc", "csr")
        # counting the exact nonzeros walks every column a second time, so it is done only
        # when the dense bound (d nonzeros a column) does not already fit
        nnz = self._d * m
        if self._scipy_bytes(dt, m, nnz, *held, work=8 * m)[1] > alloc_limit():
            nnz = self._block_sparse_nnz(m)
        self._check_scipy_bytes(dt, m, nnz, *held, work=8 * m)
        data, indices, indptr = self._native.csc(dt == np.float64, 0, m)
        out = sp.csc_matrix((data, indices, indptr), shape=(self._d, m))
        return out if format == "csc" else out.tocsr()

    def _check_scipy_bytes(self, dt: np.dtype, m: int, nnz: int, *formats: str,
                           work: int = 0) -> np.dtype:
        """The index dtype of the sparse forms (held at once) of the first ``m`` columns with
        ``nnz`` nonzeros; ValueError, naming the bytes, if they and ``work`` bytes held with
        them would exceed the dense limit."""
        d = self._d
        index, nbytes = self._scipy_bytes(dt, m, nnz, *formats, work=work)
        check_alloc(nbytes, f"the first {m} columns of a {d} x {d} "
                            f"{self._family.replace('_', '-')} matrix have {nnz} nonzeros: "
                            f"to_scipy()", "use fewer columns or the products (matvec, "
                            "apply_short) instead")
        return index

    def _scipy_bytes(self, dt: np.dtype, m: int, nnz: int, *formats: str, work: int = 0
                     ) -> Tuple[np.dtype, int]:
        """(index dtype, bytes) of the sparse forms of the first ``m`` columns with ``nnz``
        nonzeros, held at once, plus ``work`` bytes."""
        d = self._d
        index = np.dtype(np.int32 if max(nnz, d) < 2**31 - 1 else np.int64)
        return index, work + sum(nnz * (dt.itemsize + index.itemsize)
                                 + ((m if f == "csc" else d) + 1) * index.itemsize
                                 for f in formats)

    def _block_sparse_nnz(self, m: int) -> int:
        """Nonzeros of the first ``m`` columns, counted without generating a value (one int64
        per column; refused when that alone would exceed the dense limit)."""
        check_alloc(8 * m, f"to_scipy() of the first {m} columns, to count their nonzeros "
                           f"alone,", "use fewer columns or the products (matvec, apply_short) "
                           "instead")
        return int(self._native.column_counts(0, m).sum()) * int(self._native.block_size)

    def _orthogonal_scipy(self, dt: np.dtype, m: int, format: str) -> "scipy.sparse.spmatrix":
        # Nearly every entry of an orthogonal matrix is nonzero (exact cancellations are dropped at
        # the end): the sparse form stores all d * m of them plus an index each, so it is
        # refused above the dense limit, before anything is allocated.
        import scipy.sparse as sp

        d = self._d
        nnz = d * m
        index = self._check_scipy_bytes(dt, m, nnz, format)
        if format == "csc":
            # column j's values in row order: row j of the (m, d) array
            values = np.empty((m, d), dt)
            self._fill_columns(values, m)
            indices = np.tile(np.arange(d, dtype=index), m)
            indptr = np.arange(0, nnz + 1, d, dtype=index)
            out = sp.csc_matrix((values.reshape(-1), indices, indptr), shape=(d, m))
        else:
            values = np.empty((d, m), dt)
            self._fill_columns(values.T, m)
            indices = np.tile(np.arange(m, dtype=index), d)
            indptr = np.arange(0, nnz + 1, m, dtype=index) if m else np.zeros(d + 1, index)
            out = sp.csr_matrix((values.reshape(-1), indices, indptr), shape=(d, m))
        out.eliminate_zeros()
        return out

    def _fill_columns(self, out: np.ndarray, m: int) -> None:
        """out[j] = column j of R for j < m (``out``: an (m, d) array or view), generated
        _CHUNK_BYTES at a time."""
        step = max(1, _CHUNK_BYTES // (8 * self._d))
        for j0 in range(0, m, step):
            j1 = min(m, j0 + step)
            unit = np.zeros((j1 - j0, self._d))
            unit[np.arange(j1 - j0), np.arange(j0, j1)] = 1.0
            out[j0:j1] = self.matvec(unit)

    def to_dense(self, *, num_threads: Optional[int] = None) -> np.ndarray:
        """The matrix as a dense float64 array, refused (ValueError) above the allocation limit
        (:func:`recsketch.set_alloc_limit`, default max(4 GiB, half the memory)). Written in place: the call holds
        the result and a few MiB besides."""
        d = self._d
        threads = check_num_threads(num_threads)
        check_alloc(d * d * 8, f"to_dense(): a dense {d} x {d} float64 matrix",
                    "use " + ("to_scipy() (sparse), " if self._family == "block_sparse" else
                              "to_scipy(columns=m) for the first m columns, ")
                    + "or the products (matvec, apply_short) instead")
        if self._family == "block_sparse":
            return self._native.dense(threads)
        dense = np.empty((d, d))
        self._fill_columns(dense.T, d)
        return dense

    def column_block_counts(self) -> np.ndarray:
        """Nonzero blocks of each column (block-sparse family only).

        Column ``j`` has squared norm ``counts[j] * block_size / (d_sketch * density)`` exactly.
        """
        if self._family != "block_sparse":
            raise ValueError("column_block_counts is defined for the block_sparse family only")
        return self._native.column_counts()


def _rebuild(d_sketch: int, family: str, params: Optional[Tuple[int, float]], seed: int,
             key: int, role: Tuple[Any, ...]) -> RandomMatrix:
    """Inverse of :meth:`RandomMatrix.__reduce__`: regenerate the matrix from its seed."""
    if family == "orthogonal":
        native: Any = _core.OrthogonalMatrix(d_sketch, seed, key)
    else:
        assert params is not None
        native = _core.BlockSparseMatrix(_core.BlockSparseFamily(d_sketch, *params), seed, key)
    return RandomMatrix(native, d_sketch, family, role)


class _Transposed:
    """``R.T``: an operator view, so that ``R.T @ y`` reads like the mathematics."""

    __slots__ = ("_base",)
    __array_ufunc__ = None

    def __init__(self, base: RandomMatrix):
        self._base = base

    @property
    def shape(self) -> Tuple[int, int]:
        return self._base.shape

    @property
    def T(self) -> RandomMatrix:
        return self._base

    def __matmul__(self, y: Any) -> np.ndarray:
        arr = np.asarray(y)
        if arr.ndim == 1:
            return self._base.rmatvec(np.ascontiguousarray(arr))
        if arr.ndim == 2 and arr.shape[0] == self._base.shape[0]:
            return self._base.rmatvec(np.ascontiguousarray(arr.T)).T
        raise ValueError(f"R.T @ Y needs Y of shape (d,) or (d, k), got {arr.shape}")

    def __rmatmul__(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim not in (1, 2):
            raise ValueError(f"x @ R.T needs a 1-D or 2-D array, got shape {arr.shape}")
        return self._base.matvec(np.ascontiguousarray(arr))

    def __repr__(self) -> str:
        return f"{self._base!r}.T"
