"""Reproducibility contract: the same seed gives the same bits, whatever the threads or process."""

import os
import subprocess
import sys

import numpy as np
import pytest

import recsketch as rs

CASES = [
    dict(d_sketch=2040, block_size=51, density=0.12, seed=5),
    dict(d_sketch=1024, family="orthogonal", seed=5),
]


def products(sk, x, num_threads):
    R = sk.module_matrix("cat", 0)
    return [R.matvec(x, num_threads=num_threads), R.rmatvec(x, num_threads=num_threads),
            R.half(x, num_threads=num_threads), R.half_T(x, num_threads=num_threads),
            R.apply_short(np.ascontiguousarray(x[..., :40]), num_threads=num_threads)]


@pytest.mark.parametrize("case", CASES, ids=["block_sparse", "orthogonal"])
@pytest.mark.parametrize("n", [None, 1, 5, 21, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(case, n, dtype):
    sk = rs.Sketcher(**case)
    shape = (sk.d_sketch,) if n is None else (n, sk.d_sketch)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    one = products(sk, x, 1)
    for threads in (2, 3, 8):
        for a, b in zip(one, products(sk, x, threads)):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("case", CASES, ids=["block_sparse", "orthogonal"])
def test_a_batch_gives_the_bits_of_its_vectors_alone(case):
    sk = rs.Sketcher(**case)
    X = np.random.default_rng(2).standard_normal((23, sk.d_sketch)).astype(np.float32)
    batch = products(sk, X, None)
    for i in (0, 7, 16, 22):
        alone = products(sk, np.ascontiguousarray(X[i]), None)
        for a, b in zip(batch, alone):
            assert a[i].tobytes() == b.tobytes()


_SCRIPT = """
import hashlib, numpy as np, recsketch as rs
h = hashlib.sha256()
for case in {cases!r}:
    sk = rs.Sketcher(**case)
    x = np.random.default_rng(3).standard_normal((9, sk.d_sketch))
    for name, k in [("cat", 0), ("wall", 2)]:
        R = sk.module_matrix(name, k)
        h.update(R.matvec(x).tobytes()); h.update(R.rmatvec(x).tobytes())
    h.update(sk.position_matrix(3).half(x.astype(np.float32)).tobytes())
print(h.hexdigest())
"""


def test_bit_identical_across_fresh_processes():
    script = _SCRIPT.format(cases=CASES)
    digests = set()
    for threads, hashseed in [("1", "1"), ("2", "2")]:
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONHASHSEED": hashseed}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_sketchers_from_the_same_config_agree():
    a = rs.Sketcher(2040, block_size=51, density=0.12, seed=9)
    b = rs.Sketcher.from_json(a.to_json())
    x = np.random.default_rng(4).standard_normal(2040)
    assert a.module_matrix("dog", 1).matvec(x).tobytes() == b.module_matrix("dog", 1).matvec(x).tobytes()
    c = rs.Sketcher(2040, block_size=51, density=0.12, seed=10)
    assert not np.array_equal(a.module_matrix("dog", 1).matvec(x), c.module_matrix("dog", 1).matvec(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cache", [True, False])
def test_signed_zeros_keep_a_panels_bits(dtype, cache):
    """The panel kernels skip the index-bit slots a column's index leaves at 0 (they would add
    +-0): with inputs full of +0 and -0 (whole columns and a whole row of -0 included), every
    vector of a batch still gets the bits of its single-vector product, from generated walks
    and from cached ones."""
    sk = rs.Sketcher(**CASES[0])
    d = sk.d_sketch
    rng = np.random.default_rng(4)
    X = rng.standard_normal((21, d))
    X[rng.random(X.shape) < 0.3] = -0.0
    X[rng.random(X.shape) < 0.2] = 0.0
    X[:, rng.choice(d, 50, replace=False)] = -0.0
    X[5] = -0.0
    X = X.astype(dtype)
    limit = rs.walk_cache_info()["limit"]
    rs._core.clear_walk_cache()
    rs.set_walk_cache_limit(limit if cache else 0)
    try:
        for R in (sk.module_matrix("zeros", 0), sk.position_matrix(2)):
            batch = [R.matvec(X), R.half(X)]
            for i in range(X.shape[0]):
                x = np.ascontiguousarray(X[i])
                for a, b in zip(batch, [R.matvec(x), R.half(x)]):
                    assert a[i].tobytes() == b.tobytes()
            # and against SciPy's product with the matrix's own entries (generated apart
            # from the kernels), so the skipped slots were zeros
            expected = (R.to_scipy() @ X.astype(np.float64).T).T
            np.testing.assert_allclose(batch[0], expected, rtol=1e-5, atol=1e-5)
    finally:
        rs.set_walk_cache_limit(limit)
        rs._core.clear_walk_cache()
