"""recsketch.dask on the synchronous scheduler and on a 2-process LocalCluster: bit-identical to
sketch_many, registry merge, a killed worker's task retried, ingestion never writing twice."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest

dask = pytest.importorskip("dask")
db = pytest.importorskip("dask.bag")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import recsketch as rs  # noqa: E402
from recsketch import dask as rsd  # noqa: E402
from recsketch.repository import Repository  # noqa: E402
from scenes import random_dag  # noqa: E402

D = 1008
N = 23  # graphs; 4 uneven partitions


def _graphs(n=N, seed=0):
    rng = np.random.default_rng(seed)
    dim = {}
    return [random_dag(rng, dim=dim)[0] for _ in range(n)]


@pytest.fixture(scope="module")
def graphs():
    return _graphs()


@pytest.fixture(scope="module")
def expected(graphs):
    sk = rs.Sketcher(D, seed=42)
    return sk.sketch_many(graphs, num_threads=2), sk.modules


@pytest.fixture(scope="module")
def client():
    """One small cluster for the whole module: 2 worker processes, 1 thread each."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


def _bag(items, npartitions=4):
    return db.from_sequence(items, npartitions=npartitions)


# -- synchronous scheduler -----------------------------------------------------------------------
def test_sync_bit_identical_to_sketch_many(graphs, expected):
    sk = rs.Sketcher(D, seed=42)
    lazy = rsd.sketch_bag(sk, _bag(graphs))
    assert lazy.npartitions == 4 and lazy.sketches.shape[1] == D
    assert sk.modules == {}  # nothing happens before compute
    got = lazy.compute(scheduler="sync")
    assert got.dtype == np.float32
    assert got.tobytes() == expected[0].tobytes()
    assert sk.modules == expected[1]  # the workers' registrations reached the driver


@pytest.mark.parametrize("npartitions", [1, 3, 23])
def test_sync_records_and_any_partitioning(graphs, expected, npartitions):
    records = [g.to_dict() for g in graphs]
    sk = rs.Sketcher(D, seed=42)
    threads = 2 if npartitions == 3 else 1  # (2 threads on a loaded machine: slow barriers)
    got = rsd.sketch_bag(sk, _bag(records, npartitions), num_threads=threads
                         ).compute(scheduler="sync")
    assert got.tobytes() == expected[0].tobytes()


def test_empty_bag_and_bad_input():
    sk = rs.Sketcher(D, seed=42)
    out = rsd.sketch_bag(sk, db.from_sequence([], npartitions=1)).compute(scheduler="sync")
    assert out.shape == (0, D)
    with pytest.raises(TypeError, match="dask.bag.Bag"):
        rsd.sketch_bag(sk, [1, 2])
    with pytest.raises(TypeError, match="Sketcher"):
        rsd.sketch_bag("sk", _bag([1]))
    with pytest.raises(ValueError, match="num_threads"):
        rsd.sketch_bag(sk, _bag([1]), num_threads=0)
    with pytest.raises(TypeError, match="partition 0: element 0 is a int"):
        rsd.sketch_bag(sk, _bag([1], 1)).compute(scheduler="sync")


def _one(module, depth, dim=4):
    """A graph with ``module`` at depth 2 (alone) or 3 (under a "top" object)."""
    g = rs.Graph()
    h = g.add(module, np.full(dim, 0.5))
    if depth == 3:
        h = g.add("top", np.full(dim, 0.5), [(h, 1.0)])
    g.set_output([(h, 1.0)])
    return g


def test_conflicting_registrations_across_partitions(graphs):
    sk = rs.Sketcher(D, seed=42)
    # "x" at depth 2 in partition 0 and at depth 3 in partition 1: each partition is valid alone
    bag = _bag([_one("x", 2), _one("x", 3)], 2)
    # on one thread the second partition meets the first one's registration on the worker...
    with pytest.raises(ValueError, match=r"partition [01]: module 'x' is registered at "
                                         r"depth [23], not [23]"):
        rsd.sketch_bag(sk, bag).compute(scheduler="sync")
    assert sk.modules == {}  # nothing recorded
    # ... on two threads (or workers) the driver's merge finds the conflict
    with pytest.raises(ValueError, match=r"module 'x' has depth 2 in partition 0 and 3 in "
                                         r"partition 1"):
        rsd.merge_registries([rsd.sketch_bag(sk, _bag([g], 1)).registry(scheduler="sync")
                              for g in (_one("x", 2), _one("x", 3))])
    # and against the driver's own registry, checked on the worker
    sk.register_module("x", 3, 4)
    with pytest.raises(ValueError, match="partition 0: .*registered at depth 3"):
        rsd.sketch_bag(sk, _bag([_one("x", 2)], 1)).compute(scheduler="sync")
    with pytest.raises(ValueError, match="attribute length 4 in partition 0 and 5"):
        rsd.merge_registries([{"y": (2, 4)}, {"y": (2, 5)}])


