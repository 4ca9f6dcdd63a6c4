"""recsketch.denoise (the principal subspace of a batch of sketches) and its Repository offer:
the projection against an independent dense NumPy SVD, the fixed-layout span against the
layout's words built from dense matrices (test_joint.DenseModel, MATH.md §2.3), completion of
erased sketches, rank rules, streaming, Repository integration, bad input and determinism."""

import threading
import warnings

import numpy as np
import pytest

import recsketch as rs
from recsketch.denoise import DEFAULT_RTOL, Subspace, SubspaceFitter, fit_subspace
from recsketch.guided import GuidedReader
from scenes import unit
from test_joint import DenseModel

# (module, path, ancestors, depth) of the layout below
LAYOUT = [("wall", (1,), (), 2), ("wall", (2,), (), 2), ("cat", (3,), (), 2),
          ("edge", (3, 1), ("cat",), 3), ("edge", (3, 2), ("cat",), 3)]
DIMS = {"wall": 2, "cat": 3, "edge": 2}
K = sum(DIMS[m] + 1 for m, _, _, _ in LAYOUT)   # 16 unknowns


def layout_graph(rng):
    """One layout (two walls, a cat with two edges), new attributes and weights each call; the
    weights are drawn independently so that the 16 unknowns vary independently."""
    g = rs.Graph()
    edges = [g.add("edge", unit(rng, DIMS["edge"])) for _ in range(2)]
    walls = [g.add("wall", unit(rng, DIMS["wall"])) for _ in range(2)]
    cat = g.add("cat", unit(rng, DIMS["cat"]), [(e, rng.uniform(0.2, 0.5)) for e in edges])
    g.set_output([(walls[0], rng.uniform(0.1, 0.3)), (walls[1], rng.uniform(0.1, 0.3)),
                  (cat, rng.uniform(0.2, 0.4))])
    return g


def sketcher(family):
    if family == "orthogonal":
        return rs.Sketcher(256, family="orthogonal", seed=3)
    return rs.Sketcher(1008, family="block_sparse", seed=3)


def layout_words(sk):
    """The layout's K words as dense columns (d, K), from dense matrices, not from sketches."""
    model = DenseModel(sk, fan_in=0)     # no enumeration: only the blocks added below
    for name, path, anc, depth in LAYOUT:
        model._add(name, path, anc, depth, DIMS[name])
    return np.stack(model.cols, axis=1)


def projector(rows):
    q, _ = np.linalg.qr(np.asarray(rows, np.float64).T)
    return q @ q.T


def low_rank(rng, n=80, d=120, r=7, noise=0.0):
    x = rng.standard_normal((n, r)) @ rng.standard_normal((r, d))
    return x + noise * rng.standard_normal((n, d))


# -- the projection against a dense SVD ---------------------------------------------------------
@pytest.mark.parametrize("chunks", [1, 3, 11])
def test_projection_matches_a_dense_numpy_svd(chunks):
    rng = np.random.default_rng(0)
    x = low_rank(rng, noise=1e-3)
    sub = fit_subspace(np.array_split(x, chunks), max_rank=x.shape[0], rank=7)
    _, sv, vt = np.linalg.svd(x)                    # dense reference (n x d here)
    np.testing.assert_allclose(sub.basis.T @ sub.basis, vt[:7].T @ vt[:7], atol=1e-9)
    np.testing.assert_allclose(sub.singular_values, sv[:7], rtol=1e-9)
    y = rng.standard_normal((5, x.shape[1]))
    np.testing.assert_allclose(sub.project(y), y @ vt[:7].T @ vt[:7], atol=1e-9)
    np.testing.assert_allclose(sub.project(y[0]), sub.project(y)[0], atol=1e-12)
    assert sub.rank == 7 and sub.n_fitted == 80
    # the energy left out is that of the dropped singular values
    assert sub.discarded_energy == pytest.approx(np.sum(sv[7:] ** 2) / np.sum(sv ** 2), rel=1e-6)


def test_rank_rules_against_the_spectrum():
    rng = np.random.default_rng(1)
    x = low_rank(rng, r=9, noise=1e-2)
    sv = np.linalg.svd(x, compute_uv=False)
    f = SubspaceFitter(x.shape[1], max_rank=80).add(x)
    energy = np.cumsum(sv ** 2) / np.sum(sv ** 2)
    for e in (0.5, 0.9, 0.999):
        assert f.subspace(energy=e).rank == int(np.argmax(energy >= e)) + 1
    assert f.subspace(energy=1.0).rank == sv.size
    assert f.subspace(rtol=1e-3).rank == int(np.sum(sv > 1e-3 * sv[0]))
    assert f.subspace().rank == int(np.sum(sv > DEFAULT_RTOL * sv[0]))
    # the noise rule finds the 9 directions above the noise of std 1e-2
    assert f.subspace(noise_std=1e-2).rank == 9
    assert f.subspace(rank=4).rank == 4
    assert f.subspace(rank=4).rule == "rank=4"


