"""R x and P(R) x: recsketch against SciPy CSR of the same matrix, in the same group.

Run: pytest bench --benchmark-only --benchmark-json=bench.json && python bench/report.py bench.json
Ratios (time of the baseline / time of recsketch) are what to read; absolute times on this
shared machine are noisy. Also here: the orthogonal family's transforms against a NumPy FWHT and
the measured SIMD add rate, and a fresh block-sparse matrix's first product against a warm one
and SciPy's CSR build. On a loaded machine add --benchmark-timer time.process_time (CPU time:
for the multi-threaded rows it sums the threads, spin-waiting included).
"""

import numpy as np
import pytest

from conftest import SIZES, batch, block_sparse, csr, nnz
from real_shapes import numpy_orthogonal

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


# ---- The orthogonal family's transforms -------------------------------------------------------
# R x = H D3 H D2 H D1 x: three Walsh-Hadamard transforms of d log2(d) adds each. The bound is
# those adds at the machine's measured SIMD double add rate (test_simd_add_rate); the baseline
# is the same algebra in NumPy on the same batch, float64 like the kernel, with a vectorised
# reshape-based FWHT (a dense Hadamard matrix, scipy.linalg.hadamard, would cost d^2 per vector).

ADD_PROBE_ROUNDS = 2_000_000


def test_simd_add_rate(benchmark):
    """48 * rounds independent double adds at the WHT kernel's SIMD width, one thread (a few
    ms per round, many rounds: the minimum is the machine's rate, not its load)."""
    benchmark.group = "simd add rate"
    benchmark.extra_info["adds"] = 48 * ADD_PROBE_ROUNDS
    benchmark.pedantic(lambda: rs._core.add_rate_probe(ADD_PROBE_ROUNDS), rounds=20,
                       iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("d", [4096, 16384, 65536])
@pytest.mark.parametrize("impl", ["numpy_fwht", "recsketch_portable", "recsketch_1thread",
                                  "recsketch"])
def test_orthogonal_transform(timed, benchmark, impl, d, n):
    R = rs.Sketcher(d, family="orthogonal", seed=1, dtype="float64").module_matrix("cat", 0)
    x = np.random.default_rng(0).standard_normal((n, d))
    benchmark.group = f"orthogonal R x d={d} n={n}"
    adds = 3 * d * int(np.log2(d)) * n
    if impl == "numpy_fwht":
        # The matrix's sign diagonals from the native object (the public API has no accessor).
        fn = numpy_orthogonal([R._native.signs(r) for r in (1, 2, 3)], d)
        np.testing.assert_allclose(fn(x), R.matvec(x), atol=1e-10)  # the same algebra
        timed(lambda: fn(x), d, n, adds=adds, batch=n, d=d)
        return
    threads = None if impl == "recsketch" else 1
    rs._core.set_wht_path("portable" if impl == "recsketch_portable" else "auto")
    try:
        timed(lambda: R.matvec(x, num_threads=threads), d, n, adds=adds, batch=n, d=d)
    finally:
        rs._core.set_wht_path("auto")


# ---- First (cold) product of a fresh block-sparse matrix --------------------------------------
# A fresh matrix pays its block walk (one hash per nonzero block) in its first product; later
# ones read the walk cache. SciPy needs the matrix built first: its CSR build is timed apart.

_fresh = iter(range(10**9))


def fresh_matrix(target):
    p = rs.suggest_block_sparse(target)
    sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=1)
    return sk.module_matrix(f"fresh{next(_fresh)}", 0)


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("target", [4096, 16384])
@pytest.mark.parametrize("impl", ["scipy_csr", "scipy_csr_build", "recsketch_warm",
                                  "recsketch_first"])
def test_first_product(benchmark, impl, target, n):
    R = block_sparse(target)
    d = R.shape[0]
    x = batch(n, d)
    benchmark.group = f"first product d={d} n={n}"
    benchmark.extra_info.update(batch=n, d=d, nnz=nnz(target))
    rounds = 15 if d < 10000 else 7
    if impl == "scipy_csr":
        A = csr(target)
        xt = x if n == 1 else np.ascontiguousarray(x.T)
        benchmark.pedantic(lambda: A @ xt, rounds=rounds, iterations=1, warmup_rounds=1)
    elif impl == "scipy_csr_build":  # what SciPy pays for a matrix it has never seen
        benchmark.pedantic(lambda M: M.to_scipy(np.float32), rounds=3, iterations=1,
                           setup=lambda: ((fresh_matrix(target),), {}))
    elif impl == "recsketch_warm":
        R.matvec(x, num_threads=1)
        benchmark.pedantic(lambda: R.matvec(x, num_threads=1), rounds=rounds, iterations=1,
                           warmup_rounds=1)
    else:
        benchmark.pedantic(lambda M: M.matvec(x, num_threads=1), rounds=rounds, iterations=1,
                           setup=lambda: ((fresh_matrix(target),), {}))
