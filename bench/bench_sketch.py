"""Sketching a 50-object, depth-3 scene at d = 16371: recsketch against the same mechanism in
NumPy/SciPy (CSR float32 matrices built once, recursion in Python), in the same group.

Run: pytest bench --benchmark-only --benchmark-json=bench.json && python bench/report.py bench.json
"""

import functools

import numpy as np
import pytest

import recsketch as rs
from scene import ScipySketcher, scene

D = 16371          # rs.suggest_block_sparse(16384): b = 51, q = log2(d)/sqrt(d)
BATCH = 256


@functools.lru_cache(maxsize=1)
def sketcher():
    sk = rs.Sketcher(D, seed=1)
    sk.sketch(scene(0))  # registers the modules and builds the leaf embeddings
    return sk


@functools.lru_cache(maxsize=1)
def baseline():
    return ScipySketcher(sketcher(), ["cat", "wall", "edge", "part"], 10)


@pytest.mark.parametrize("impl", ["scipy_csr", "recsketch_1thread", "recsketch",
                                  "recsketch_many"])
def test_sketch_scene(benchmark, impl):
    sk = sketcher()
    benchmark.group = f"sketch d={D} 50 objects depth 3"
    g = scene(1)
    if impl == "scipy_csr":
        base = baseline()
        fn, n = (lambda: base.sketch(g)), 1
        # same mechanism, same matrices: the baseline is a faithful reference
        np.testing.assert_allclose(base.sketch(g), sk.sketch(g), rtol=0,
                                   atol=1e-5 * np.linalg.norm(sk.sketch(g)))
    elif impl == "recsketch_many":
        graphs = [scene(k) for k in range(BATCH)]
        fn, n = (lambda: sk.sketch_many(graphs)), BATCH
    else:
        threads = 1 if impl == "recsketch_1thread" else None
        fn, n = (lambda: sk.sketch(g, num_threads=threads)), 1
    benchmark.extra_info.update(sketches=n, d=D)
    benchmark.pedantic(fn, rounds=1 if n > 1 or impl == "scipy_csr" else 3, iterations=1,
                       warmup_rounds=0)
