"""Races, faults and bad arguments found by review (issue 12 part B): each test injects the
event (a concurrent writer, a short read, an exception) at the exact point it matters."""

import os

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository
from faults import failing_commit
from scenes import room


def _repo(tmp_path, n=5, d=256):
    repo = Repository.create(tmp_path / "r", rs.Sketcher(d, family="orthogonal"))
    repo.add_graphs([room(np.random.default_rng(k))[0] for k in range(n)])
    return repo


def test_timestamps_of_ids_added_meanwhile_come_from_one_snapshot(tmp_path, monkeypatch):
    repo = Repository.create(tmp_path / "r", rs.Sketcher(64, family="orthogonal"))
    s = np.abs(np.random.default_rng(0).normal(size=(4, 64)))
    repo.add(s[:2], ids=[1, 9], timestamps=[100.0, 900.0])
    store = repo._store
    real_lookup = store.lookup
    pending = [(5, 555.0), (30, 3000.0)]

    def another_writer_adds_first(*a, **k):  # a writer commits just before the lookup
        if pending:
            i, t = pending.pop(0)
            repo.add(s[2 if i == 5 else 3], ids=[i], timestamps=t)
        return real_lookup(*a, **k)

    monkeypatch.setattr(store, "lookup", another_writer_adds_first)
    assert repo.timestamps([5]).tolist() == [555.0]    # was 900.0 (id 9's)
    assert repo.timestamps([30]).tolist() == [3000.0]  # was IndexError
    monkeypatch.setattr(store, "lookup", real_lookup)
    assert repo.timestamps().tolist() == [100.0, 555.0, 900.0, 3000.0]
    repo.close()


def _three_rewrites_elsewhere_first(tmp_path, monkeypatch, target, name):
    """Make the first call of ``target.name`` wait until another process (here: another
    Repository on the same folder, with its own lock) has rewritten the data three times,
    which retires the generation the caller's snapshot points into."""
    real = getattr(target, name)
    other = Repository.open(tmp_path / "r")
    state = {"done": False}

    def rewrites_first(*a, **k):
        if not state["done"]:
            state["done"] = True
            for _ in range(3):
                other.compact(force=True)
        return real(*a, **k)

    monkeypatch.setattr(target, name, rewrites_first)
    return other, state


@pytest.mark.parametrize("query", ["count", "mass", "mean_attributes"])
def test_streamed_aggregates_survive_three_rewrites_after_their_snapshot(tmp_path, monkeypatch,
                                                                         query):
    repo = _repo(tmp_path)
    expected = {"count": lambda: repo.count("wall", 0.25)[1], "mass": lambda: repo.mass("cat")[1],
                "mean_attributes": lambda: repo.mean_attributes("edge")}[query]
    want = expected()
    gen = int(repo._store.meta()["generation"])
    # the descriptor is opened right after the snapshot is read
    other, state = _three_rewrites_elsewhere_first(tmp_path, monkeypatch, os, "open")
    got = expected()
    assert state["done"] and int(repo._store.meta()["generation"]) == gen + 3
    np.testing.assert_array_equal(got, want)
    other.close()
    repo.close()


@pytest.mark.parametrize("query", ["get", "search", "clusters", "explain"])
def test_mapped_reads_survive_three_rewrites_after_their_snapshot(tmp_path, monkeypatch, query):
    repo = _repo(tmp_path, n=8)
    run = {"get": lambda: repo.get([3, 1]), "search": lambda: repo.search(2, 3),
           "clusters": lambda: repo.clusters(2, seed=0).labels,
           "explain": lambda: repo.explain(0, 1)}[query]
    want = run()
    repo._store._map = None  # the next read maps the data file afresh
    repo._index._change = -1  # and the index catches up again
    other, state = _three_rewrites_elsewhere_first(tmp_path, monkeypatch, np, "memmap")
    got = run()
    assert state["done"]
    assert type(got) is type(want)
    if isinstance(want, list):
        assert [w for w, _, _ in got] == [w for w, _, _ in want]
        np.testing.assert_allclose([c for _, c, _ in got], [c for _, c, _ in want], rtol=1e-6)
    elif isinstance(want, tuple):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)
    other.close()
    repo.close()


def test_an_interrupt_right_after_a_rewrite_commits_keeps_the_new_data_file(tmp_path):
    repo = _repo(tmp_path)
    want = repo.get(np.arange(5))
    store = repo._store
    with failing_commit(store, KeyboardInterrupt, after=True) as fired:
        with pytest.raises(KeyboardInterrupt):
            repo.compact(force=True)
    assert fired
    gen = int(store.meta()["generation"])
    assert gen == 1 and store.data_path(gen).is_file()  # the committed generation's file
    np.testing.assert_array_equal(repo.get(np.arange(5)), want)
    repo.close()
    with Repository.open(tmp_path / "r") as again:
        np.testing.assert_array_equal(again.get(np.arange(5)), want)


