"""The orthogonal family's Walsh-Hadamard kernel: the AVX2 and portable paths give the same bits,
and both match an independent dense construction and a plain NumPy transform."""

import numpy as np
import pytest

import recsketch as rs
from recsketch._native import _core

import reference as ref

# Every power of two up to 2^16: below 16 (portable only), exactly 16 (one in-register pass),
# each split of the remaining levels into radix-8, radix-4 and radix-2 passes, and above the
# 4096-entry cache block (1 to 4 levels that run over the whole vector).
SIZES = [2 ** k for k in range(1, 17)]


@pytest.fixture
def path():
    """Sets the process-wide kernel path for one test, then restores the automatic choice."""
    def use(name):
        _core.set_wht_path(name)
    yield use
    _core.set_wht_path("auto")


def has_avx2():
    try:
        _core.set_wht_path("avx2")
    except ValueError:
        return False
    finally:
        _core.set_wht_path("auto")
    return True


def products(R, x):
    short = np.ascontiguousarray(x[:, : R.shape[0] // 2 + 1])
    return [R.matvec(x), R.rmatvec(x), R.half(x), R.half_T(x), R.apply_short(short)]


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avx2_and_portable_paths_give_the_same_bits(path, d, dtype):
    if not has_avx2():
        pytest.skip("no AVX2 on this machine: only the portable path exists")
    R = rs.Sketcher(d, family="orthogonal", seed=7, dtype=np.dtype(dtype).name).module_matrix("m", 1)
    rng = np.random.default_rng(d)
    # Wide dynamic range, exact zeros and negative zeros: rounding differences would show.
    x = rng.standard_normal((3, d)) * np.exp(rng.uniform(-20, 20, (3, d)))
    x[0, ::3] = 0.0
    x[1, ::5] = -0.0
    x = x.astype(dtype)
    path("portable")
    want = products(R, x)
    path("avx2")
    got = products(R, x)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert np.array_equal(g.view(np.uint8), w.view(np.uint8))


def test_unknown_path_is_rejected():
    with pytest.raises(ValueError, match="portable"):
        _core.set_wht_path("sse9")


def numpy_fwht(x):
    """Unnormalised Walsh-Hadamard transform along the last axis, reshape-based."""
    d = x.shape[-1]
    y = x.reshape(-1, d).copy()
    h = 1
    while h < d:
        y = y.reshape(y.shape[0], -1, 2, h)
        y = np.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], axis=2)
        h *= 2
    return y.reshape(x.shape)


@pytest.mark.parametrize("name", ["auto", "portable"])
@pytest.mark.parametrize("d", [16, 8192])
def test_products_match_an_independent_transform(path, name, d):
    # R = H D3 H D2 H D1 from the reference's sign streams and a NumPy FWHT (no shared code).
    path(name)
    seed, key = 12, ref.position_key(2)
    R = rs.Sketcher(d, family="orthogonal", seed=seed, dtype="float64").position_matrix(2)
    assert R.key == key
    D = [ref.sign_bits(ref.stream_state(seed, key, ref.STREAM_ORTHO, r), d).astype(float)
         for r in (1, 2, 3)]
    x = np.random.default_rng(1).standard_normal((2, d))
    H = lambda v: numpy_fwht(v) / np.sqrt(d)  # noqa: E731
    want = H(D[2] * H(D[1] * H(D[0] * x)))
    np.testing.assert_allclose(R.matvec(x), want, atol=1e-12)
    np.testing.assert_allclose(R.rmatvec(x), D[0] * H(D[1] * H(D[2] * H(x))), atol=1e-12)


def test_small_d_matches_the_dense_reference(path):
    for name in ("auto", "portable"):
        path(name)
        for d in (2, 4, 8, 16, 32, 64):
            R = rs.Sketcher(d, family="orthogonal", seed=5, dtype="float64").module_matrix("a", 0)
            np.testing.assert_allclose(R.to_dense(), ref.orthogonal_dense(5, R.key, d), atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batches_do_not_depend_on_threads_or_batch_composition(dtype):
    d = 2048
    R = rs.Sketcher(d, family="orthogonal", seed=2, dtype=np.dtype(dtype).name).module_matrix("b", 2)
    x = np.random.default_rng(3).standard_normal((37, d)).astype(dtype)
    one = R.matvec(x, num_threads=1)
    assert np.array_equal(R.matvec(x, num_threads=2), one)
    assert np.array_equal(R.matvec(x, num_threads=3), one)
    alone = np.stack([R.matvec(x[i], num_threads=1) for i in (0, 17, 36)])
    assert np.array_equal(alone, one[[0, 17, 36]])


def test_add_rate_probe_counts_its_adds():
    # 48 chains start at 0..47 and add 1e-9 per round: the sum is independent of the SIMD width.
    assert _core.add_rate_probe(1000) == pytest.approx(sum(range(48)) + 48 * 1000 * 1e-9, rel=1e-12)
    with pytest.raises(ValueError, match="rounds"):
        _core.add_rate_probe(-1)