def test_streamed_fit_keeps_at_most_max_rank_and_reports_what_it_drops():
    rng = np.random.default_rng(2)
    x = low_rank(rng, n=120, r=6, noise=1e-2)
    f = SubspaceFitter(x.shape[1], max_rank=10)
    for part in np.array_split(x, 12):
        f.add(part)
        assert f.spectrum().size <= 10
    sub = f.subspace(rank=6)
    _, _, vt = np.linalg.svd(x)
    # the six signal directions survive the truncated stream (to the noise's order)
    assert np.linalg.norm(sub.basis.T @ sub.basis - vt[:6].T @ vt[:6], 2) < 1e-2
    assert 0 < sub.discarded_energy < 1e-3
    # exact low rank within max_rank: nothing dropped
    exact = fit_subspace(np.array_split(low_rank(rng, r=6), 9), max_rank=10)
    assert exact.rank == 6 and exact.discarded_energy < 1e-12


# -- a fixed layout spans exactly its words --------------------------------------------------
@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_fixed_layout_spans_exactly_the_layouts_words(family):
    sk = sketcher(family)
    rng = np.random.default_rng(4)
    s = sk.sketch_many([layout_graph(rng) for _ in range(60)])
    sub = fit_subspace(s)
    assert sub.rank == K
    words = layout_words(sk)
    # principal angles between the two spans: all cosines 1 to float32 rounding
    q, _ = np.linalg.qr(words)
    cosines = np.linalg.svd(sub.basis @ q, compute_uv=False)
    assert cosines.min() > 1 - 1e-6
    # every sketch of the layout is its own projection, so every read-out is unchanged
    fresh = sk.sketch_many([layout_graph(rng) for _ in range(4)])
    np.testing.assert_allclose(sub.project(fresh), fresh, atol=1e-5 * np.abs(fresh).max())
    assert np.all(sub.residual(fresh) < 1e-5)
    for method in ("paper", "matched"):
        np.testing.assert_allclose(sk.mass(sub.project(fresh), "wall", method),
                                   sk.mass(fresh, "wall", method), atol=1e-5)


@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_erased_sketches_of_the_layout_are_completed(family):
    sk = sketcher(family)
    rng = np.random.default_rng(5)
    sub = fit_subspace(sk.sketch_many([layout_graph(rng) for _ in range(60)]))
    fresh = sk.sketch_many([layout_graph(rng) for _ in range(6)]).astype(np.float64)
    words = layout_words(sk)
    for erased in (rs.erase(fresh, 0.25), rs.erase(fresh, 0.25, mode="random", seed=1)):
        done = sub.project(erased)
        np.testing.assert_allclose(done, fresh, atol=1e-4 * np.abs(fresh).max())
        # independent: least squares of the kept coordinates on the dense words
        coef = np.linalg.lstsq(words[erased.indices], erased.values.T, rcond=None)[0]
        np.testing.assert_allclose(done, (words @ coef).T, atol=1e-4 * np.abs(fresh).max())
        # the completed sketch reads what the full one reads
        np.testing.assert_allclose(sk.count(done, "wall", 0.2), sk.count(fresh, "wall", 0.2),
                                   atol=1e-3)
    one = rs.erase(fresh[0], 0.5)
    np.testing.assert_allclose(sub.project(one), sub.project(rs.erase(fresh, 0.5))[0],
                               atol=1e-12)
    np.testing.assert_allclose(sub.coefficients(one), sub.project(one) @ sub.basis.T,
                               atol=1e-9)


def test_a_new_layout_is_seen_by_the_residual_and_biased_by_the_projection():
    sk = sketcher("orthogonal")
    rng = np.random.default_rng(6)
    sub = fit_subspace(sk.sketch_many([layout_graph(rng) for _ in range(60)]))
    g = rs.Graph()
    lamp = g.add("lamp", unit(rng, 4))
    g.set_output([(lamp, 0.5)])
    s = sk.sketch(g)
    assert sub.residual(s) > 0.5
    # the lamp's mass, 0.5, is (largely) projected away
    assert abs(sk.mass(sub.project(s), "lamp") - 0.5) > 0.25
    assert abs(sk.mass(s, "lamp") - 0.5) < 0.25