def test_a_failed_commit_is_rolled_back_and_the_next_write_works(tmp_path):
    import sqlite3

    repo = _repo(tmp_path)
    want = repo.get(np.arange(5))
    store = repo._store
    with failing_commit(store, sqlite3.OperationalError("disk I/O error")):
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            repo.add(want[:2], timestamps=1.0)
    assert not store._db.in_transaction
    assert len(repo) == 5  # the failed batch is not visible
    ids = repo.add(want[:2], timestamps=2.0)  # and the connection is usable
    assert ids.tolist() == [5, 6] and len(repo) == 7
    np.testing.assert_array_equal(repo.get([5, 6]), want[:2])
    repo.close()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_short_reads_are_read_on_not_taken_for_corruption(tmp_path, monkeypatch, dtype):
    sk = rs.Sketcher(256, family="orthogonal")
    S = sk.sketch_many([room(np.random.default_rng(k))[0] for k in range(6)])
    repo = Repository.create(tmp_path / "r", sk, dtype=dtype)
    repo.add(S)
    stored = S.astype(dtype).astype(np.float32)
    want = sk.mass(stored, "cat")
    real = os.preadv
    asked = []

    def short(fd, buffers, offset):  # legal: a read call may return fewer bytes than asked
        view = memoryview(buffers[0]).cast("B")
        asked.append(len(view))
        return real(fd, [view[:max(1, min(len(view) // 2, 1000))]], offset)

    monkeypatch.setattr(os, "preadv", short)
    repo.chunk_bytes = 1 << 30
    ids, got = repo.mass("cat")
    assert len(asked) > 6  # several calls per run of rows
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # a run longer than MAX_READ_BYTES is asked for in pieces
    from recsketch.repository import store as store_module
    monkeypatch.setattr(store_module, "MAX_READ_BYTES", 100)
    asked.clear()
    np.testing.assert_allclose(repo.mass("cat")[1], want, rtol=1e-6)
    assert 0 < max(asked) <= 100
    repo.close()


def test_a_data_file_shorter_than_its_metadata_is_a_clear_error(tmp_path):
    repo = _repo(tmp_path)
    path = repo._store.data_path(0)
    os.truncate(path, path.stat().st_size - 4)
    with pytest.raises(ValueError, match="shorter than its metadata"):
        repo.mass("cat")
    repo.close()


def test_chunk_bytes_has_a_documented_maximum(tmp_path):
    from recsketch.repository.aggregates import MAX_CHUNK_BYTES

    repo = _repo(tmp_path, n=1)
    repo.chunk_bytes = MAX_CHUNK_BYTES
    assert repo.chunk_bytes == MAX_CHUNK_BYTES == 4 << 30
    for bad in (MAX_CHUNK_BYTES + 1, 1 << 40):
        with pytest.raises(ValueError, match="chunk_bytes"):
            repo.chunk_bytes = bad
    assert repo.chunk_bytes == MAX_CHUNK_BYTES
    repo.close()


@pytest.mark.parametrize("since", [None, 1e12])  # every sketch, then none
@pytest.mark.parametrize("call, match", [
    (lambda r, s: r.count("no_such_module", 0.25, since=s), "no_such_module"),
    (lambda r, s: r.count("wall", float("nan"), since=s), "weight"),
    (lambda r, s: r.count("wall", 0.0, since=s), "weight"),
    (lambda r, s: r.count("wall", 1.5, since=s), "weight"),
    (lambda r, s: r.count("wall", 0.25, since=s, method="bogus"), "method"),
    (lambda r, s: r.mass("no_such_module", since=s), "no_such_module"),
    (lambda r, s: r.mass("cat", since=s, method="bogus"), "method"),
    (lambda r, s: r.mean_attributes("no_such_module", since=s), "no_such_module"),
    (lambda r, s: r.mean_attributes("edge", since=s, method="bogus"), "method"),
])
def test_aggregates_check_their_arguments_even_on_an_empty_selection(tmp_path, monkeypatch,
                                                                     since, call, match):
    repo = _repo(tmp_path, n=2)
    read = []
    real = repo._store.rows
    monkeypatch.setattr(repo._store, "rows", lambda *a: read.append(a) or real(*a))
    with pytest.raises(ValueError, match=match):
        call(repo, since)
    assert read == []  # refused before anything was read
    with pytest.raises(TypeError, match="weight"):
        repo.count("wall", "0.25", since=since)
    with pytest.raises(TypeError, match="module"):
        repo.mass(3, since=since)
    repo.close()


def test_time_like_is_exported_and_a_closed_store_refuses_to_read(tmp_path):
    from recsketch.repository import TimeLike
    from recsketch.repository.times import TimeLike as original

    assert TimeLike is original
    repo = _repo(tmp_path, n=2)
    store = repo._store
    r = store.lookup([0, 1])
    repo.close()
    with pytest.raises(ValueError, match="closed"):
        store.located([0, 1])
    with pytest.raises(ValueError, match="closed"):
        store.load(r.offsets, r.lengths, np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="closed"):
        repo.get([0])


def test_aggregates_hold_40_bytes_per_selected_sketch_beyond_their_chunk(tmp_path):
    import tracemalloc

    sk = rs.Sketcher(64, family="orthogonal")
    sk.register_module("m", 2, 4)
    repo = Repository.create(tmp_path / "r", sk, index_dim=16)
    n = 200_000
    values = np.abs(np.random.default_rng(0).normal(size=(n, 64))).astype(np.float32)
    repo.add(values, timestamps=np.arange(n, dtype=float))
    repo.chunk_bytes = 64 << 10
    repo.count("m", 0.5, until=10.0)  # lazy allocations (caches, thread pools) before measuring
    del values
    tracemalloc.start()
    try:
        ids, counts = repo.count("m", 0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids.size == counts.size == n
    # 32 bytes of metadata and 8 of result per sketch; the rest does not grow with n: one block
    # of SQLite rows as tuples (8192 x ~200 bytes) and one chunk with its float64 intermediates
    assert peak < 40 * n + 8192 * 250 + 4 * repo.chunk_bytes, peak / n
    repo.close()
