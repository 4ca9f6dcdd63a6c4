"""The block-walk cache: a bounded, invisible speed-up.

Full products with a block-sparse matrix remember its walk (nonzero blocks and flips per
column). The cache must never change a bit, must stay within its limit, and must be safe to
use from several threads at once.
"""

import threading

import numpy as np
import pytest

import recsketch as rs


@pytest.fixture
def cache_limit():
    """Restore the process-wide limit (and an empty cache) after each test."""
    before = rs.walk_cache_info()["limit"]
    rs._core.clear_walk_cache()
    yield
    rs.set_walk_cache_limit(before)
    rs._core.clear_walk_cache()


def products(R, x, y):
    nine = np.stack([x, y, x, y, x, y, x, y, x])  # panels of 8 and 1
    return [R @ x, R.half(x), R.T @ y, R.half_T(y), R.matvec(nine), R.rmatvec(nine)]


def test_cached_and_uncached_products_are_bit_identical(cache_limit):
    sk = rs.Sketcher(4095, block_size=45, density=0.2, seed=5)
    R = sk.position_matrix(1)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(4095).astype(dtype)
        y = rng.standard_normal(4095).astype(dtype)
        rs.set_walk_cache_limit(0)
        uncached = products(R, x, y)
        assert rs.walk_cache_info()["matrices"] == 0
        rs.set_walk_cache_limit(64 << 20)
        rs._core.clear_walk_cache()       # also resets the hit and miss counters
        assert rs.walk_cache_info()["hits"] == 0
        cold = products(R, x, y)          # fills the cache
        warm = products(R, x, y)          # reads it
        info = rs.walk_cache_info()
        assert info["matrices"] == 1 and info["hits"] >= len(warm)  # every warm product hit
        for a, b, c in zip(uncached, cold, warm):
            assert a.tobytes() == b.tobytes() == c.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("d, b", [(4095, 45), (360, 36)])
def test_a_first_product_records_the_walks_it_generates(cache_limit, threads, d, b):
    """A full product of a fresh matrix fills the cache with the walks it generated (its first
    panel records them, zero columns included, the other panels read them): every later
    product, forward or transposed, gives the bits of an uncached product."""
    sk = rs.Sketcher(d, block_size=b, density=0.3, seed=9)
    R = sk.module_matrix("fresh", 1)
    rng = np.random.default_rng(threads)
    X = rng.standard_normal((13, d)).astype(np.float32)  # panels of 8, 4 and 1
    X[:, 1::2] = 0.0  # half of the columns are zero: their walks must be recorded too
    Y = rng.standard_normal((5, d))
    rs.set_walk_cache_limit(0)
    want = [R.matvec(X, num_threads=threads), R.rmatvec(Y), R.half(Y), R @ X[3]]
    rs.set_walk_cache_limit(64 << 20)
    first = R.matvec(X, num_threads=threads)
    info = rs.walk_cache_info()
    assert (info["matrices"], info["misses"], info["hits"]) == (1, 1, 0)
    got = [first, R.rmatvec(Y), R.half(Y), R @ X[3]]
    assert rs.walk_cache_info()["hits"] == 3  # the later products read the recorded walks
    for a, w in zip(got, want):
        assert a.tobytes() == w.tobytes()
    # The walks a transposed product builds (another code path) serve forward products alike.
    rs._core.clear_walk_cache()
    R.rmatvec(Y)
    assert R.matvec(X, num_threads=threads).tobytes() == want[0].tobytes()
    assert rs.walk_cache_info()["hits"] == 1


def test_an_entry_costs_two_bytes_per_nonzero_block_plus_eight_per_column(cache_limit):
    sk = rs.Sketcher(4095, block_size=45, density=0.2, seed=5)
    R = sk.module_matrix("size", 0)
    R @ np.ones(4095, np.float32)
    blocks = int(R.column_block_counts().sum())
    got = rs.walk_cache_info()["bytes"]
    assert 2 * blocks + 8 * 4095 <= got <= 1.06 * 2 * blocks + 8 * 4095 + 4096


