"""The sketch repository: storage contract, retrieval quality, aggregates, forgetting, and
crash safety (a writer killed by SIGKILL, readers running beside a writer)."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository
from scenes import room, unit

D = 1024


def sketcher(**kw):
    return rs.Sketcher(D, family="orthogonal", seed=1, **kw)


def rooms(n, seed=0):
    sk = sketcher()
    graphs = [room(np.random.default_rng(seed + k))[0] for k in range(n)]
    return sk, sk.sketch_many(graphs)


def test_add_get_metadata_and_reopen(tmp_path):
    sk, S = rooms(20)
    path = tmp_path / "r"
    with Repository.create(path, sk) as repo:
        ids = repo.add(S[:12], timestamps=np.arange(12) * 86400.0,
                       labels=[{"k": k, "even": k % 2 == 0} for k in range(12)])
        assert ids.tolist() == list(range(12)) and len(repo) == 12
        assert np.array_equal(repo.get(ids), S[:12])
        more = repo.add(S[12:], ids=[100 + k for k in range(8)], timestamps="2026-01-01T00:00:00")
        assert more.tolist() == list(range(100, 108))
        assert repo.add(S[0]).tolist() == [108]  # next id follows the largest
        assert repo.labels([3])[0] == {"k": 3, "even": False}
        assert repo.select(where={"even": True}).tolist() == [0, 2, 4, 6, 8, 10]
        assert repo.select(since=2 * 86400, until=4 * 86400).tolist() == [2, 3]
        with pytest.raises(ValueError, match="already stored"):
            repo.add(S[:2], ids=[5, 200])
        with pytest.raises(ValueError, match="shape"):
            repo.add(S[:, :10])
        with pytest.raises(ValueError, match="NaN"):
            repo.add(np.full((1, D), np.nan))
        assert len(repo) == 21  # failed calls stored nothing
        assert repo.delete([0, 1]) == 2
        with pytest.raises(ValueError, match="no sketch"):
            repo.delete([0])
        with pytest.raises(ValueError, match="no sketch"):
            repo.get([0])
    with Repository.open(path) as again:
        assert len(again) == 19 and again.sketcher.modules == sk.modules
        assert np.array_equal(again.get([2, 100]), S[[2, 12]])
    with pytest.raises(ValueError, match="different Sketcher"):
        Repository.open(path, rs.Sketcher(D, family="orthogonal", seed=2))
    with pytest.raises(ValueError, match="not an empty folder"):
        Repository.create(path, sk)
    with pytest.raises(ValueError, match="not a recsketch repository"):
        Repository.open(tmp_path)


def test_float16_storage_halves_the_space(tmp_path):
    sk, S = rooms(5)
    with Repository.create(tmp_path / "h", sk, dtype="float16") as repo:
        repo.add(S)
        np.testing.assert_allclose(repo.get(np.arange(5)), S, rtol=1e-3, atol=1e-6)
        assert repo.stats()["data_bytes"] == 5 * D * 2


def test_search_recall_at_10_against_brute_force(tmp_path):
    sk = sketcher()
    names = [f"m{k}" for k in range(12)]
    graphs = []
    for k in range(2000):
        rng = np.random.default_rng(k)
        g = rs.Graph()
        present = rng.choice(12, size=int(rng.integers(1, 5)), replace=False)
        w = rng.dirichlet(np.ones(present.size))
        g.set_output([(g.add(names[p], unit(rng, 8)), float(x)) for p, x in zip(present, w)])
        graphs.append(g)
    S = sk.sketch_many(graphs)
    with Repository.create(tmp_path / "s", sk) as repo:
        repo.add(S)
        unit_rows = S / np.linalg.norm(S, axis=1, keepdims=True)
        hits = 0
        queries = range(0, 2000, 40)
        for q in queries:
            exact = unit_rows @ unit_rows[q]
            exact[q] = -np.inf
            truth = np.argsort(-exact)[:10]
            found, sims = repo.search(q, 10)
            hits += np.isin(found, truth).sum()
            np.testing.assert_allclose(sims, exact[found], atol=1e-5)  # exact re-ranking
            assert np.all(np.diff(sims) <= 1e-12)
        recall = hits / (10 * len(queries))
        assert recall >= 0.95, recall
        found, _ = repo.search(S[7], 1)  # a vector query finds itself
        assert found.tolist() == [7]


def test_aggregates_match_direct_queries_and_survive_forgetting(tmp_path):
    sk, S = rooms(30)
    days = np.arange(30) * 86400.0
    with Repository.create(tmp_path / "a", sk) as repo:
        repo.add(S, timestamps=days)
        ids, counts = repo.count("wall", 0.25)
        np.testing.assert_allclose(counts, sk.count(S, "wall", 0.25), rtol=1e-6)
        mean = repo.mean_attributes("wall", since=10 * 86400)
        sel = slice(10, 30)
        expect = (sk.summed_attributes(S[sel], "wall", 1.0).sum(axis=0)
                  / sk.mass(S[sel], "wall").sum())
        np.testing.assert_allclose(mean, expect, rtol=1e-5)
        before = repo.stats()["data_bytes"]
        out = repo.forget([(5 * 86400, 1.0), (20 * 86400, 0.25), (float("inf"), 1 / 16)],
                          now=29 * 86400.0)
        assert out["truncated"] == 24 and out["bytes_after"] < before
        lengths = repo.lengths(ids)
        assert set(lengths.tolist()) == {D, D // 4, 256}  # 1/16 is below index_dim = 256
        _, after = repo.count("wall", 0.25)
        for length in (D // 4, 256):
            rows = lengths == length
            direct = sk.count(rs.erase(S[rows], int(length)), "wall", 0.25)
            np.testing.assert_allclose(after[rows], direct, rtol=1e-5)
        assert repo.search(29, 3)[0].size == 3
        with pytest.raises(ValueError, match="ages must increase"):
            repo.forget([(10.0, 1.0), (5.0, 0.5)])


def test_explain_and_clusters(tmp_path):
    sk = sketcher()
    rng = np.random.default_rng(0)
    graphs = []
    for k in range(40):
        g = rs.Graph()
        animal = "cat" if k < 20 else "dog"
        g.set_output([(g.add(animal, unit(rng, 8)), 0.6), (g.add("wall", unit(rng, 4)), 0.4)])
        graphs.append(g)
    with Repository.create(tmp_path / "c", sk) as repo:
        repo.add_graphs(graphs, timestamps=np.arange(40) * 86400.0)
        assert set(repo.sketcher.modules) == {"cat", "dog", "wall"}
        ranked = repo.explain(0, 1)  # two cat days
        assert ranked[0][0] == "cat" and ranked[0][2] > 0.5
        # object level: the cat (position 1) explains more than the wall (position 2)
        objects = repo.explain(0, 1, paths={"cat": [[1]], "wall": [[2]]})
        assert objects[0][0] == ("cat", (1,)) and objects[0][1] > objects[1][1] > 0
        c = repo.clusters(2)
        assert sorted(c.sizes.tolist()) == [20, 20]
        assert len(set(c.labels[:20])) == 1 and len(set(c.labels[20:])) == 1
        new = c.new_since(20 * 86400.0)
        assert len(new) == 1 and set(c.members(new[0]).tolist()) == set(range(20, 40))
    with Repository.open(tmp_path / "c") as again:
        assert "dog" in again.sketcher.modules


WRITER = textwrap.dedent("""
    import sys, numpy as np, recsketch as rs
    from recsketch.repository import Repository
    repo = Repository.open(sys.argv[1])
    d = repo.sketcher.d_sketch
    rng = np.random.default_rng(int(sys.argv[2]))
    b = int(sys.argv[3])
    while True:
        n = int(rng.integers(1, 200))
        rows = np.full((n, d), float(b + 1), dtype=np.float32)
        rows[:, 0] = np.arange(n)  # position in the batch
        repo.add(rows, labels={"batch": b, "size": n})
        print(b, flush=True)
        b += 1
