"""The block-sparse kernels' two compiled copies (multiversion.hpp: AVX2 where the CPU has it,
and the baseline ISA) give the same bits, for every panel width, dtype, with and without the
walk cache. The baseline copy is forced through a hidden, process-wide switch."""

import numpy as np
import pytest

import recsketch as rs
from recsketch._native import _core

import reference as ref


@pytest.fixture
def baseline_isa():
    """Sets the process-wide switch for one test, then restores the load-time choice."""
    yield lambda forced: _core._set_baseline_isa(forced)
    _core._set_baseline_isa(False)


def products(R, x, cache):
    rs.set_walk_cache_limit(0)  # empties the cache: the first product below walks R afresh
    if cache:
        rs.set_walk_cache_limit(64 << 20)
    try:
        # With the cache on, the first product records R's walks and the second reads them.
        out = []
        for _ in range(2):
            out += [R.matvec(x, num_threads=2), R.rmatvec(x, num_threads=1), R.half(x),
                    R.half_T(x)]
        return out
    finally:
        rs.set_walk_cache_limit(64 << 20)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cache", [True, False])
def test_baseline_and_dispatched_copies_give_the_same_bits(baseline_isa, dtype, cache):
    p = rs.suggest_block_sparse(1024)
    sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=3)
    rng = np.random.default_rng(7)
    # 13 rows: panels of 8, 4 and 1; one row with zeros (skipped columns).
    x = rng.standard_normal((13, p.d_sketch)).astype(dtype)
    x[5, ::3] = 0
    R = sk.module_matrix("m", 0)
    baseline_isa(False)
    dispatched = products(R, x, cache)
    baseline_isa(True)
    baseline = products(R, x, cache)
    for a, b in zip(dispatched, baseline):
        assert a.dtype == b.dtype == dtype
        assert a.tobytes() == b.tobytes()


def test_baseline_copy_matches_the_independent_generator(baseline_isa):
    # The baseline copy's products against a dense matrix from tests/reference.py, which shares
    # no code with the core.
    d, b, q, seed = 360, 36, 0.3, 7
    R = rs.Sketcher(d, block_size=b, density=q, seed=seed).module_matrix("cat", 1)
    dense = ref.block_sparse_dense(seed, ref.module_key("cat", 1), d, b, q)
    x = np.random.default_rng(0).standard_normal((9, d))
    baseline_isa(True)
    np.testing.assert_allclose(R.matvec(x), x @ dense.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.rmatvec(x), x @ dense, rtol=1e-12, atol=1e-12)
