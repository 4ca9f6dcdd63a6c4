"""Defects of learned modules found by an outside review (issue 16): each test fails on the code
before its fix."""

import sqlite3

import numpy as np
import pytest

import recsketch as rs
from recsketch.learned import LearnedModule
from recsketch.repository import Repository
from faults import failing_commit
from scenes import unit, with_output_object

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


def test_a_failed_add_learned_leaves_no_half_registered_module(tmp_path):
    rng = np.random.default_rng(0)
    repo = _grown_repo(tmp_path, rng)
    lm = LearnedModule.fit("z", repo.get(repo.select(since=20)), repo.get(repo.select(until=20)),
                           weight=0.2)
    with failing_commit(repo._store, sqlite3.OperationalError("disk I/O error")) as fired:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            repo.add_learned(lm)
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


DAY = 86400.0


def test_learn_module_after_forget_fits_on_the_prefix_every_sketch_keeps(tmp_path):
    rng = np.random.default_rng(1)
    with Repository.create(tmp_path / "r", rs.Sketcher(D, seed=1)) as repo:
        repo.add_graphs([_day(rng, False) for _ in range(40)],
                        timestamps=[k * DAY for k in range(40)])
        repo.add_graphs([_day(rng, True) for _ in range(20)],
                        timestamps=[(60 + k) * DAY for k in range(20)])
        repo.forget(now=80 * DAY)  # the past (over 30 days old) keeps 1/4 of its coordinates
        past = repo.select(until=60 * DAY)
        assert repo.lengths(past).max() < D and repo.lengths(repo.select(since=60 * DAY)).min() == D
        cl = repo.clusters(2, seed=0)
        new = cl.new_since(60 * DAY)
        assert new
        lm = repo.learn_module("z", cl, new[0], since=60 * DAY)
        fresh = rs.Sketcher(D, seed=1)
        s_new = fresh.sketch_many([_day(rng, True) for _ in range(20)])
        s_old = fresh.sketch_many([_day(rng, False) for _ in range(20)])
        assert lm.fires(s_new).mean() >= 0.9 and lm.fires(s_old).mean() <= 0.1
        # the detector reads only the prefix every fitted sketch keeps
        keep = int(repo.lengths(past).min())
        assert lm.prefix == keep and not np.any(lm.coef[keep:])


def test_fit_refuses_a_cluster_the_past_already_spans_and_records_its_novelty(tmp_path):
    rng = np.random.default_rng(2)
    with _grown_repo(tmp_path, rng) as repo:
        old = repo.get(repo.select(until=20))
        new = repo.get(repo.select(since=20))
        # an old cluster: its members are part of the past (was a detector of norm ~1e8)
        with pytest.raises(ValueError, match="novelty share"):
            LearnedModule.fit("z", old[:8], old)
        lm = LearnedModule.fit("z", new, old)
        # independently: the share of the centre's energy outside the past's span
        x, p = new.astype(np.float64), old.astype(np.float64)
        q, _ = np.linalg.qr(p.T)
        mu = x.mean(axis=0)
        w = mu - q @ (q.T @ mu)
        assert lm.novelty == pytest.approx(float(w @ w) / float(mu @ mu), rel=1e-6)
        assert lm.rank == 20
        back = LearnedModule.from_bytes(lm.to_bytes())
        assert (back.novelty, back.rank, back.prefix) == (lm.novelty, lm.rank, lm.prefix)
        # learn_module warns when the cluster is not one of new_since(since)
        cl = repo.clusters(2, seed=0)
        (c_new,) = cl.new_since(20)
        c_old = 1 - c_new
        with pytest.warns(RuntimeWarning, match="not among clusters.new_since"):
            with pytest.raises(ValueError, match="novelty share"):
                repo.learn_module("y", cl, c_old, since=20)
        assert repo.learned_modules == {} and "y" not in repo.sketcher.modules


