"""Bad input gets a clear TypeError or ValueError naming the problem."""

import numpy as np
import pytest

import recsketch as rs
from scenes import unit

SK = rs.Sketcher(360, block_size=36, density=0.3, seed=1)
R = SK.module_matrix("cat", 0)


@pytest.mark.parametrize("method", ["matvec", "rmatvec", "half", "half_T", "apply_short"])
def test_bad_arrays(method):
    f = getattr(R, method)
    with pytest.raises(TypeError, match="float32 or float64"):
        f(np.ones(360, dtype=np.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        f(np.ones(360, dtype=np.float16))
    with pytest.raises(ValueError, match="C-contiguous"):
        f(np.ones((360, 4)).T)
    with pytest.raises(ValueError, match="C-contiguous"):
        f(np.ones(720)[::2])
    with pytest.raises(ValueError, match="shape"):
        f(np.ones((2, 2, 360)))
    with pytest.raises(ValueError, match="length"):
        f(np.ones(361))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones(360)
        x[17] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            f(x)
    with pytest.raises(ValueError, match="num_threads"):
        f(np.ones(360), num_threads=0)
    with pytest.raises(TypeError, match="num_threads"):
        f(np.ones(360), num_threads=1.5)


def test_short_vector_limits():
    with pytest.raises(ValueError, match="short vector"):
        R.apply_short(np.ones(0))
    R.apply_short(np.ones(360))  # m == d is fine
    with pytest.raises(ValueError, match="short vector"):
        R.apply_short(np.ones(361))


def test_operator_shape_errors():
    with pytest.raises(ValueError, match="NumPy semantics"):
        R @ np.ones((4, 360))
    with pytest.raises(ValueError):
        R @ np.ones((2, 2, 2))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(d_sketch=360, block_size=35), ValueError, "multiple of 3"),
    (dict(d_sketch=360, block_size=33), ValueError, "too small"),
    (dict(d_sketch=361, block_size=36), ValueError, "not a multiple of block_size"),
    (dict(d_sketch=360, block_size=36, density=0.0), ValueError, "density"),
    (dict(d_sketch=360, block_size=36, density=1.5), ValueError, "density"),
    (dict(d_sketch=360, block_size=36, density=float("nan")), ValueError, "density"),
    (dict(d_sketch=360, block_size=36, density="0.3"), ValueError, "density"),
    (dict(d_sketch=4096), ValueError, "nearest valid size is d_sketch=4095"),
    (dict(d_sketch=360.0), TypeError, "d_sketch"),
    (dict(d_sketch=True), TypeError, "d_sketch"),
    (dict(d_sketch=1), ValueError, "d_sketch"),
    (dict(d_sketch=360, family="dense"), ValueError, "family"),
    (dict(d_sketch=360, seed=-1), ValueError, "seed"),
    (dict(d_sketch=360, seed=2**64), ValueError, "seed"),
    (dict(d_sketch=360, dtype="int32"), ValueError, "dtype"),
    (dict(d_sketch=360, dtype="nonsense"), TypeError, "dtype"),
    (dict(d_sketch=1000, family="orthogonal"), ValueError, "power of two"),
    (dict(d_sketch=1024, family="orthogonal", density=0.1), ValueError, "block_sparse family only"),
])
def test_bad_sketcher_parameters(kwargs, exc, match):
    d = kwargs.pop("d_sketch")
    with pytest.raises(exc, match=match):
        rs.Sketcher(d, **kwargs)


def test_bad_matrix_roles():
    with pytest.raises(ValueError, match="k must be <= 2"):
        SK.module_matrix("cat", 3)
    with pytest.raises(TypeError, match="module name"):
        SK.module_matrix(5, 0)
    with pytest.raises(ValueError, match="empty"):
        SK.module_matrix("", 0)
    with pytest.raises(ValueError, match="i must be >= 1"):
        SK.position_matrix(0)
    with pytest.raises(TypeError, match="i must be an integer"):
        SK.position_matrix(1.0)


def test_dense_materialisation_refuses_huge_matrices():
    big = rs.Sketcher(2**20, family="orthogonal").position_matrix(1)
    with pytest.raises(ValueError, match="GiB"):
        big.to_dense()
    # the orthogonal family's sparse form holds every entry: to_scipy points to no way out
    with pytest.raises(ValueError, match="to_scipy\\(columns=m\\)"):
        big.to_dense()


def test_orthogonal_to_scipy_refuses_huge_matrices_before_allocating():
    import tracemalloc

    import scipy.sparse  # noqa: F401  (imported before the memory is traced)

    R = rs.Sketcher(2**15, family="orthogonal").module_matrix("a", 0)
    tracemalloc.start()
    try:
        # 2**30 nonzeros of 8 + 4 bytes and 2**15 + 1 row pointers of 4: 12 GiB
        with pytest.raises(ValueError, match=r"need 12885032964 bytes \(12\.0 GiB"):
            R.to_scipy()
        with pytest.raises(ValueError, match="orthogonal"):
            R.to_scipy(np.float32, columns=2**14, format="csc")   # 4 GiB + indptr
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak   # refused before anything was allocated
    S = R.to_scipy(np.float32, columns=3, format="csc")   # a few columns are fine
    assert S.shape == (2**15, 3) and S.nnz <= 3 * 2**15
    # an orthogonal matrix's columns have unit norm
    np.testing.assert_allclose(np.sqrt(S.multiply(S).sum(axis=0)), 1.0, rtol=1e-5)