def test_sync_aggregates_against_single_machine(graphs, expected):
    sk = rs.Sketcher(D, seed=42)
    for name, info in expected[1].items():
        sk.register_module(name, info.depth, info.attribute_dim)
    s = expected[0]
    arr = da.from_array(s, chunks=(7, D))
    got = rsd.count(sk, arr, "L2m0", 0.5).compute(scheduler="sync")
    # a float32 query's last bits depend on the batch it runs in (the core's blocking), so
    # equal up to float32 rounding, and bit-equal to the same blocks queried one by one
    np.testing.assert_allclose(got, sk.count(s, "L2m0", 0.5), rtol=2e-6)
    by_block = np.concatenate([sk.count(s[k:k + 7], "L2m0", 0.5) for k in range(0, N, 7)])
    np.testing.assert_array_equal(got, by_block)
    mean = rsd.mean_attributes(sk, arr, "L3m1").compute(scheduler="sync")
    x = sk.summed_attributes(s, "L3m1", 1.0)
    m = sk.mass(s, "L3m1")
    np.testing.assert_allclose(mean, x.sum(axis=0) / m.sum(), rtol=1e-5)  # float32 sums
    with pytest.raises(ValueError, match="not registered"):
        rsd.count(sk, arr, "nope", 0.5)
    with pytest.raises(ValueError, match="weight"):
        rsd.count(sk, arr, "L2m0", 1.5)
    with pytest.raises(ValueError, match="d=5"):
        rsd.mean_attributes(sk, da.zeros((3, 5), chunks=3), "L2m0")


# -- ingestion -------------------------------------------------------------------------------------
def _stored(path):
    with Repository.open(path) as repo:
        ids = repo.ids()
        return repo.get(ids), repo.labels(ids), repo.sketcher.modules


def test_sync_to_repository_resumes_without_writing_twice(tmp_path, graphs, expected):
    path = tmp_path / "repo"
    Repository.create(path, rs.Sketcher(D, seed=42)).close()
    sk = rs.Sketcher(D, seed=42)
    # a first run fails in its third partition (a bad element), after two were written
    sizes = [len(p.compute(scheduler="sync")) for p in _bag(graphs).to_delayed()]
    first = sum(sizes[:2])
    bad = list(graphs)
    bad[first] = "not a graph"
    with pytest.raises(TypeError, match="partition 2: element 0 is a str"):
        rsd.to_repository(rsd.sketch_bag(sk, _bag(bad)), path, key="day1", window=1,
                          scheduler="sync")
    s, labels, _ = _stored(path)
    assert len(labels) == first and {lab["dask_partition"] for lab in labels} == {0, 1}
    # the rerun skips the two stored partitions without even computing them (they hold junk
    # this time) and writes the other two once
    rerun = ["skipped, never read"] * first + list(graphs[first:])
    report = rsd.to_repository(rsd.sketch_bag(sk, _bag(rerun)), path, key="day1", window=3,
                               scheduler="sync", labels={"source": "test"})
    assert report == {"partitions": 4, "written": 2, "skipped": 2, "rows": N - first}
    s, labels, modules = _stored(path)
    assert s.tobytes() == expected[0].tobytes()  # every row once, in order
    assert [lab["dask_partition"] for lab in labels] == [p for p, n in enumerate(sizes)
                                                         for _ in range(n)]
    assert [lab.get("source") for lab in labels] == [None] * first + ["test"] * (N - first)
    assert modules == expected[1]  # the registry reached the repository, from both runs
    assert sk.modules == expected[1]  # and the driver's Sketcher, as compute() does
    lazy = rsd.sketch_bag(sk, _bag(graphs))
    again = rsd.to_repository(lazy, path, key="day1", scheduler="sync")
    assert again["written"] == 0 and again["skipped"] == 4
    # resuming with another partitioning would name other rows by the same partition numbers
    # (and store some twice): refused, nothing written
    other = rsd.sketch_bag(sk, db.from_sequence(graphs, npartitions=2))
    with pytest.raises(ValueError, match="stored in 4 partitions, not 2"):
        rsd.to_repository(other, path, key="day1", scheduler="sync")
    assert _stored(path)[0].tobytes() == expected[0].tobytes()
    assert len(_stored(path)[1]) == N


