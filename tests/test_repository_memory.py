"""Aggregates over a repository larger than the memory a process may use: the stored sketches
are streamed in chunks (Repository.chunk_bytes), never loaded or mapped all at once."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository
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
    out = tmp_path / "out.npz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", AGGREGATE, str(path), str(BUDGET),
                           str(CHUNK), str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(out)
    n = (TILES + 1) * UNIQUE
    assert got["ids"].tolist() == list(range(n))
    # the independent computation: the Sketcher's own queries on the distinct sketches
    np.testing.assert_allclose(got["counts"], np.tile(sk.count(S, "wall", 0.25), TILES + 1),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["masses"], np.tile(sk.mass(S, "cat"), TILES + 1),
                               rtol=1e-6, atol=1e-9)
    expect = sk.summed_attributes(S, "edge", 1.0).sum(axis=0) / sk.mass(S, "edge").sum()
    np.testing.assert_allclose(got["mean"], expect, rtol=1e-5)
