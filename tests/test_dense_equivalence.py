"""to_dense against the independent reference (tests/reference.py): every entry of block-sparse
module and position matrices over sizes, densities and seeds (including a seed above 2**63), at
several thread counts; orthogonal matrices at one and two threads."""

import numpy as np
import pytest

import recsketch as rs

import reference

SIZES = [(360, 36, 1.0), (360, 36, 0.3), (1014, 39, 0.2), (1008, 48, 0.05), (1008, 48, 0.02)]
SEEDS = [0, 7, 2**63 + 5]


@pytest.mark.parametrize("d, b, q", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_block_sparse_to_dense_matches_the_reference(d, b, q, seed):
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed)
    for R in (sk.module_matrix("m", 1), sk.position_matrix(3)):
        expected = reference.block_sparse_dense(sk.seed, R.key, d, b, sk.density)
        one = R.to_dense(num_threads=1)
        np.testing.assert_array_equal(one, expected)
        for threads in (2, 3, 7):   # the same bits at any thread count
            assert R._native.dense(threads).tobytes() == one.tobytes()
        assert R.to_scipy(format="csc").toarray().tobytes() == one.tobytes()


@pytest.mark.parametrize("d", [256, 1024])
def test_orthogonal_to_dense_matches_the_reference(d):
    sk = rs.Sketcher(d, family="orthogonal", seed=3)
    R = sk.position_matrix(1)
    expected = reference.orthogonal_dense(sk.seed, R.key, d)
    one = R.to_dense(num_threads=1)
    np.testing.assert_allclose(one, expected, rtol=0, atol=1e-12)
    assert R.to_dense(num_threads=2).tobytes() == one.tobytes()
