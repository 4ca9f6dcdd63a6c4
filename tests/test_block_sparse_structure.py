"""Materialised block-sparse matrices against Algorithms 1 and 2 of the paper (Section 4.3)."""

import math

import numpy as np
import pytest

import recsketch as rs
import reference as ref

CONFIGS = [  # (d, b, q, seed)
    (360, 36, 0.3, 7),
    (1008, 42, 0.25, 1),
    (2040, 51, 0.12, 12345),
    (4050, 45, 0.18830577583503663, 2**64 - 1),
]


def matrix(d, b, q, seed, name="cat", k=0):
    return rs.Sketcher(d, block_size=b, density=q, seed=seed).module_matrix(name, k)


@pytest.mark.parametrize("d,b,q,seed", CONFIGS[:3])
def test_bit_identical_to_the_independent_generator(d, b, q, seed):
    R = matrix(d, b, q, seed, "wall", 2)
    expected = ref.block_sparse_dense(seed, ref.module_key("wall", 2), d, b, q)
    assert np.array_equal(R.to_dense(), expected)


def test_golden_entries():
    # Fixed values of one matrix: a change to the generator, the keys or Enc shows up here.
    # They were checked against tests/reference.py, which shares no code with the core.
    R = matrix(360, 36, 0.3, 7, "cat", 1).to_dense()
    rows, cols = np.nonzero(R)
    assert R.shape == (360, 360)
    assert np.count_nonzero(R) == 40032
    assert list(zip(rows[:4].tolist(), cols[:4].tolist())) == [(0, 0), (0, 2), (0, 5), (0, 12)]
    assert np.sign(R[0, :13][R[0, :13] != 0]).tolist() == [1, -1, 1, 1]
    assert R[0, 308] == -0.09622504486493763 == -1 / math.sqrt(360 * 0.3)
    assert R[359, 359] == -0.09622504486493763


@pytest.mark.parametrize("d,b,q,seed", CONFIGS)
def test_every_nonzero_block_follows_algorithm_2(d, b, q, seed):
    R = matrix(d, b, q, seed).to_dense()
    third, L = b // 3, math.ceil(math.log2(d))
    scale = 1 / math.sqrt(d * q)
    n_blocks = d // b
    blocks = R.reshape(n_blocks, b, d)  # blocks[i, :, j] is block i of column j
    nonzero = np.abs(blocks).sum(axis=1) > 0
    # Blocks are all-zero or all-nonzero with |entry| = 1/sqrt(dq).
    vals = blocks.transpose(0, 2, 1)[nonzero]  # (n_nonzero, b)
    assert np.allclose(np.abs(vals), scale, rtol=1e-15)
    signs = np.sign(vals).astype(np.int8)
    u_s, u_c, u_m = signs[:, :third], signs[:, third:2 * third], signs[:, 2 * third:]
    # sigma_m identical across all blocks of all columns up to sign.
    canon_m = u_m * u_m[:, :1]
    assert (canon_m == canon_m[0]).all()
    # sigma_{s,j} identical across the blocks of column j up to sign.
    col_of = np.nonzero(nonzero)[1]
    canon_s = u_s * u_s[:, :1]
    for j in np.unique(col_of)[:50]:
        rows = canon_s[col_of == j]
        assert (rows == rows[0]).all()
    # Enc decodes to j with consistent parity bits: the block's sign g is +1 by construction.
    dec = rs.decode_blocks(signs, d)
    assert (dec.status == rs.BlockStatus.OK).all()
    assert np.array_equal(dec.column, col_of)
    assert (dec.sign == 1).all()
    # The parity bits are f'_m = f_m sign(sigma_m[0]) and f'_s = f_s sign(sigma_s[0]).
    c = u_c * u_c[:, :1]
    assert np.array_equal(c[:, L + 1], u_m[:, 0])
    assert np.array_equal(c[:, L + 2], u_s[:, 0])


@pytest.mark.parametrize("d,b,q,seed", CONFIGS)
def test_block_density_and_column_norms(d, b, q, seed):
    R = matrix(d, b, q, seed)
    counts = R.column_block_counts()
    n_blocks = d // b
    n = d * n_blocks
    mean, sd = n * q, math.sqrt(n * q * (1 - q))
    assert abs(counts.sum() - mean) < 5 * sd
    dense = R.to_dense()
    col_sq = (dense ** 2).sum(axis=0)
    assert np.allclose(col_sq, counts * b / (d * q))  # exact squared norms from the counts
    # E||column||^2 = 1; the mean over d columns has sd ~ sqrt((1-q) b / (q d^2)).
    assert abs(col_sq.mean() - 1) < 5 * math.sqrt((1 - q) * b / (q * d)) / math.sqrt(d)


