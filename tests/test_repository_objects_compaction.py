"""Compaction of the stored object sketches (repository/objects.py, ObjectStore.compact):
deleted objects' bytes reclaimed, live ones bit-identical, crash safety like the sketches'
rewrite (tests/test_repository_faults.py's fault injection), readers on retired generations."""

import sqlite3

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository
from scenes import room
from faults import failing_commit

D = 1014


def _repo(tmp_path, n=6):
    sk = rs.Sketcher(D, seed=5)
    graphs = [room(np.random.default_rng(k))[0] for k in range(n)]
    repo = Repository.create(tmp_path / "r", sk)
    ids = repo.add_graphs(graphs, objects=True)
    return repo, graphs, ids


def _objects_bytes(repo):
    objs = repo._objects
    return objs.file(objs.generation()).stat().st_size


def test_compaction_reclaims_deleted_objects_and_keeps_the_others_bit_for_bit(tmp_path):
    repo, graphs, ids = _repo(tmp_path)
    item = np.dtype(np.float32).itemsize
    n_all = repo.object_count()
    assert _objects_bytes(repo) == n_all * D * item
    repo.delete(ids[[1, 3]])
    live = repo.object_count()
    assert live == n_all - len(list(graphs[1])) - len(list(graphs[3]))
    assert _objects_bytes(repo) == n_all * D * item  # not yet reclaimed
    out = repo.compact()
    assert out["objects"] == live
    assert out["object_bytes_before"] == n_all * D * item
    assert out["object_bytes_after"] == live * D * item == _objects_bytes(repo)
    assert repo._objects.generation() == 1
    fresh = rs.Sketcher(D, seed=5)  # independent: the object sketches computed again
    for k in (0, 2, 4, 5):
        modules, stored = repo.object_sketches(int(ids[k]))
        _, objs = fresh.sketch(graphs[k], return_objects=True)
        assert modules == [h.module for h in graphs[k]]
        assert stored.tobytes() == objs.tobytes()
    # find_object reads the new offsets
    s = fresh.sketch(graphs[2])
    assert int(repo.find_object(s, "cat", 1, path=[1]).graph_ids[0]) == int(ids[2])
    # adding after compaction appends to the new generation
    more = repo.add_graphs([room(np.random.default_rng(50))[0]], objects=True)
    _, objs = fresh.sketch(room(np.random.default_rng(50))[0], return_objects=True)
    assert repo.object_sketches(int(more[0]))[1].tobytes() == objs.tobytes()
    repo.close()
    with Repository.open(tmp_path / "r") as again:
        assert again.object_sketches(int(ids[5]))[1].tobytes() == \
            fresh.sketch(graphs[5], return_objects=True)[1].tobytes()
    # forget compacts the objects too
    with Repository.open(tmp_path / "r") as again:
        again.delete([int(ids[0])])
        out = again.forget(now=0)
        assert out["object_bytes_after"] == again.object_count() * D * item
        assert again._objects.generation() == 2


def test_old_generations_are_kept_for_two_compactions_then_removed(tmp_path):
    repo, _, ids = _repo(tmp_path, 3)
    files = lambda: sorted(p.name for p in (tmp_path / "r").glob("objects*.bin"))
    assert files() == ["objects.bin"]
    for _ in range(3):
        repo.compact(force=True)
    assert files() == ["objects.1.bin", "objects.2.bin", "objects.3.bin"]
    repo.compact(force=True)
    assert files() == ["objects.2.bin", "objects.3.bin", "objects.4.bin"]
    repo.close()


