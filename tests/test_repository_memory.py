"""Aggregates over a repository larger than the memory a process may use: the stored sketches
are streamed in chunks (Repository.chunk_bytes), never loaded or mapped all at once."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import DEFAULT_CHUNK_BYTES, Repository
from scenes import room

D = 1024
UNIQUE = 64
TILES = 1536                 # 98,304 sketches: 384 MiB of float32 values
BUDGET = 160 << 20           # address space the aggregates may add to the warmed-up process
CHUNK = 8 << 20

AGGREGATE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from recsketch.repository import Repository

    def vm_bytes():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    repo = Repository.open(sys.argv[1])
    repo.chunk_bytes = int(sys.argv[3])
    # the lazy allocations (thread pools, BLAS buffers, query caches) happen before the limit
    repo.count("wall", 0.25, where={"warm": True})
    repo.mass("cat", where={"warm": True})
    repo.mean_attributes("edge", where={"warm": True})
    limit = vm_bytes() + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    ids, counts = repo.count("wall", 0.25)
    _, masses = repo.mass("cat")
    mean = repo.mean_attributes("edge")
    np.savez(sys.argv[4], ids=ids, counts=counts, masses=masses, mean=mean)
""")


@pytest.mark.slow
def test_aggregates_stream_a_repository_larger_than_the_memory_limit(tmp_path):
    sk = rs.Sketcher(D, family="orthogonal", seed=1)
    S = sk.sketch_many([room(np.random.default_rng(k))[0] for k in range(UNIQUE)])
    path = tmp_path / "big"
    with Repository.create(path, sk) as repo:
        repo.add(S, labels={"warm": True})
        block = np.tile(S, (128, 1))
        for _ in range(TILES // 128):
            repo.add(block)
        assert repo.stats()["data_bytes"] == (TILES + 1) * UNIQUE * D * 4 > 2 * BUDGET
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # 8 MiB chunks, and the default 64 MiB: the documented 2.5 x chunk_bytes (160 MiB)
    for chunk in (CHUNK, DEFAULT_CHUNK_BYTES):
        out = tmp_path / f"out{chunk}.npz"
        proc = subprocess.run([sys.executable, "-c", AGGREGATE, str(path),
                               str(max(BUDGET, 5 * chunk // 2)), str(chunk), str(out)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, (chunk, proc.stderr[-2000:])
        _check(np.load(out), sk, S)


def _check(got, sk, S):
    n = (TILES + 1) * UNIQUE
    assert got["ids"].tolist() == list(range(n))
    # the independent computation: the Sketcher's own queries on the distinct sketches
    np.testing.assert_allclose(got["counts"], np.tile(sk.count(S, "wall", 0.25), TILES + 1),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["masses"], np.tile(sk.mass(S, "cat"), TILES + 1),
                               rtol=1e-6, atol=1e-9)
    expect = sk.summed_attributes(S, "edge", 1.0).sum(axis=0) / sk.mass(S, "edge").sum()
    np.testing.assert_allclose(got["mean"], expect, rtol=1e-5)


def test_chunked_aggregates_match_direct_queries_across_gaps_and_float16(tmp_path):
    # chunks of 3 sketches, rows not back to back (deleted ones between), and float16 storage:
    # the streamed answers are the Sketcher's own on the stored values
    sk = rs.Sketcher(D, family="orthogonal", seed=1)
    S = sk.sketch_many([room(np.random.default_rng(k))[0] for k in range(20)])
    with Repository.create(tmp_path / "h", sk, dtype="float16") as repo:
        repo.add(S, timestamps=np.arange(20) * 86400.0)
        repo.delete([3, 4, 9, 15])
        repo.chunk_bytes = 3 * D * 4
        stored = S.astype(np.float16).astype(np.float32)
        keep = np.setdiff1d(np.arange(20), [3, 4, 9, 15])
        ids, counts = repo.count("wall", 0.25)
        assert ids.tolist() == keep.tolist()
        np.testing.assert_allclose(counts, sk.count(stored[keep], "wall", 0.25), rtol=1e-5)
        mean = repo.mean_attributes("edge", since=5 * 86400)
        sel = keep[keep >= 5]
        expect = (sk.summed_attributes(stored[sel], "edge", 1.0).sum(axis=0)
                  / sk.mass(stored[sel], "edge").sum())
        np.testing.assert_allclose(mean, expect, rtol=1e-5)
        repo.forget([(5 * 86400, 1.0), (float("inf"), 0.5)], now=19 * 86400.0)
        _, masses = repo.mass("cat")
        lengths = repo.lengths(keep)
        direct = np.empty(keep.size)
        for length in np.unique(lengths):
            rows = lengths == length
            part = stored[keep[rows]]
            direct[rows] = sk.mass(part if length == D else rs.erase(part, int(length)), "cat")
        np.testing.assert_allclose(masses, direct, rtol=1e-5)
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match="chunk_bytes"):
                repo.chunk_bytes = bad