def test_matrices_differ_by_seed_and_key():
    a = matrix(360, 36, 0.3, 1, "cat", 0).to_dense()
    assert not np.array_equal(a, matrix(360, 36, 0.3, 2, "cat", 0).to_dense())
    assert not np.array_equal(a, matrix(360, 36, 0.3, 1, "cat", 1).to_dense())
    assert not np.array_equal(a, matrix(360, 36, 0.3, 1, "dog", 0).to_dense())
    sk = rs.Sketcher(360, block_size=36, density=0.3, seed=1)
    assert not np.array_equal(sk.position_matrix(1).to_dense(), sk.position_matrix(2).to_dense())


def test_density_one_fills_every_block():
    R = matrix(360, 36, 1.0, 3)
    assert (R.column_block_counts() == 10).all()


def test_to_scipy_matches_dense():
    R = matrix(1008, 42, 0.25, 1)
    dense = R.to_dense()
    for dtype in (np.float64, np.float32):
        S = R.to_scipy(dtype)
        assert S.format == "csr" and S.dtype == dtype and S.shape == (1008, 1008)
        assert np.array_equal(S.toarray(), dense.astype(dtype))


@pytest.mark.parametrize("family", ["block_sparse", "orthogonal"])
def test_to_scipy_first_columns_and_format(family):
    d = 1008 if family == "block_sparse" else 1024
    R = (matrix(1008, 42, 0.25, 1) if family == "block_sparse"
         else rs.Sketcher(d, family="orthogonal", seed=1).module_matrix("cat", 0))
    # the matrix built independently of the library's kernels: Algorithm 2 by the reference
    # generator, or H D3 H D2 H D1 / d^(3/2) from the native sign diagonals and a dense
    # (unnormalised, Sylvester) Hadamard matrix
    if family == "block_sparse":
        full = ref.block_sparse_dense(1, ref.module_key("cat", 0), d, 42, 0.25)
    else:
        from scipy.linalg import hadamard
        H = hadamard(d).astype(np.float64)
        D1, D2, D3 = (R._native.signs(r).astype(np.float64) for r in (1, 2, 3))
        full = (H * D3) @ ((H * D2) @ (H * D1)) / d ** 1.5
    for m in (0, 1, 37, d):
        want = full[:, :m]
        for fmt in ("csr", "csc"):
            S = R.to_scipy(columns=m, format=fmt)
            assert S.format == fmt and S.shape == (d, m)
            np.testing.assert_allclose(S.toarray(), want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="columns"):
        R.to_scipy(columns=d + 1)
    with pytest.raises(ValueError, match="columns"):
        R.to_scipy(columns=-1)
    with pytest.raises(TypeError, match="columns"):
        R.to_scipy(columns=2.0)
    with pytest.raises(ValueError, match="format"):
        R.to_scipy(format="coo")
    if family == "block_sparse":  # the native entry point checks its range too
        for bad in (-2, d + 1):
            with pytest.raises(ValueError, match="columns"):
                R._native.csc(True, 0, bad)


def test_orthogonal_materialisation_in_chunks(monkeypatch):
    # to_dense and to_scipy generate an orthogonal matrix a few columns at a time (so that they
    # hold little more than the result): force chunks of 7 columns, uneven at the end
    from recsketch import matrices

    d = 256
    R = rs.Sketcher(d, family="orthogonal", seed=3).module_matrix("dog", 1)
    want = ref.orthogonal_dense(3, ref.module_key("dog", 1), d)
    monkeypatch.setattr(matrices, "_CHUNK_BYTES", 8 * d * 7)
    np.testing.assert_allclose(R.to_dense(), want, rtol=0, atol=1e-12)
    for m in (5, 100, d):
        for fmt in ("csr", "csc"):
            for dtype in (np.float64, np.float32):
                S = R.to_scipy(dtype, columns=m, format=fmt)
                # exact cancellations leave zero entries, which are not stored
                assert S.format == fmt and S.dtype == dtype
                assert S.nnz == np.count_nonzero(np.abs(want[:, :m]) > 1e-9)
                np.testing.assert_allclose(S.toarray(), want[:, :m], rtol=0,
                                           atol=1e-12 if dtype == np.float64 else 1e-7)


