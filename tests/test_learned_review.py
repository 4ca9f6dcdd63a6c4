"""Defects of learned modules found by an outside review (issue 16): each test fails on the code
before its fix."""

import sqlite3

import numpy as np
import pytest

import recsketch as rs
from recsketch.learned import LearnedModule
from recsketch.repository import Repository
from scenes import unit

D = 1014


def _day(rng, new):
    g = rs.Graph()
    out = [(g.add("cat", unit(rng, 8)), 0.3)]
    if new:
        out.append((g.add("dog", unit(rng, 6)), 0.3))
    g.set_output(out)
    return g


def _grown_repo(tmp_path, rng, n_old=20, n_new=20):
    repo = Repository.create(tmp_path / "r", rs.Sketcher(D, seed=1))
    repo.add_graphs([_day(rng, False) for _ in range(n_old)], timestamps=list(range(n_old)))
    repo.add_graphs([_day(rng, True) for _ in range(n_new)],
                    timestamps=list(range(n_old, n_old + n_new)))
    return repo


class _Connection:
    """Delegates to a sqlite3 connection; ``fault(sql)`` runs before each ``execute``."""

    def __init__(self, db, fault):
        self._db, self._fault = db, fault

    def execute(self, sql, *args):
        self._fault(sql)
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_failed_add_learned_leaves_no_half_registered_module(tmp_path):
    rng = np.random.default_rng(0)
    repo = _grown_repo(tmp_path, rng)
    lm = LearnedModule.fit("z", repo.get(repo.select(since=20)), repo.get(repo.select(until=20)),
                           weight=0.2)
    store = repo._store
    real = store._db
    fired = []

    def commit_fails(sql):
        if sql == "COMMIT" and not fired:
            fired.append(sql)
            raise sqlite3.OperationalError("disk I/O error")

    store._db = _Connection(real, commit_fails)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        repo.add_learned(lm)
    store._db = real
    assert fired
    assert "z" not in repo.sketcher.modules and repo.learned_modules == {}
    repo.add_graphs([_day(rng, True) for _ in range(3)])  # an ordinary add afterwards
    repo.close()
    with Repository.open(tmp_path / "r") as again:
        assert "z" not in again.sketcher.modules and again.learned_modules == {}
        again.add_learned(lm)  # was "already exists" forever
        assert list(again.learned_modules) == ["z"]
    with Repository.open(tmp_path / "r") as again:
        assert list(again.learned_modules) == ["z"] and "z" in again.sketcher.modules
