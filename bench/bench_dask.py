"""Distributed sketching: recsketch.dask on a LocalCluster of 2 worker processes (1 thread each,
num_threads=1 per task) against Sketcher.sketch_many on 2 threads, same graphs, same run.

The graphs are built on the driver and travel to the workers (the worst case: a real job would
read them on the workers); each job rebuilds its Sketchers from the JSON, so the attribute
embeddings are computed once per worker per job, while the baseline Sketcher is warm. The ratio
dask / sketch_many is the overhead of distribution on one 2-core machine; on many machines the
same code scales with the workers.

Run: pytest bench/bench_dask.py --benchmark-only
"""

import functools

import pytest

import recsketch as rs
from scene import scene

dask = pytest.importorskip("dask")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")
from recsketch import dask as rsd  # noqa: E402

D = 16371
N, PARTITIONS = 96, 6


@functools.lru_cache(maxsize=1)
def graphs():
    return [scene(k) for k in range(N)]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


@pytest.mark.parametrize("impl", ["sketch_many_2threads", "dask_2workers"])
def test_dask_sketch(benchmark, client, impl):
    benchmark.group = f"dask sketch d={D} {N} graphs of 50 objects"
    sk = rs.Sketcher(D, seed=1)
    expected = sk.sketch_many(graphs(), num_threads=2)  # warms the baseline's caches
    bag = db.from_sequence(graphs(), npartitions=PARTITIONS)
    if impl == "sketch_many_2threads":
        def fn():
            return sk.sketch_many(graphs(), num_threads=2)
    else:
        def fn():
            return rsd.sketch_bag(sk, bag, num_threads=1).compute(scheduler=client)
        assert fn().tobytes() == expected.tobytes()  # (and warms the workers' imports)
    benchmark.extra_info.update(sketches=N, d=D, partitions=PARTITIONS)
    benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=0)