def test_to_repository_checks_before_writing(tmp_path, graphs):
    path = tmp_path / "repo"
    Repository.create(path, rs.Sketcher(D, seed=42)).close()
    sk = rs.Sketcher(D, seed=42)
    lazy = rsd.sketch_bag(sk, _bag(graphs))
    with pytest.raises(TypeError, match="key"):
        rsd.to_repository(lazy, path, key="")
    with pytest.raises(ValueError, match="reserved"):
        rsd.to_repository(lazy, path, key="k", labels={"dask_key": 1})
    with pytest.raises(ValueError, match="other matrices"):
        rsd.to_repository(rsd.sketch_bag(rs.Sketcher(D, seed=1), _bag(graphs)), path, key="k")
    with pytest.raises(ValueError, match="d=5"):
        rsd.to_repository(da.zeros((2, 5), chunks=1), path, key="k")
    # a conflicting partition stops the ingestion before it is written
    bag = _bag([_one("x", 2), _one("x", 3)], 2)
    with pytest.raises(ValueError, match="module 'x'"):
        rsd.to_repository(rsd.sketch_bag(sk, bag), path, key="k", window=2, scheduler="sync")
    assert len(_stored(path)[1]) == 0


def test_from_repository_aggregates_match_the_repository(tmp_path, graphs, expected):
    path = tmp_path / "repo"
    with Repository.create(path, rs.Sketcher(D, seed=42)) as repo:
        repo.add_graphs(graphs[:10], timestamps=0)
        repo.add_graphs(graphs[10:], timestamps=100)
        arr = rsd.from_repository(repo, chunk_rows=6)
        assert arr.chunks[0] == (6, 6, 6, 5)
        np.testing.assert_array_equal(arr.compute(scheduler="sync"), repo.get(repo.ids()))
        sk = repo.sketcher
        mean = rsd.mean_attributes(sk, arr, "L2m1").compute(scheduler="sync")
        # The per-sketch estimates are float32 kernels whose rounding depends on the batch
        # (measured: up to 2e-7 apart between a batch of 6 and of 23, on terms up to 0.5), and
        # the mean of terms of both signs can be near 0: an absolute tolerance at that scale.
        np.testing.assert_allclose(mean, repo.mean_attributes("L2m1"), rtol=1e-6, atol=1e-6)
        late = rsd.from_repository(path, since=50)
        counts = rsd.count(sk, late, "L3m0", 0.25).compute(scheduler="sync")
        np.testing.assert_allclose(counts, repo.count("L3m0", 0.25, since=50)[1], rtol=1e-6)
        repo.forget([(10.0, 1.0), (float("inf"), 0.25)], now=105)
        with pytest.raises(ValueError, match="10 of the 23 selected sketches were shortened"):
            rsd.from_repository(repo)
        assert rsd.from_repository(repo, since=50).shape == (13, D)


# -- on a LocalCluster ---------------------------------------------------------------------------------
def test_cluster_bit_identical_to_sketch_many(client, graphs, expected):
    sk = rs.Sketcher(D, seed=42)
    lazy = rsd.sketch_bag(sk, _bag([g.to_dict() for g in graphs]))
    got = client.compute(lazy.sketches).result()
    assert got.tobytes() == expected[0].tobytes()
    regs = [reg for _, reg in client.gather(client.compute(list(lazy.parts)))]
    assert rsd.merge_registries(regs) == {n: (i.depth, i.attribute_dim)
                                          for n, i in expected[1].items()}
    # the tasks ran in the worker processes, not here
    pids = client.run(os.getpid)
    assert os.getpid() not in pids.values()


def test_cluster_aggregates(client, graphs, expected):
    sk = rs.Sketcher(D, seed=42)
    lazy = rsd.sketch_bag(sk, _bag(graphs))
    with dask.config.set(scheduler=client):
        s = lazy.compute()
        np.testing.assert_array_equal(s, expected[0])
        counts = rsd.count(sk, lazy.sketches, "L2m0", 0.5).compute()
        mean = rsd.mean_attributes(sk, lazy.sketches, "L2m0").compute()
    np.testing.assert_allclose(counts, sk.count(expected[0], "L2m0", 0.5), rtol=2e-6)
    x = sk.summed_attributes(expected[0], "L2m0", 1.0).sum(axis=0)
    np.testing.assert_allclose(mean, x / sk.mass(expected[0], "L2m0").sum(), rtol=1e-5)