def test_block_sparse_to_scipy_refuses_huge_matrices_before_allocating():
    import tracemalloc

    import scipy.sparse  # noqa: F401  (imported before the memory is traced)

    d = 24576
    # density 1: all d / b blocks of every column are nonzero, b entries each: d per column
    R = rs.Sketcher(d, block_size=96, density=1.0).module_matrix("a", 0)
    csc = d * d * (8 + 4) + (d + 1) * 4        # float64 values, int32 indices and indptr
    csr = d * d * (8 + 4) + (d + 1) * 4        # CSR is converted from CSC: both at once
    counts = 8 * d                             # the native csc's int64 count per column
    # 14563 columns: their CSC arrays alone (4294861712 bytes) fit in 4 GiB; with the count
    # held beside them (116504 bytes) they do not
    m = 14563
    csc_m = m * d * (8 + 4) + (m + 1) * 4
    assert csc_m <= 4 << 30 < csc_m + 8 * m
    big = rs.Sketcher(3 * 2**28, block_size=192).module_matrix("a", 0)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"have {d * d} nonzeros: to_scipy\(\) would need "
                                             rf"{csc + counts} bytes \(6\.8 GiB\), above the "
                                             rf"allocation limit of 4\.0 GiB"):
            R.to_scipy(format="csc")
        with pytest.raises(ValueError, match=rf"would need {csc + csr + counts} bytes"):
            R.to_scipy()
        with pytest.raises(ValueError, match=rf"would need {csc_m + 8 * m} bytes"):
            R.to_scipy(format="csc", columns=m)
        # counting the nonzeros of 2^29 + 1 columns alone takes more than 4 GiB
        with pytest.raises(ValueError, match=rf"to count their nonzeros alone, would need "
                                             rf"{8 * (2**29 + 1)} bytes"):
            big.to_scipy(columns=2**29 + 1)
        with pytest.raises(ValueError, match="columns must be <="):
            big.to_scipy(columns=2**62)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak   # refused before anything of that size was allocated
    # a few columns are fine, and are the matrix's columns
    S = R.to_scipy(np.float32, columns=3, format="csc")
    assert S.shape == (d, 3) and S.nnz == 3 * d
    np.testing.assert_allclose(S.toarray().T, R.matvec(np.eye(3, d)).astype(np.float32))


def test_enc_and_decoder_arguments():
    with pytest.raises(ValueError, match="outside"):
        rs.enc_pattern(360, 1, 1, 360, 36)
    with pytest.raises(ValueError, match="parity"):
        rs.enc_pattern(3, 0, 1, 360, 36)
    with pytest.raises(ValueError, match="too small"):
        rs.decode_blocks(np.ones((2, 33)), 360)
    with pytest.raises(ValueError, match="shape"):
        rs.decode_blocks(np.ones((2, 2, 36)), 360)


def _empty_columns(sk, name, channel, k):
    """Columns among the first k of R[name, channel] with no nonzero entry (dense check)."""
    dense = sk.module_matrix(name, channel).to_dense()
    return [j for j in range(k) if not np.any(dense[:, j])]


def test_matched_read_out_of_an_empty_column_blames_the_matrix():
    # At a small density some columns have no nonzero block (Section 4.3): the attribute or
    # count they would carry is in no sketch. The matched read-out must say so, not divide by 0.
    sk = rs.Sketcher(1020, density=0.1, dtype="float64")
    names = [f"m{k}" for k in range(40)]
    dim = 6
    lost_attr = next(n for n in names if _empty_columns(sk, n, 1, dim)
                     and not _empty_columns(sk, n, 2, 1))
    lost_count = next(n for n in names if _empty_columns(sk, n, 2, 1))
    fine = next(n for n in names if not _empty_columns(sk, n, 1, dim)
                and not _empty_columns(sk, n, 2, 1))
    rng = np.random.default_rng(0)
    g = rs.Graph()
    objs = [g.add(n, unit(rng, dim)) for n in (lost_attr, lost_count, fine)]
    g.set_output([(h, 1 / 3) for h in objs])
    s = sk.sketch(g)
    j = _empty_columns(sk, lost_attr, 1, dim)[0]
    with pytest.raises(ValueError, match=rf"column {j} of R\[{lost_attr!r}, 1\] has no nonzero"):
        sk.attributes(s, lost_attr, weight=1 / 3)
    with pytest.raises(ValueError, match=rf"column {j} of R\[{lost_attr!r}, 1\]"):
        sk.summed_attributes(s, lost_attr, 1 / 3)
    with pytest.raises(ValueError, match=rf"column 0 of R\[{lost_count!r}, 2\] has no nonzero"):
        sk.count(s, lost_count, 1 / 3)
    with pytest.raises(ValueError, match=rf"column 0 of R\[{lost_count!r}, 2\]"):
        sk.mass(s, lost_count)
    # a batch of sketches says the same
    with pytest.raises(ValueError, match="has no nonzero block"):
        sk.count(np.stack([s, s]), lost_count, 1 / 3)
    # other modules of the same sketch and the paper's read-out are unaffected
    assert np.isfinite(sk.count(s, fine, 1 / 3))
    assert np.all(np.isfinite(sk.attributes(s, fine, weight=1 / 3)))
    assert np.isfinite(sk.count(s, lost_count, 1 / 3, method="paper"))
