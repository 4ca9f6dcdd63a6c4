"""Retrieval from a repository of 100,000 sketches: the usearch prefix index with exact
re-ranking against a brute-force NumPy scan of all full sketches (the 100 queries as one
batched GEMM), in the same group; the recall@10 of the index against that scan is recorded with
the timings. The repository answers the queries one at a time (its API has no batch search).
"""

import functools
import tempfile

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository

N, D, MODULES = 100_000, 1024, 40


def scenes(n, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"m{k}" for k in range(MODULES)]
    graphs = []
    for _ in range(n):
        g = rs.Graph()
        present = rng.choice(MODULES, size=int(rng.integers(1, 5)), replace=False)
        w = rng.dirichlet(np.ones(present.size))
        objs = []
        for p, x in zip(present, w):
            a = rng.random(8)
            objs.append((g.add(names[p], a / np.linalg.norm(a)), float(x)))
        g.set_output(objs)
        graphs.append(g)
    return graphs


@functools.lru_cache(maxsize=1)
def repository():
    sk = rs.Sketcher(D, family="orthogonal", seed=1)
    folder = tempfile.mkdtemp(prefix="recsketch-bench-")
    repo = Repository.create(folder + "/repo", sk)
    for start in range(0, N, 10_000):
        repo.add_graphs(scenes(10_000, seed=start))
    repo.search(0, 10)  # builds the index outside the timings
    full = repo.get(repo.ids())
    unit = full / np.linalg.norm(full, axis=1, keepdims=True)
    return repo, unit


QUERIES = list(range(0, N, N // 100))


@pytest.mark.parametrize("impl", ["numpy_brute_force", "recsketch"])
def test_search_100k(benchmark, impl):
    repo, unit = repository()
    benchmark.group = f"search k=10 in {N} sketches d={D}"
    truth = {}
    for q in QUERIES:
        sims = unit @ unit[q]
        sims[q] = -np.inf
        truth[q] = np.argpartition(-sims, 10)[:10]
    if impl == "numpy_brute_force":
        queries = np.asarray(QUERIES)

        def fn():
            # all queries in one GEMM (BLAS-3), then the top 11 of each row (the query itself
            # is among them): what a competent NumPy user writes for a batch of queries
            sims = unit[queries] @ unit.T
            np.argpartition(-sims, 11, axis=1)[:, :11]
    else:
        def fn():
            for q in QUERIES:
                repo.search(q, 10)
        hits = sum(np.isin(repo.search(q, 10)[0], truth[q]).sum() for q in QUERIES)
        benchmark.extra_info["recall_at_10"] = hits / (10 * len(QUERIES))
    benchmark.extra_info.update(sketches=len(QUERIES), d=D)
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