def _die_once(marker, item):
    """Kill this worker process the first time any task reaches it (SIGKILL: no cleanup)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return item
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def test_cluster_killed_worker_is_retried_and_nothing_written_twice(client, tmp_path, graphs,
                                                                    expected):
    marker = tmp_path / "killed"
    sk = rs.Sketcher(D, seed=42)
    bag = _bag(graphs).map(lambda g, m=str(marker): _die_once(m, g))
    lazy = rsd.sketch_bag(sk, bag)
    path = tmp_path / "repo"
    Repository.create(path, rs.Sketcher(D, seed=42)).close()
    with distributed.Client(client.cluster, set_as_default=False) as c, \
            dask.config.set(scheduler=c):
        report = rsd.to_repository(lazy, path, key="k", window=2)
    assert marker.exists()  # a worker was killed mid-ingestion, and its task retried
    assert report == {"partitions": 4, "written": 4, "skipped": 0, "rows": N}
    s, labels, modules = _stored(path)
    assert s.tobytes() == expected[0].tobytes()
    assert len(labels) == N and modules == expected[1]
    # (the nanny's restart of the killed worker fails in the LocalCluster of distributed
    # 2026.8 with "cannot pickle '_asyncio.Future'", dask/distributed#3345: this test comes
    # last in the module, and the survivor alone finished the ingestion)


def test_import_without_dask_is_not_needed():
    # recsketch itself never imports dask (the extra is optional)
    import subprocess
    import sys
    code = ("import sys; sys.modules['dask'] = None; import recsketch; "
            "print(recsketch.Sketcher(1008).d_sketch)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(Path(__file__).parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1008"
    code = "import sys; sys.modules['dask'] = None; import recsketch.dask"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'recsketch[dask]'" in out.stderr


def test_a_second_driver_of_the_same_key_is_refused_while_the_first_runs(tmp_path, graphs):
    import threading

    import dask
    import dask.array as da

    path = tmp_path / "repo"
    sk = rs.Sketcher(64, family="orthogonal", seed=5)
    Repository.create(path, sk).close()
    rows = sk.sketch_many(graphs[:6])
    started, release = threading.Event(), threading.Event()

    def slow_block():
        started.set()
        assert release.wait(60)
        return rows[:3]

    blocks = [da.from_delayed(dask.delayed(slow_block)(), shape=(3, 64), dtype=rows.dtype),
              da.from_array(rows[3:], chunks=(3, 64))]
    first = {}

    def drive():
        first["result"] = rsd.to_repository(da.concatenate(blocks), path, key="k",
                                            scheduler="sync")

    t = threading.Thread(target=drive)
    t.start()
    try:
        assert started.wait(60)
        with pytest.raises(ValueError, match="another driver is ingesting key 'k'"):
            rsd.to_repository(da.from_array(rows, chunks=(3, 64)), path, key="k",
                              scheduler="sync")
        # another key is not held up
        assert rsd.to_repository(da.from_array(rows[:2], chunks=(2, 64)), path, key="other",
                                 scheduler="sync")["rows"] == 2
    finally:
        release.set()
        t.join(60)
    assert first["result"]["rows"] == 6
    with Repository.open(path) as repo:
        assert repo.select(where={"dask_key": "k"}).size == 6      # stored once
    # the lock is released: resuming the finished key skips everything
    assert rsd.to_repository(da.from_array(rows, chunks=(3, 64)), path, key="k",
                             scheduler="sync")["written"] == 0


def test_the_array_of_a_sketched_bag_carries_its_registry_into_the_repository(tmp_path, graphs,
                                                                               expected):
    path = tmp_path / "repo"
    Repository.create(path, rs.Sketcher(D, seed=42)).close()
    lazy = rsd.sketch_bag(rs.Sketcher(D, seed=42), _bag(graphs))
    rsd.to_repository(lazy.sketches, path, key="k", scheduler="sync")
    s, _, modules = _stored(path)
    assert s.tobytes() == expected[0].tobytes()
    assert modules == expected[1]            # as if `lazy` itself had been passed
