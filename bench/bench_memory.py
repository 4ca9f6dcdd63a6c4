"""Resident matrix state: 3,000 matrices at d ~ 64k, each used once."""

import resource

import numpy as np

import recsketch as rs


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_memory_of_3000_matrices(benchmark):
    p = rs.suggest_block_sparse(65536)
    sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=1)
    x = np.ones(16, dtype=np.float32) / 4
    sk.module_matrix("warmup", 1).apply_short(x)  # allocator and thread pool warm
    before = _rss_bytes()
    mats = [sk.module_matrix(f"module{i}", i % 3) for i in range(3000)]

    def use_all():
        for R in mats:
            R.apply_short(x)

    benchmark.group = "memory 3000 matrices d~64k"
    benchmark.pedantic(use_all, rounds=1, iterations=1)
    grown = _rss_bytes() - before
    benchmark.extra_info.update(rss_growth_mib=grown / 2**20, matrices=len(mats), d=p.d_sketch)
    print(f"\nRSS growth for {len(mats)} matrices at d={p.d_sketch}: {grown / 2**20:.1f} MiB")
    assert grown < 64 * 2**20