# -- determinism and bad input ---------------------------------------------------------------
def test_fit_is_deterministic_and_immutable():
    x = low_rank(np.random.default_rng(7), noise=1e-3)
    a = fit_subspace(np.array_split(x, 4), rank=7)
    b = fit_subspace(np.array_split(x, 4), rank=7)
    assert np.array_equal(a.basis, b.basis)
    assert np.array_equal(a.singular_values, b.singular_values)
    with pytest.raises(ValueError):
        a.basis[0, 0] = 1.0
    c = fit_subspace(x.astype(np.float32), rank=7)
    assert c.basis.dtype == np.float64


def test_projection_from_threads_equals_one_thread():
    rng = np.random.default_rng(10)
    sub = fit_subspace(low_rank(rng), rank=7)
    ys = [rng.standard_normal((9, 120)) for _ in range(8)]
    want = [sub.project(y) for y in ys]
    got = [None] * len(ys)

    def work(k):
        for _ in range(20):
            got[k] = sub.project(ys[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(ys))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


def test_bad_input():
    x = low_rank(np.random.default_rng(8))
    f = SubspaceFitter(x.shape[1])
    with pytest.raises(ValueError, match="nothing to fit"):
        f.subspace()
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        f.add(bad)
    assert f.n_added == 0                       # refused before anything changed
    with pytest.raises(ValueError, match="shape"):
        f.add(x[:, :5])
    with pytest.raises(TypeError, match="float"):
        f.add(x.astype(np.int64))
    f.add(x)
    with pytest.raises(ValueError, match="at most one"):
        f.subspace(rank=3, energy=0.5)
    for kw, err in (({"rank": 0}, ValueError), ({"rank": True}, TypeError),
                    ({"rank": 10**6}, ValueError), ({"energy": 0.0}, ValueError),
                    ({"energy": 1.5}, ValueError), ({"energy": "a"}, TypeError),
                    ({"noise_std": -1.0}, ValueError), ({"noise_std": np.nan}, ValueError),
                    ({"rtol": 1.0}, ValueError), ({"rtol": -0.1}, ValueError)):
        with pytest.raises(err):
            f.subspace(**kw)
    with pytest.raises(ValueError, match="keeps no direction"):
        f.subspace(noise_std=1e6)
    for kw, err in (({"max_rank": 0}, ValueError), ({"max_rank": 10**6}, ValueError),
                    ({"max_rank": 2.5}, TypeError)):
        with pytest.raises(err):
            SubspaceFitter(x.shape[1], **kw)
    sub = f.subspace(rank=7)
    with pytest.raises(ValueError, match="shape"):
        sub.project(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        sub.project(bad)
    with pytest.raises(TypeError, match="dtype"):
        sub.project(np.zeros(x.shape[1], np.int32))
    with pytest.raises(ValueError, match="fewer than the subspace's rank"):
        sub.project(rs.erase(x, 5))
    with pytest.raises(ValueError, match="d_sketch"):
        sub.project(rs.erase(np.zeros(256), 0.5))
    with pytest.raises(TypeError):
        sub.residual(rs.erase(x, 0.5))
    with pytest.raises(ValueError, match="basis"):
        Subspace(np.zeros(5), np.ones(1), np.ones(1), 1, 0.0, "rank=1")
    with pytest.raises(ValueError, match="singular_values"):
        Subspace(np.eye(4)[:2], np.ones(3), np.ones(3), 1, 0.0, "rank=2")
    np.testing.assert_allclose(sub.coefficients(x[:3]), x[:3] @ sub.basis.T, atol=1e-9)
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_subspace([])
    with pytest.raises(ValueError, match="keeps no direction"):
        fit_subspace(np.zeros((4, 16)))


# -- the Repository's offer -------------------------------------------------------------------
def _layout_repo(tmp_path, n=60, name="r"):
    sk = sketcher("orthogonal")
    rng = np.random.default_rng(9)
    graphs = [layout_graph(rng) for _ in range(n)]
    repo = rs.Repository.create(tmp_path / name, sk, index_dim=32)
    # the first half dated a year before the second (for forgetting)
    repo.add_graphs(graphs, timestamps=[0.0] * (n // 2) + [365 * 86400.0] * (n - n // 2))
    return repo, graphs


def test_repository_denoiser_streams_and_matches_a_batch_fit(tmp_path, monkeypatch):
    repo, graphs = _layout_repo(tmp_path)
    seen = []
    add = SubspaceFitter.add

    def recording(self, sketches):
        seen.append(np.shape(sketches))
        return add(self, sketches)

    monkeypatch.setattr(SubspaceFitter, "add", recording)
    with repo:
        repo.chunk_bytes = 4 * 256 * 7            # 7 sketches per chunk: the fit streams
        sub = repo.denoiser()
        # read in chunks of at most chunk_bytes, every sketch once
        assert max(s[0] for s in seen) == 7 and sum(s[0] for s in seen) == 60
        stored = repo.get(repo.ids())
        ref = fit_subspace(stored.astype(np.float64))
        assert sub.rank == ref.rank == K and sub.n_fitted == 60
        np.testing.assert_allclose(sub.basis.T @ sub.basis, ref.basis.T @ ref.basis, atol=1e-8)
        part = repo.denoiser(until=100.0, rank=5)
        assert part.n_fitted == 30 and part.rank == 5
        sk = repo.sketcher
        for method in ("paper", "matched"):
            ids, plain = repo.count("wall", 0.2, method=method)
            _, den = repo.count("wall", 0.2, method=method, denoise=sub)
            np.testing.assert_allclose(den, sk.count(sub.project(stored), "wall", 0.2, method),
                                       atol=1e-9)
            # in the span: the same answers
            np.testing.assert_allclose(den, plain, atol=1e-4)
            _, m = repo.mass("cat", method=method, denoise=sub)
            np.testing.assert_allclose(m, sk.mass(sub.project(stored), "cat", method), atol=1e-9)
        mean = repo.mean_attributes("cat", denoise=sub)
        x = sk.summed_attributes(sub.project(stored), "cat", 1.0)
        np.testing.assert_allclose(mean, x.sum(0) / sk.mass(sub.project(stored), "cat").sum(),
                                   atol=1e-9)


def test_repository_completes_forgotten_sketches(tmp_path):
    repo, graphs = _layout_repo(tmp_path)
    with repo:
        full = repo.get(repo.ids()).astype(np.float64)
        repo.forget([(30 * 86400.0, 1.0), (float("inf"), 0.25)], now=366 * 86400.0)
        assert sorted(repo.stats()["kept_lengths"].items()) == [(64, 30), (256, 30)]
        sub = repo.denoiser()
        assert sub.n_fitted == 30 and sub.rank == K     # forgotten ones left out of the fit
        _, plain = repo.mass("wall")
        _, den = repo.mass("wall", denoise=sub)
        truth = repo.sketcher.mass(full, "wall")
        # the completed old sketches read as their full versions did
        np.testing.assert_allclose(den, truth, atol=1e-4)
        assert np.max(np.abs(plain[:30] - truth[:30])) > 1e-3   # graceful erasure's error
        with pytest.raises(ValueError, match="keeps all"):
            repo.denoiser(until=100.0)
        # a forgotten prefix shorter than the rank is refused before anything is read
        small = Subspace(np.eye(256)[:70], np.ones(70), np.ones(70), 1, 0.0, "rank=70")
        with pytest.raises(ValueError, match="cannot be completed"):
            repo.mass("wall", denoise=small)
        _, ok = repo.mass("wall", since=200 * 86400.0, denoise=small)
        assert ok.size == 30


def test_repository_denoise_bad_arguments(tmp_path):
    repo, _ = _layout_repo(tmp_path, n=20)
    with repo:
        with pytest.raises(TypeError, match="Subspace"):
            repo.count("wall", 0.2, denoise="yes")
        other = fit_subspace(low_rank(np.random.default_rng(0), d=128))
        with pytest.raises(ValueError, match="d_sketch=128"):
            repo.mass("wall", denoise=other)
        with pytest.raises(ValueError, match="at most one"):
            repo.denoiser(rank=2, energy=0.5)
        with pytest.raises(ValueError, match="max_rank"):
            repo.denoiser(max_rank=0)
        with pytest.raises(ValueError, match="no sketch matches"):
            repo.denoiser(since=10**12)
        with pytest.raises(ValueError, match="energy"):
            repo.denoiser(energy=2.0)
        # nothing leaked: the repository still answers
        assert repo.count("wall", 0.2)[0].size == 20



def test_repository_refuses_a_subspace_of_another_sketcher(tmp_path):
    repo_a, _ = _layout_repo(tmp_path, n=30, name="a")          # orthogonal, d=256, seed 3
    sk_b = rs.Sketcher(256, family="orthogonal", seed=4)
    rng = np.random.default_rng(10)
    repo_b = rs.Repository.create(tmp_path / "b", sk_b, index_dim=32)
    repo_b.add_graphs([layout_graph(rng) for _ in range(30)])
    with repo_a, repo_b:
        sub_a = repo_a.denoiser()
        assert dict(sub_a.sketcher_identity)["seed"] == 3
        with pytest.raises(ValueError, match="seed=3.*seed=4"):
            repo_b.mass("wall", denoise=sub_a)
        with pytest.raises(ValueError, match="seed=3.*seed=4"):
            repo_b.guided_reader(sub_a)
        reader_a = repo_a.guided_reader(sub_a)
        with pytest.raises(ValueError, match="GuidedReader.*seed=3.*seed=4"):
            repo_b.mass("wall", method="joint", denoise=reader_a)
        # the same configuration is accepted; a subspace of bare arrays is checked on d only
        assert repo_b.mass("wall", denoise=repo_b.denoiser())[1].size == 30
        bare = fit_subspace(repo_b.get(repo_b.ids()).astype(np.float64))
        assert bare.sketcher_identity is None
        assert repo_b.mass("wall", denoise=bare)[1].size == 30


def test_fitter_records_the_sketcher_and_checks_it():
    sk = sketcher("orthogonal")
    rng = np.random.default_rng(11)
    sub = fit_subspace(sk.sketch_many([layout_graph(rng) for _ in range(30)]), sketcher=sk)
    assert dict(sub.sketcher_identity) == {"format": sk.to_dict()["format"],
                                           "format_version": sk.to_dict()["format_version"],
                                           "d_sketch": 256, "family": "orthogonal",
                                           "block_size": None, "density": None, "seed": 3}
    with pytest.raises(ValueError, match="d_sketch"):
        SubspaceFitter(128, sketcher=sk)
    # block_sparse: the same d and seed with another block size or family has other words
    bs = rs.Sketcher(1008, family="block_sparse", seed=3)
    sub_bs = fit_subspace(bs.sketch_many([layout_graph(rng) for _ in range(20)]), sketcher=bs)
    assert dict(sub_bs.sketcher_identity)["block_size"] == bs.block_size
    assert bs.block_size == 42
    for other in (rs.Sketcher(1008, family="block_sparse", block_size=72, seed=3),
                  rs.Sketcher(1008, family="block_sparse", density=0.5, seed=3)):
        with pytest.raises(ValueError, match="the subspace was fitted.*block_size=42"):
            GuidedReader(other, sub_bs)
    GuidedReader(rs.Sketcher(1008, family="block_sparse", seed=3, dtype="float64"), sub_bs,
                 fan_in=3)   # dtype does not change the words
    with pytest.raises(TypeError, match="Sketcher"):
        SubspaceFitter(256, sketcher="sk")


def test_ill_conditioned_completion_warns():
    # two orthonormal rows whose first two coordinates have condition number exactly 1000
    e = 1e-3
    basis = np.array([[1.0, 0, 0, 0], [0, e, 0, np.sqrt(1 - e * e)]])
    sub = Subspace(basis, np.ones(2), np.ones(2), 2, 0.0, "rank=2")
    x = np.array([0.5, 0.2 * e, 0.0, 0.2 * np.sqrt(1 - e * e)])   # in the span
    with pytest.warns(RuntimeWarning, match=r"cond=1e\+03.*2 kept|2 kept.*cond=1e\+03"):
        done = sub.project(rs.erase(x, 2))
    np.testing.assert_allclose(done, x, atol=1e-9)                # exact without noise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(sub.project(rs.erase(x, 4)), x, atol=1e-12)


def test_fitter_dtype_check_matches_project_and_a_failed_add_changes_nothing(monkeypatch):
    x = low_rank(np.random.default_rng(12))
    f = SubspaceFitter(x.shape[1], max_rank=8)
    sub = f.add(x).subspace(rank=7)
    for dt in (np.float16, np.longdouble):
        if np.dtype(dt) == np.dtype(np.float64):
            continue
        with pytest.raises(TypeError, match="float32 or float64"):
            f.add(x.astype(dt))
        with pytest.raises(TypeError, match="float32 or float64"):
            sub.project(x.astype(dt))
    before = (f.n_added, f.spectrum().copy())
    calls = []
    svd = np.linalg.svd

    def failing(a, *args, **kw):       # the second fold of the chunk fails
        calls.append(1)
        if len(calls) == 2:
            raise np.linalg.LinAlgError("SVD did not converge")
        return svd(a, *args, **kw)

    monkeypatch.setattr(np.linalg, "svd", failing)
    with pytest.raises(np.linalg.LinAlgError):
        f.add(np.concatenate([x, x]))              # 160 rows: folded 64 at a time
    monkeypatch.setattr(np.linalg, "svd", svd)
    assert f.n_added == before[0]
    np.testing.assert_array_equal(f.spectrum(), before[1])
    assert f.subspace(rank=7).n_fitted == 80