""")

READER = textwrap.dedent("""
    import sys, time, numpy as np
    from recsketch.repository import Repository
    repo = Repository.open(sys.argv[1])
    checks, deadline = 0, time.time() + float(sys.argv[2])
    while time.time() < deadline:
        ids = repo.ids()
        if ids.size == 0:
            continue
        rows = repo.get(ids)
        labels = repo.labels(ids[-5:])
        for r, lab in zip(rows[-5:], labels):
            assert r[1] == lab["batch"] + 1 and np.all(r[1:] == r[1]), "torn row"
        batches = rows[:, 1]
        for b in np.unique(batches):
            assert np.sum(batches == b) == np.max(rows[batches == b, 0]) + 1, "partial batch"
        checks += 1
    print(checks)
""")


def check_consistent(repo):
    ids = repo.ids()
    rows = repo.get(ids)
    labels = repo.labels(ids)
    sizes = {}
    for r, lab in zip(rows, labels):
        assert np.all(r[1:] == lab["batch"] + 1)
        sizes.setdefault(lab["batch"], []).append(int(r[0]))
    for b, idx in sizes.items():
        n = [lab["size"] for lab in labels if lab["batch"] == b][0]
        assert sorted(idx) == list(range(n)), f"batch {b} is partial"
    return sizes


def run_writer(path, seed, first_batch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seed),
                             str(first_batch)], stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_a_writer_killed_by_sigkill_loses_at_most_its_batch(tmp_path):
    path = tmp_path / "k"
    Repository.create(path, rs.Sketcher(4096, family="orthogonal")).close()
    next_batch = 0
    for trial in range(4):
        proc = run_writer(path, trial, next_batch)
        for _ in range(3 + trial):
            proc.stdout.readline()  # a few committed batches
        time.sleep(0.013 * (trial + 1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with Repository.open(path) as repo:
            sizes = check_consistent(repo)
            assert len(sizes) >= 3
            next_batch = max(sizes) + 1
            n = len(repo)
            # the next writer cuts whatever the killed one left past the committed end
            row = np.full((1, 4096), next_batch + 1.0, np.float32)
            row[0, 0] = 0
            new = repo.add(row, labels={"batch": next_batch, "size": 1})
            assert len(repo) == n + 1
            assert np.all(repo.get(new)[0, 1:] == next_batch + 1)
            next_batch += 1
        with Repository.open(path):
            db = sqlite3.connect(str(path / "repo.sqlite"))  # read independently of the code
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            db.close()
            data = path / f"data.{meta['generation']}.bin"
            assert data.stat().st_size == int(meta["data_end"]) * 4


@pytest.mark.slow
def test_readers_see_only_whole_batches_while_a_writer_adds(tmp_path):
    path = tmp_path / "c"
    Repository.create(path, rs.Sketcher(4096, family="orthogonal")).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = run_writer(path, 0, 0)
    writer.stdout.readline()
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    outs = [r.communicate(timeout=120) for r in readers]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    for (out, err), r in zip(outs, readers):
        assert r.returncode == 0, err
        assert int(out.strip()) > 0
    with Repository.open(path) as repo:
        check_consistent(repo)


def test_a_torn_tail_left_by_a_killed_writer_is_cut_by_the_next_one(tmp_path):
    # What SIGKILL between the data write and the commit leaves (seen in about 3 kills of 10
    # above): bytes past the committed end. Readers ignore them; the next writer cuts them.
    sk, S = rooms(4)
    with Repository.create(tmp_path / "t", sk) as repo:
        repo.add(S[:2])
        data = tmp_path / "t" / "data.0.bin"
        with open(data, "ab") as f:
            f.write(np.full(D + 17, 7.0, np.float32).tobytes())
        assert np.array_equal(repo.get([0, 1]), S[:2]) and len(repo) == 2
        repo.add(S[2:])
        assert data.stat().st_size == 4 * D * 4
        assert np.array_equal(repo.get(np.arange(4)), S)


def test_threads_sharing_a_repository(tmp_path):
    import threading

    sk, S = rooms(8)
    repo = Repository.create(tmp_path / "th", sk)
    errors = []

    def writer():
        try:
            for _ in range(40):
                repo.add(S[:3])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            for _ in range(80):
                ids = repo.ids()
                if ids.size:
                    repo.get(ids[-3:])
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(repo) == 120
    assert np.array_equal(repo.get(repo.ids()), np.tile(S[:3], (40, 1)))
    repo.close()


def test_ids_are_exact_and_never_reused(tmp_path):
    sk, S = rooms(3)
    with Repository.create(tmp_path / "ids", sk) as repo:
        big = [2**60 + 1, 2**60 + 3]
        repo.add(S[:2], ids=big)
        assert repo.ids().tolist() == big
        assert repo.search(big[0], 1)[0].tolist() == [big[1]]
        repo.delete([big[0]])
        with pytest.raises(ValueError, match="cannot be reused"):
            repo.add(S[2], ids=[big[0]])


def test_registry_merges_across_instances_and_label_filters(tmp_path):
    sk = sketcher()
    path = tmp_path / "m"
    Repository.create(path, sk).close()
    a, b = Repository.open(path), Repository.open(path)
    rng = np.random.default_rng(0)
    for repo, animal in ((a, "cat"), (b, "dog")):
        g = rs.Graph()
        g.set_output([(g.add(animal, unit(rng, 4)), 1.0)])
        repo.add_graphs([g], labels={"animal": animal, "pos": {"y": 1, "x": 2}, "flag": True})
    a.close()
    b.close()
    with Repository.open(path) as repo:
        assert {"cat", "dog"} <= set(repo.sketcher.modules)
        assert repo.select(where={"pos": {"x": 2, "y": 1}}).size == 2
        assert repo.select(where={"flag": True}).size == 2
        assert repo.select(where={"flag": 1}).size == 0
        assert repo.select(where={"animal": "dog"}).size == 1


def test_explain_reads_forgotten_sketches_as_erased(tmp_path):
    sk, S = rooms(2)
    with Repository.create(tmp_path / "e", sk) as repo:
        repo.add(S, timestamps=[0.0, 0.0])
        full = dict((n, c) for n, c, _ in repo.explain(0, 1))
        repo.forget([(1.0, 0.5)], now=100.0)
        half = dict((n, c) for n, c, _ in repo.explain(0, 1))
    # rescaled prefixes estimate the same contributions (noisier), not a quarter of them
    assert 0.5 < half["cat"] / full["cat"] < 2.0
