"""R x and P(R) x: recsketch against SciPy CSR of the same matrix, in the same group.

Run: pytest bench --benchmark-only --benchmark-json=bench.json && python bench/report.py bench.json
Ratios (time of the baseline / time of recsketch) are what to read; absolute times on this
shared machine are noisy.
"""

import numpy as np
import pytest

from conftest import SIZES, batch, block_sparse, csr, nnz

import recsketch as rs


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("op", ["Rx", "P(R)x"])
@pytest.mark.parametrize("target", SIZES)
@pytest.mark.parametrize("impl", ["scipy_csr", "recsketch_1thread", "recsketch", "recsketch_cold"])
def test_block_sparse_product(timed, benchmark, impl, target, op, n, walk_cache_off):
    R = block_sparse(target)
    d = R.shape[0]
    x = batch(n, d)
    benchmark.group = f"{op} d={d} n={n}"
    if impl == "scipy_csr":
        A = csr(target)
        xt = x if n == 1 else np.ascontiguousarray(x.T)
        fn = (lambda: A @ xt) if op == "Rx" else (lambda: (xt + A @ xt) * 0.5)
        count = A.nnz
    else:
        threads = 1 if impl == "recsketch_1thread" else None
        if impl == "recsketch_cold":  # no walk cache: every product hashes its walks again
            walk_cache_off()
        fn = (lambda: R.matvec(x, num_threads=threads)) if op == "Rx" else \
             (lambda: R.half(x, num_threads=threads))
        count = nnz(target)
    timed(fn, d, n, nnz=count, batch=n, d=d)


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("family", ["block_sparse", "orthogonal"])
def test_family_product(timed, benchmark, family, n):
    if family == "orthogonal":
        R = rs.Sketcher(16384, family="orthogonal", seed=1).module_matrix("cat", 0)
    else:
        R = block_sparse(16384)
    d = R.shape[0]
    x = batch(n, d)
    benchmark.group = f"family P(R)x d~16k n={n}"
    timed(lambda: R.half(x), d, n, d=d, batch=n)


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("impl", ["scipy_csr", "recsketch"])
def test_transpose_product(timed, benchmark, impl, n):
    R = block_sparse(16384)
    d = R.shape[0]
    y = batch(n, d)
    benchmark.group = f"R^T y d={d} n={n}"
    if impl == "scipy_csr":
        At = csr(16384).T  # CSC view of the same matrix, not timed
        yt = y if n == 1 else np.ascontiguousarray(y.T)
        fn = lambda: At @ yt  # noqa: E731
    else:
        fn = lambda: R.rmatvec(y)  # noqa: E731
    timed(fn, d, n, batch=n, d=d)


def test_gemm_rate(timed, benchmark):
    """This machine's float32 GEMM (NumPy's BLAS, all threads): the yardstick for GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    b = a.copy()
    benchmark.group = "gemm float32 2048"
    timed(lambda: a @ b, 2048, 1, flops=2 * 2048**3)
