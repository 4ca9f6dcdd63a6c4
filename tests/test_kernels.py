"""Every product against the dense NumPy product of to_dense(), both families, both dtypes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recsketch as rs

SKETCHERS = {
    "block_sparse": rs.Sketcher(1008, block_size=42, density=0.25, seed=3),
    "block_sparse_q1": rs.Sketcher(360, block_size=36, density=1.0, seed=4),
    "orthogonal": rs.Sketcher(1024, family="orthogonal", seed=3),
}
TOL = {np.float32: 1e-5, np.float64: 1e-12}
_dense_cache = {}


def dense(name, R):
    key = (name, R.role)
    if key not in _dense_cache:
        _dense_cache[key] = R.to_dense()
    return _dense_cache[key]


def close(got, want, dtype):
    # rtol on the result's scale: single entries of a sum of random signs may be near zero.
    tol = TOL[dtype]
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("name", list(SKETCHERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [None, 1, 3, 4, 8, 13, 29])
def test_products_match_dense(name, dtype, n):
    sk = SKETCHERS[name]
    d = sk.d_sketch
    R = sk.module_matrix("cat", 0)
    D = dense(name, R)
    rng = np.random.default_rng(n or 0)
    shape = (d,) if n is None else (n, d)
    x = rng.standard_normal(shape).astype(dtype)
    x64 = x.astype(np.float64)
    close(R.matvec(x), x64 @ D.T, dtype)
    close(R.rmatvec(x), x64 @ D, dtype)
    close(R.half(x), (x64 + x64 @ D.T) / 2, dtype)
    close(R.half_T(x), (x64 + x64 @ D) / 2, dtype)


@pytest.mark.parametrize("name", list(SKETCHERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 7, 32, 200])
def test_short_vectors_match_dense(name, dtype, m):
    sk = SKETCHERS[name]
    R = sk.module_matrix("wall", 1)
    D = dense(name, R)
    rng = np.random.default_rng(m)
    x = np.abs(rng.standard_normal((5, m))).astype(dtype)
    close(R.apply_short(x), x.astype(np.float64) @ D[:, :m].T, dtype)
    close(R.apply_short(x[0]), D[:, :m] @ x[0].astype(np.float64), dtype)
    # And the short product is the product of the zero-padded vector.
    padded = np.zeros((5, sk.d_sketch), dtype=dtype)
    padded[:, :m] = x
    np.testing.assert_array_equal(R.apply_short(x), R.matvec(padded))


@pytest.mark.parametrize("name", list(SKETCHERS))
def test_operator_syntax_follows_numpy(name):
    sk = SKETCHERS[name]
    R = sk.position_matrix(2)
    D = dense(name, R)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(sk.d_sketch)
    X = rng.standard_normal((sk.d_sketch, 3))  # columns are vectors, as in NumPy
    rows = rng.standard_normal((4, sk.d_sketch))
    close(R @ x, D @ x, np.float64)
    close(R @ X, D @ X, np.float64)
    close(R.T @ x, D.T @ x, np.float64)
    close(R.T @ X, D.T @ X, np.float64)
    close(rows @ R, rows @ D, np.float64)
    close(rows @ R.T, rows @ D.T, np.float64)
    assert R.shape == R.T.shape == (sk.d_sketch, sk.d_sketch)
    assert R.T.T is R


def test_orthogonal_is_orthonormal():
    sk = rs.Sketcher(512, family="orthogonal", seed=11)
    for R in (sk.module_matrix("cat", 0), sk.position_matrix(1)):
        D = R.to_dense()
        np.testing.assert_allclose(D.T @ D, np.eye(512), atol=1e-12)
        x = np.random.default_rng(0).standard_normal(512)
        np.testing.assert_allclose(R.rmatvec(R.matvec(x)), x, atol=1e-12)


def test_orthogonal_matches_the_independent_construction():
    import reference as ref

    sk = rs.Sketcher(256, family="orthogonal", seed=99)
    R = sk.module_matrix("edge", 2)
    np.testing.assert_allclose(R.to_dense(), ref.orthogonal_dense(99, ref.module_key("edge", 2), 256),
                               atol=1e-13)


def test_zero_and_sparse_inputs():
    sk = SKETCHERS["block_sparse"]
    R = sk.module_matrix("cat", 0)
    D = dense("block_sparse", R)
    assert not R.matvec(np.zeros(sk.d_sketch)).any()
    x = np.zeros(sk.d_sketch)
    x[[0, 500, 1007]] = [1.0, -2.0, 0.5]
    close(R.matvec(x), D @ x, np.float64)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 20), m=st.integers(1, 360), seed=st.integers(0, 2**64 - 1),
       q=st.sampled_from([0.05, 0.3, 1.0]), f32=st.booleans())
def test_property_random_shapes(n, m, seed, q, f32):
    sk = rs.Sketcher(360, block_size=36, density=q, seed=seed)
    R = sk.position_matrix(1 + seed % 5)
    D = R.to_dense()
    dtype = np.float32 if f32 else np.float64
    x = np.random.default_rng(seed % 1000).standard_normal((n, m)).astype(dtype)
    close(R.apply_short(x), x.astype(np.float64) @ D[:, :m].T, dtype)
    y = np.random.default_rng(seed % 997).standard_normal((n, 360)).astype(dtype)
    close(R.half_T(y), (y.astype(np.float64) + y.astype(np.float64) @ D) / 2, dtype)
