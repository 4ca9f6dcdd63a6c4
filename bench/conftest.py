"""Shared fixtures for the benchmarks: matrices built once per size, and their SciPy twins."""

import functools

import numpy as np
import pytest

import recsketch as rs

SIZES = [4096, 16384, 65536]


@functools.lru_cache(maxsize=None)
def block_sparse(target):
    p = rs.suggest_block_sparse(target)
    sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=1)
    return sk.module_matrix("cat", 0)


@functools.lru_cache(maxsize=None)
def nnz(target):
    """Nonzero entries of block_sparse(target): b per nonzero block."""
    return int(block_sparse(target).column_block_counts().sum()) * rs.suggest_block_sparse(target).block_size


@functools.lru_cache(maxsize=1)
def csr(target):
    """SciPy CSR of the same matrix, float32 (built once, not timed). One at a time: at
    d = 65520 it takes about 2 GiB."""
    return block_sparse(target).to_scipy(np.float32)


def batch(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x[0].copy() if n == 1 else x


def rounds_for(d, n):
    return 1 if d * n > 65536 * 16 else (3 if d * n > 16384 * 16 else 10)


@pytest.fixture
def timed(benchmark):
    def run(fn, size, count, **info):
        benchmark.extra_info.update(info)
        return benchmark.pedantic(fn, rounds=rounds_for(size, count), iterations=1,
                                  warmup_rounds=1)
    return run


@pytest.fixture
def walk_cache_off():
    """Call to turn the block-walk cache off for the rest of one benchmark."""
    before = rs.walk_cache_info()["limit"]
    yield lambda: rs.set_walk_cache_limit(0)
    rs.set_walk_cache_limit(before)
