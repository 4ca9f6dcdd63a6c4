"""A Repository shared by threads (the README's promise): every public method run from several
threads at once, beside writers that add, register new modules, forget and delete, returns what
it returns when run alone."""

import sys
import threading
import time

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository
from scenes import room, unit

D = 1024
ROOMS, FLAT = 12, 12
BASE = ROOMS + FLAT
MODULES = [f"m{k}" for k in range(12)]  # more than the Sketcher's caches hold in rotation


def _flat(rng):
    g = rs.Graph()
    present = rng.choice(len(MODULES), size=int(rng.integers(3, 7)), replace=False)
    w = rng.dirichlet(np.ones(present.size))
    g.set_output([(g.add(MODULES[p], unit(rng, 6)), float(x)) for p, x in zip(present, w)])
    return g


def _base(tmp_path):
    sk = rs.Sketcher(D, family="orthogonal", seed=1)
    graphs = ([room(np.random.default_rng(k))[0] for k in range(ROOMS)]
              + [_flat(np.random.default_rng(100 + k)) for k in range(FLAT)])
    repo = Repository.create(tmp_path / "threads", sk)
    now = 1e9
    repo.add_graphs(graphs, timestamps=now, labels={"base": True})
    return repo, now


def _reads(repo):
    """Every read method on the base sketches only (writers never touch those)."""
    base = {"base": True}
    per_module = {f"count_{m}": (lambda m=m: repo.count(m, 0.2, where=base)) for m in MODULES}
    return {
        **per_module,
        "get": lambda: repo.get(np.arange(BASE)),
        "select": lambda: repo.select(where=base),
        "search": lambda: repo.search(3, 5),
        "count": lambda: repo.count("wall", 0.25, where=base),
        "mass": lambda: repo.mass("cat", where=base),
        "mean_attributes": lambda: repo.mean_attributes("edge", where=base),
        "clusters": lambda: repo.clusters(3, where=base, seed=0).labels,
        "explain": lambda: {n: c for n, c, _ in repo.explain(0, 1)
                            if n in ("cat", "edge", "wall")},
        "explain_paths": lambda: repo.explain(0, 1, paths={"cat": [[1]]}),
        "stats_modules": lambda: set(repo.stats()["modules"]) >= {"cat", "edge", "wall"},
        "timestamps": lambda: repo.timestamps(np.arange(BASE)),
        "timestamps_all": lambda: repo.timestamps()[:BASE],
        "labels": lambda: repo.labels(np.arange(BASE)),
        "lengths": lambda: repo.lengths(np.arange(BASE)),
        "ids": lambda: repo.ids()[:BASE],
        "len": lambda: len(repo) >= BASE,
    }


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (np.ndarray, float, np.floating)):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return a == b


class _Overlaps:
    """Wraps public Sketcher methods on one instance to record whether two threads were ever
    inside them at once (the Sketcher is not thread-safe, so the Repository must serialise its
    calls). A short sleep inside each call widens the window a race needs."""

    METHODS = ("count", "mass", "summed_attributes", "attributes", "sketch_many",
               "register_module")

    def __init__(self, sketcher, monkeypatch):
        self.inside = {}  # thread -> nesting depth (count calls mass on the same thread)
        self.overlaps = 0
        self._guard = threading.Lock()
        for name in self.METHODS:
            monkeypatch.setattr(sketcher, name, self._wrap(getattr(sketcher, name)))

    def _wrap(self, fn):
        def call(*args, **kwargs):
            me = threading.get_ident()
            with self._guard:
                self.overlaps += any(n for t, n in self.inside.items() if t != me)
                self.inside[me] = self.inside.get(me, 0) + 1
            try:
                time.sleep(1e-4)
                return fn(*args, **kwargs)
            finally:
                with self._guard:
                    self.inside[me] -= 1
        return call


@pytest.mark.slow
def test_every_method_from_threads_matches_single_threaded(tmp_path, monkeypatch):
    repo, now = _base(tmp_path)
    reads = _reads(repo)
    expected = {name: fn() for name, fn in reads.items()}  # alone, before any thread starts
    calls = _Overlaps(repo.sketcher, monkeypatch)
    # switch threads every microsecond so unlocked shared state gets interleaved
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors, mismatches = [], []
    rounds = 6

    def reader(seed):
        rng = np.random.default_rng(seed)
        names = list(reads)
        try:
            for _ in range(rounds * len(names)):
                name = names[int(rng.integers(len(names)))]
                got = reads[name]()
                if not _same(got, expected[name]):
                    mismatches.append(name)
        except Exception as exc:
            errors.append(repr(exc))

    def writer(w):
        rng = np.random.default_rng(100 + w)
        try:
            for r in range(rounds):
                # scratch sketches, old (forget truncates them, never the base) and pointing
                # away from the base (search never ranks them above a base sketch)
                old_rows = -repo.get(rng.integers(0, BASE, size=3))
                ids = repo.add(old_rows, timestamps=0.0, labels={"scratch": w})
                # a graph with a module nobody registered yet: mutates the shared registry
                g = rs.Graph()
                g.set_output([(g.add(f"new_{w}_{r}", unit(rng, 5)), 1.0)])
                repo.add_graphs([g], timestamps=now, labels={"graph": w})
                repo.forget([(10.0, 1.0), (float("inf"), 0.5)], now=now)
                repo.delete(ids)
                repo.compact()
                repo.stats()
        except Exception as exc:
            errors.append(repr(exc))

    threads = ([threading.Thread(target=reader, args=(s,)) for s in range(3)]
               + [threading.Thread(target=writer, args=(w,)) for w in range(2)])
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert mismatches == []
    assert calls.overlaps == 0  # the Repository never ran two Sketcher calls at once
    # the writers' net effect, as if run one after the other
    assert len(repo) == BASE + 2 * rounds
    assert {f"new_{w}_{r}" for w in range(2) for r in range(rounds)} <= set(repo.sketcher.modules)
    for name, fn in reads.items():
        assert _same(fn(), expected[name]), name
    repo.close()
    with Repository.open(tmp_path / "threads") as again:
        assert len(again) == BASE + 2 * rounds
        assert f"new_1_{rounds - 1}" in again.sketcher.modules