def test_more_than_8192_block_rows_store_wide_entries(cache_limit):
    """Block indices past 2^13 do not fit the 16-bit entries: such matrices keep 32-bit ones,
    with the same bits as uncached products."""
    b = 69
    d = 8193 * b  # 8193 block-rows
    sk = rs.Sketcher(d, block_size=b, density=0.001, seed=2)
    R = sk.module_matrix("wide", 0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(d).astype(np.float32)
    y = rng.standard_normal(d).astype(np.float32)
    rs.set_walk_cache_limit(0)
    want = [R @ x, R.T @ y]
    rs.set_walk_cache_limit(64 << 20)
    got = [R @ x, R.T @ y, R @ x]  # records, then reads twice
    info = rs.walk_cache_info()
    assert (info["matrices"], info["hits"]) == (1, 2)
    blocks = int(R.column_block_counts().sum())
    assert info["bytes"] >= 4 * blocks  # 32-bit entries
    for a, w in zip(got, want + [want[0]]):
        assert a.tobytes() == w.tobytes()


def test_resident_bytes_never_exceed_the_limit(cache_limit):
    sk = rs.Sketcher(4095, block_size=45, density=0.2, seed=5)
    x = np.ones(4095, np.float32)
    sk.module_matrix("probe", 0) @ x
    one = rs.walk_cache_info()["bytes"]  # one matrix's walks
    assert 0 < one < 4095 * 4095 * 4 // 50  # a few % of a dense float32 matrix
    rs._core.clear_walk_cache()
    rs.set_walk_cache_limit(int(2.5 * one))
    for i in range(6):
        sk.module_matrix(f"m{i}", 0) @ x
        info = rs.walk_cache_info()
        assert info["bytes"] <= info["limit"]
    assert rs.walk_cache_info()["matrices"] == 2  # least recently used ones were evicted
    rs.set_walk_cache_limit(one // 2)  # lowering the limit evicts at once
    assert rs.walk_cache_info()["matrices"] == 0


def test_short_products_do_not_fill_the_cache(cache_limit):
    sk = rs.Sketcher(4095, block_size=45, density=0.2, seed=5)
    R = sk.module_matrix("attr", 1)
    R.apply_short(np.full(8, 0.25, np.float32))
    assert rs.walk_cache_info()["matrices"] == 0


def test_sparse_inputs_do_not_fill_the_cache(cache_limit):
    """A product walks only the columns where its input is nonzero: a whole walk is built (and
    kept) only for inputs with at least a quarter of their columns nonzero."""
    sk = rs.Sketcher(4095, block_size=45, density=0.2, seed=5)
    R = sk.module_matrix("probe", 0)
    E = np.zeros((16, 4095), np.float32)
    E[np.arange(16), np.arange(16) * 7] = 1.0
    walked = R.matvec(E)
    assert rs.walk_cache_info()["matrices"] == 0
    x = np.zeros(4095, np.float32)
    x[::3] = 1.0  # a third of the columns
    R @ x
    assert rs.walk_cache_info()["matrices"] == 1
    hits = rs.walk_cache_info()["hits"]
    assert R.matvec(E).tobytes() == walked.tobytes()  # now read from the cache: same bits
    assert rs.walk_cache_info()["hits"] == hits + 1


def test_threads_share_the_cache_safely(cache_limit):
    sk = rs.Sketcher(4095, block_size=45, density=0.2, seed=5)
    mats = [sk.position_matrix(i) for i in range(1, 5)]
    x = np.random.default_rng(1).standard_normal(4095).astype(np.float32)
    rs.set_walk_cache_limit(0)
    want = [R.half(x).tobytes() for R in mats]
    rs.set_walk_cache_limit(64 << 20)
    mats[0].half(x)
    one = rs.walk_cache_info()["bytes"]
    rs.set_walk_cache_limit(2 * one)  # room for two of four: constant eviction under load
    errors = []

    def work(seed):
        order = np.random.default_rng(seed).permutation(40) % 4
        for k in order:
            if mats[k].half(x, num_threads=1).tobytes() != want[k]:
                errors.append(k)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert rs.walk_cache_info()["bytes"] <= 2 * one


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                      ("64M", TypeError)])
def test_bad_limits_are_refused(cache_limit, bad, exc):
    before = rs.walk_cache_info()["limit"]
    with pytest.raises(exc, match="nbytes"):
        rs.set_walk_cache_limit(bad)
    assert rs.walk_cache_info()["limit"] == before