# ---- Enc and its decoder --------------------------------------------------------------------

@pytest.mark.parametrize("d,b", [(360, 36), (1008, 42), (4050, 45)])
def test_enc_round_trip_for_every_column(d, b):
    third = b // 3
    rng = np.random.default_rng(d)
    blocks, truth = [], []
    for j in range(d):
        b_m, b_s, g = rng.choice([-1, 1], size=3)
        f_s, f_c, f_m = rng.choice([-1, 1], size=3)
        s_s = rng.choice([-1, 1], size=third)
        s_m = rng.choice([-1, 1], size=third)
        # A block as Algorithm 2 makes it, times the coefficient's sign g: the parity bits
        # must be f_m sign(s_m[0]) and f_s sign(s_s[0]).
        pm, ps = f_m * s_m[0], f_s * s_s[0]
        pattern = rs.enc_pattern(j, int(pm), int(ps), d, b)
        assert np.array_equal(pattern, ref.enc(j, pm, ps, d, b))
        blocks.append(g * np.concatenate([f_s * s_s, f_c * pattern, f_m * s_m]))
        truth.append((j, pm, ps, g))
    dec = rs.decode_blocks(np.array(blocks), d)
    assert (dec.status == rs.BlockStatus.OK).all()
    assert np.array_equal(dec.column, [t[0] for t in truth])
    assert np.array_equal(dec.b_m, [t[1] for t in truth])
    assert np.array_equal(dec.b_s, [t[2] for t in truth])
    assert np.array_equal(dec.sign, [t[3] for t in truth])


def test_decoder_rejects_what_is_not_a_codeword():
    d, b = 1008, 42
    third = b // 3
    block = np.concatenate([np.ones(third), rs.enc_pattern(5, 1, 1, d, b), np.ones(third)])
    assert rs.decode_blocks(block, d).status[0] == rs.BlockStatus.OK
    bad_parity = block.copy()
    bad_parity[0] = -1  # u_s[0] flips: the two parity bits now disagree on the sign
    assert rs.decode_blocks(bad_parity, d).status[0] == rs.BlockStatus.PARITY_MISMATCH
    bad_pad = block.copy()
    bad_pad[2 * third - 1] = -1
    assert rs.decode_blocks(bad_pad, d).status[0] == rs.BlockStatus.BAD_PADDING
    # Column 1010 needs the same 10 bits but is >= d.
    big = block.copy()
    big[third + 1:third + 11] = [1 if (1010 >> (9 - t)) & 1 else -1 for t in range(10)]
    assert rs.decode_blocks(big, d).status[0] == rs.BlockStatus.INDEX_OUT_OF_RANGE
    with pytest.raises(ValueError, match="only \\+1 and -1"):
        rs.decode_blocks(block * 0.5, d)


def test_negated_column_is_detected_by_sign_not_mistaken():
    # A negative coefficient times a block decodes to the same column with sign -1.
    R = matrix(1008, 42, 0.25, 1).to_dense()
    j = 77
    col = R[:, j].reshape(-1, 42)
    blocks = np.sign(col[np.abs(col).sum(axis=1) > 0]).astype(np.int8)
    dec = rs.decode_blocks(-blocks, 1008)
    assert (dec.column == j).all() and (dec.sign == -1).all()


# ---- parameters -------------------------------------------------------------------------------

def test_suggest_block_sparse_gives_valid_nearby_sizes():
    for target in [1000, 4096, 16384, 65536, 100_000]:
        p = rs.suggest_block_sparse(target)
        assert p.d_sketch % p.block_size == 0 and p.block_size % 3 == 0
        assert p.block_size >= rs.min_block_size(p.d_sketch)
        assert abs(p.d_sketch - target) <= p.block_size
        rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density)  # accepted
    assert rs.suggest_block_sparse(16384) == (16371, 51, rs.default_density(16371))


def test_defaults():
    sk = rs.Sketcher(4050)
    assert (sk.block_size, sk.family, sk.seed, sk.dtype) == (45, "block_sparse", 0, np.float32)
    # the smallest q with (1 - q)^(d / b) <= 1e-8 (docs/density.md); 90 block-rows here
    assert sk.density == pytest.approx(1 - 1e-8 ** (1 / 90), rel=1e-12)
    assert rs.min_block_size(4050) == 3 * (12 + 3)
