"""Queries over 10,000 stored sketches at d = 16371: recsketch's matched and paper read-outs
against the paper's read-out written in NumPy (the module matrix's first columns, densified
once, then one product), in the same group.

A linear read-out costs the same whatever the stored values are, so the stored sketches are a
random float32 array of the right shape (sketching 10,000 scenes would dominate the run).
"""

import numpy as np
import pytest

from bench_sketch import D, sketcher

N_STORED = 10_000


@pytest.fixture(scope="module")
def stored():
    return np.random.default_rng(0).standard_normal((N_STORED, D)).astype(np.float32)


@pytest.mark.parametrize("query", ["attributes", "count"])
@pytest.mark.parametrize("impl", ["numpy_paper", "recsketch_paper", "recsketch_matched"])
def test_query_stored(benchmark, stored, impl, query):
    sk = sketcher()
    benchmark.group = f"query {query} x{N_STORED} d={D}"
    if impl == "numpy_paper":
        k, slot = (32, 1) if query == "attributes" else (1, 2)
        cols = sk.module_matrix("cat", slot).to_scipy(np.float32)[:, :k].toarray()
        gain = 0.1 / 32  # w 2^-(4h-3) at depth 2
        fn = lambda: (stored @ cols) / gain
    else:
        method = impl.split("_")[1]
        if query == "attributes":
            fn = lambda: sk.attributes(stored, "cat", weight=0.1, method=method)
        else:
            fn = lambda: sk.count(stored, "cat", 0.1, method=method)
        fn()  # builds the cached probe matrix outside the timing
    benchmark.extra_info.update(sketches=N_STORED, d=D)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