def test_bad_arguments_of_learn_module_fit_and_from_bytes(tmp_path):
    rng = np.random.default_rng(3)
    with _grown_repo(tmp_path, rng) as repo:
        cl = repo.clusters(2, seed=0)
        c = cl.new_since(20)[0]
        with pytest.raises(TypeError, match="since must be a time"):
            repo.learn_module("z", cl, c, since=None)
        with pytest.raises(ValueError, match="since"):
            repo.learn_module("z", cl, c, since="not a date")
        with pytest.raises(TypeError, match="since"):
            repo.learn_module("z", cl, c, since=[1])
        past = repo.get(repo.select(until=20))
        members = repo.get(cl.members(c))
        with pytest.raises(ValueError, match="rank 21 is more than the past's 20"):
            LearnedModule.fit("z", members, past, rank=21)
        assert LearnedModule.fit("z", members, past, rank=5).rank == 5
        assert LearnedModule.fit("z", members, past[:7]).rank == 7  # default min(100, len)
        assert repo.learned_modules == {}
        data = LearnedModule.fit("z", members, past).to_bytes()
        for cut in (len(data) // 2, 10, 0):
            with pytest.raises(ValueError, match="not a saved LearnedModule"):
                LearnedModule.from_bytes(data[:cut])


def test_a_grown_graph_without_room_is_refused_unless_scaling_is_asked_for(tmp_path):
    rng = np.random.default_rng(4)
    with _grown_repo(tmp_path, rng) as repo:
        cl = repo.clusters(2, seed=0)
        lm = repo.learn_module("z", cl, cl.new_since(20)[0], since=20, weight=0.5)
        n = len(repo)
        full = [_day(rng, True) for _ in range(3)]  # output weights 0.6: no room for 0.5
        with pytest.raises(ValueError, match="no room for the learned objects"):
            repo.add_graphs(full)
        assert len(repo) == n  # nothing stored
        # a refused batch registers nothing either: its new module 'emu' stays unknown
        emu = _day(rng, True)
        emu.set_output(list(emu.output) + [(emu.add("emu", unit(rng, 3)), 0.4)])
        with pytest.raises(ValueError, match="no room for the learned objects"):
            repo.add_graphs([emu])
        assert "emu" not in repo.sketcher.modules
        with pytest.raises(ValueError, match="make_room"):
            repo.add_graphs(full, make_room="squeeze")
        ids = repo.add_graphs(full, make_room="scale")
        # independently: the graphs built by hand with the other weights scaled by 0.5 / 0.6
        fresh = rs.Sketcher(D, seed=1)
        base = fresh.sketch_many(full).astype(np.float64)
        assert np.all(base @ lm.coef >= lm.threshold)
        hand = [with_output_object(g, "z", lm.attribute(s), 0.5, scale=0.5 / 0.6)
                for g, s in zip(full, base)]
        want = fresh.sketch_many(hand).astype(np.float32)
        np.testing.assert_allclose(repo.get(ids), want, rtol=1e-5, atol=1e-7)


def test_a_prefix_fit_reads_nothing_past_the_prefix():
    # Members cut by forgetting read zeros past the prefix; a fit on the prefix must not see
    # the cut: the same module whether the members were cut or not (the attribute's directions
    # used to learn "was this sketch cut").
    rng = np.random.default_rng(4)
    dim, prefix = 64, 16
    past = np.abs(rng.standard_normal((5, dim)))
    members = np.abs(rng.standard_normal((12, dim))) + 2.0 * (np.arange(dim) % 7 == 0)
    cut = members.copy()
    cut[::2, prefix:] = 0.0
    a = LearnedModule.fit("m", members, past, prefix=prefix)
    b = LearnedModule.fit("m", cut, past, prefix=prefix)
    for field in ("coef", "centre", "components"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-12)
        assert not np.any(getattr(a, field)[..., prefix:])
    assert a.spread == pytest.approx(b.spread)
    s = members[1]
    np.testing.assert_allclose(a.attribute(s[None]), b.attribute(s[None]), atol=1e-12)


def test_forget_with_nothing_to_cut_or_reclaim_writes_nothing(tmp_path):
    sk = rs.Sketcher(256, family="orthogonal", seed=2)
    repo = Repository.create(tmp_path / "r", sk)
    g = rs.Graph()
    g.set_output([(g.add("cat", unit(np.random.default_rng(0), 4)), 1.0)])
    repo.add_graphs([g, g], timestamps=[0.0, 0.0], objects=True)
    first = repo.forget(policy=[(10**9, 1.0)], now=1.0)     # nothing old enough to cut
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    again = repo.forget(policy=[(10**9, 1.0)], now=1.0)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == files
    assert first["bytes_after"] == again["bytes_after"] == first["bytes_before"]
    repo.close()