def test_a_reader_on_a_retired_generation_takes_a_new_snapshot(tmp_path, monkeypatch):
    repo, graphs, ids = _repo(tmp_path, 3)
    other = Repository.open(tmp_path / "r")  # another writer (as if another process)
    want = repo.object_sketches(int(ids[1]))[1]
    idx, modules, off, gen = repo._objects.of_graph(int(ids[1]))
    for _ in range(3):
        other.compact(force=True)
    with pytest.raises(FileNotFoundError):
        repo._objects.read(off, gen)
    # object_sketches and find_object retry: three compactions right after their snapshot
    calls = []

    def compacted_after_first_snapshot(snapshot):
        """``snapshot``, then (on the first call only) three compactions by the other writer."""
        def wrapped(key):
            out = snapshot(key)
            if not calls:
                calls.append(1)
                for _ in range(3):
                    other.compact(force=True)
            return out
        return wrapped
    monkeypatch.setattr(repo._objects, "of_graph",
                        compacted_after_first_snapshot(repo._objects.of_graph))
    assert repo.object_sketches(int(ids[1]))[1].tobytes() == want.tobytes()
    assert calls
    s = rs.Sketcher(D, seed=5).sketch(graphs[1])
    # what a reader gets with no compaction under it (whether its top-1 is the true object
    # depends on the estimator's noise, not on the retry tested here)
    with Repository.open(tmp_path / "r") as calm:
        want_m = calm.find_object(s, "cat", 3, path=[1], rerank=True)
    calls.clear()
    monkeypatch.setattr(repo._objects, "of_module",
                        compacted_after_first_snapshot(repo._objects.of_module))
    m = repo.find_object(s, "cat", 3, path=[1], rerank=True)
    assert calls
    for field in ("object_ids", "graph_ids", "indices", "scores", "fingerprint_scores"):
        np.testing.assert_array_equal(getattr(m, field), getattr(want_m, field))
    other.close()
    repo.close()


def test_an_interrupt_right_after_the_compaction_commits_keeps_the_new_generation(tmp_path):
    repo, graphs, ids = _repo(tmp_path, 4)
    repo.delete([int(ids[0])])
    want = {int(i): repo.object_sketches(int(i))[1] for i in ids[1:]}
    with failing_commit(repo._store, KeyboardInterrupt, after=True) as fired:
        with pytest.raises(KeyboardInterrupt):
            repo._objects.compact()
    assert fired and repo._objects.generation() == 1
    assert repo._objects.file(1).is_file()
    for i, v in want.items():
        assert repo.object_sketches(i)[1].tobytes() == v.tobytes()
    repo.close()


def test_a_failed_compaction_commit_keeps_the_old_generation_and_removes_the_new_file(
        tmp_path):
    repo, graphs, ids = _repo(tmp_path, 4)
    repo.delete([int(ids[0])])
    want = {int(i): repo.object_sketches(int(i))[1] for i in ids[1:]}
    store = repo._store
    with failing_commit(store, sqlite3.OperationalError("disk I/O error")):
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            repo._objects.compact()
    assert not store._db.in_transaction and repo._objects.generation() == 0
    assert not repo._objects.file(1).exists()
    for i, v in want.items():
        assert repo.object_sketches(i)[1].tobytes() == v.tobytes()
    # a killed compaction's file (written, never committed) is removed by the next writer
    repo._objects.file(1).write_bytes(b"torn")
    out = repo._objects.compact()
    assert repo._objects.generation() == 1 and out["objects"] == len(
        [h for k in (1, 2, 3) for h in graphs[k]])
    for i, v in want.items():
        assert repo.object_sketches(i)[1].tobytes() == v.tobytes()
    repo.close()


def test_compact_with_nothing_deleted_writes_no_new_generation(tmp_path):
    repo, _, ids = _repo(tmp_path, 3)
    root = tmp_path / "r"
    files = lambda: sorted(p.name for p in root.iterdir() if p.suffix == ".bin")
    before = files()
    gen = int(repo._store.meta()["generation"])
    out = repo.compact()
    assert files() == before and int(repo._store.meta()["generation"]) == gen
    assert repo._objects.generation() == 0
    assert out["bytes_before"] == out["bytes_after"]
    assert out["object_bytes_before"] == out["object_bytes_after"]
    # a deletion leaves dead bytes: both files are rewritten
    repo.delete([int(ids[0])])
    out = repo.compact()
    assert int(repo._store.meta()["generation"]) == gen + 1 and repo._objects.generation() == 1
    assert out["object_bytes_after"] < out["object_bytes_before"]
    with pytest.raises(TypeError, match="force"):
        repo.compact(force=1)
    repo.close()
