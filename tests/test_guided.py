"""recsketch.guided.GuidedReader: the joint least-squares read-out on the words a batch's
subspace spans. Against the truth of the graphs and an independent dense least-squares fit on
the layout's words (test_joint.DenseModel); where the plain joint fit is not exact; erased
sketches; Repository integration; bad input; threads."""

import threading
import warnings

import numpy as np
import pytest

import recsketch as rs
import recsketch.guided
from recsketch.denoise import fit_subspace
from recsketch.guided import GuidedReader
from test_denoise import LAYOUT, layout_graph, layout_words, sketcher


def truths(graphs):
    """Per graph: wall mass, edge mass, the cat's weighted attributes, the edge at [3, 2]'s."""
    out = {"wall": [], "edge": [], "cat": [], "edge32": []}
    for g in graphs:
        (_, w1), (_, w2), (c, wc) = g.output
        (_, we1), (e2, we2) = g.inputs(c)
        out["wall"].append(w1 + w2)
        out["edge"].append(wc * (we1 + we2))
        out["cat"].append(wc * g.attributes(c))
        out["edge32"].append(wc * we2 * g.attributes(e2))
    return {k: np.array(v) for k, v in out.items()}


def fitted(family="orthogonal", n=60, seed=4):
    sk = sketcher(family)
    rng = np.random.default_rng(seed)
    batch = sk.sketch_many([layout_graph(rng) for _ in range(n)])
    graphs = [layout_graph(rng) for _ in range(6)]
    return sk, fit_subspace(batch), graphs, sk.sketch_many(graphs)


@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_guided_selects_the_layouts_paths_and_reads_them_exactly(family):
    sk, sub, graphs, s = fitted(family)
    reader = GuidedReader(sk, sub, fan_in=8)
    assert sorted((b.module, b.path, b.ancestors) for b in reader.blocks) == \
        sorted((m, p, a) for m, p, a, _ in LAYOUT)
    assert reader.coverage > 1 - 1e-6
    t = truths(graphs)
    np.testing.assert_allclose(reader.mass(s, "wall"), t["wall"], atol=1e-5)
    np.testing.assert_allclose(reader.mass(s, "edge"), t["edge"], atol=1e-5)
    np.testing.assert_allclose(reader.attributes(s, "cat"), t["cat"], atol=1e-5)
    np.testing.assert_allclose(reader.attributes(s, "edge", [3, 2]), t["edge32"], atol=1e-5)
    np.testing.assert_allclose(reader.count(s, "wall", 0.5), t["wall"] / 0.5, atol=1e-4)
    wc = np.array(_cat_weights(graphs))[:, None]
    np.testing.assert_allclose(reader.mean_attributes(s, "cat"), t["cat"] / wc, atol=1e-4)
    # independent: dense least squares on the layout's words gives the same unknowns
    theta = np.linalg.lstsq(layout_words(sk), s.T.astype(np.float64), rcond=None)[0].T
    starts, at = {}, 0
    for m, p, a, _ in LAYOUT:
        starts[m, p, a] = at
        at += sk.modules[m].attribute_dim + 1
    order = np.concatenate([starts[b.module, b.path, b.ancestors] + np.arange(b.size)
                            for b in reader.blocks])
    np.testing.assert_allclose(reader.fit(s), theta[:, order], atol=1e-5)
    assert reader.mass(s[0], "wall") == pytest.approx(float(t["wall"][0]), abs=1e-5)


def _cat_weights(graphs):
    return [g.output[2][1] for g in graphs]


def test_guided_is_exact_where_the_plain_joint_fit_is_not():
    sk, sub, graphs, s = fitted()
    # fan_in = 8: the depth-3 paths do not fit the joint budget (half of d = 256)
    assert sk.decoder.joint_plan(8)["path_free_depths"] == [3]
    t = truths(graphs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        joint = sk.mass(s, "edge", method="joint", fan_in=8)
    guided = GuidedReader(sk, sub, fan_in=8).mass(s, "edge")
    assert np.max(np.abs(guided - t["edge"])) < 1e-5
    assert np.max(np.abs(joint - t["edge"])) > 1e-3


def test_guided_reads_absent_modules_as_zero_and_erased_sketches_on_their_kept_part():
    sk, sub, graphs, s = fitted()
    sk.register_module("lamp", 2, 4)                 # in no sketch of the batch
    reader = GuidedReader(sk, sub, fan_in=3)
    assert np.all(reader.mass(s, "lamp") == 0)
    np.testing.assert_array_equal(reader.summed_attributes(s, "lamp"), np.zeros((6, 4)))
    t = truths(graphs)
    for e in (rs.erase(s, 0.25), rs.erase(s, 0.25, mode="random", seed=2)):
        np.testing.assert_allclose(reader.mass(e, "edge"), t["edge"], atol=1e-5)
    with pytest.raises(ValueError, match="the fit.s unknowns"):
        reader.mass(rs.erase(s, 8), "edge")


def test_guided_warns_about_depths_it_cannot_search():
    sk, sub, graphs, s = fitted()
    with pytest.warns(RuntimeWarning, match=r"depths \[3\]"):
        reader = GuidedReader(sk, sub, fan_in=3, max_candidates=40)
    assert reader.unsearched_depths == [3]
    assert np.all(reader.mass(s, "edge") == 0)
    assert reader.coverage < 0.99


def test_guided_coverage_says_when_the_subspace_holds_noise():
    sk = sketcher("orthogonal")
    rng = np.random.default_rng(7)
    batch = sk.sketch_many([layout_graph(rng) for _ in range(60)]).astype(np.float64)
    noisy = batch + rng.normal(0, 1e-3 * np.abs(batch).max(), batch.shape)
    reader = GuidedReader(sk, fit_subspace(noisy, rank=40), fan_in=3)
    assert reader.coverage < 0.9          # 24 noise directions no path spans
    assert reader.unknowns >= 16


def test_guided_bad_input():
    sk, sub, graphs, s = fitted()
    with pytest.raises(TypeError, match="Sketcher"):
        GuidedReader("sk", sub)
    with pytest.raises(TypeError, match="Subspace"):
        GuidedReader(sk, np.eye(3))
    with pytest.raises(ValueError, match="d_sketch"):
        GuidedReader(sk, fit_subspace(np.random.default_rng(0).random((5, 64))))
    with pytest.raises(ValueError):
        GuidedReader(sk, sub, fan_in=0)
    with pytest.raises(ValueError):
        GuidedReader(sk, sub, max_candidates=0)
    reader = GuidedReader(sk, sub, fan_in=3)
    with pytest.raises(ValueError, match="not registered"):
        reader.mass(s, "dog")
    with pytest.raises(TypeError):
        reader.mass(s, 3)
    with pytest.raises(ValueError, match="positions"):
        reader.attributes(s, "edge", [3])
    with pytest.raises(TypeError):
        reader.attributes(s, "edge", "32")
    with pytest.raises(ValueError, match="weight"):
        reader.count(s, "wall", 0.0)
    with pytest.raises(TypeError, match="weight"):
        reader.count(s, "wall", True)
    with pytest.raises(ValueError, match="shape"):
        reader.mass(s[:, :10], "wall")
    bad = s.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reader.mass(bad, "wall")
    with pytest.raises(TypeError, match="dtype"):
        reader.mass(s.astype(np.int32), "wall")


def test_guided_is_deterministic_and_thread_safe():
    sk, sub, graphs, s = fitted()
    a = GuidedReader(sk, sub, fan_in=3)
    b = GuidedReader(sk, sub, fan_in=3)
    assert np.array_equal(a.fit(s), b.fit(s)) and a.blocks == b.blocks
    want = a.attributes(s, "cat")
    got = [None] * 8

    def work(k):
        for _ in range(10):
            got[k] = a.attributes(s, "cat")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(np.array_equal(g, want) for g in got)


def test_repository_guided_reader(tmp_path):
    sk = sketcher("orthogonal")
    rng = np.random.default_rng(9)
    graphs = [layout_graph(rng) for _ in range(60)]
    t = truths(graphs)
    repo = rs.Repository.create(tmp_path / "r", sk, index_dim=32)
    repo.add_graphs(graphs, timestamps=[0.0] * 30 + [365 * 86400.0] * 30)
    with repo:
        reader = repo.guided_reader(repo.denoiser(), fan_in=8)
        ids, m = repo.mass("edge", method="joint", denoise=reader)
        np.testing.assert_allclose(m, t["edge"], atol=1e-5)
        _, c = repo.count("wall", 0.5, method="joint", fan_in=8, denoise=reader)
        np.testing.assert_allclose(c, t["wall"] / 0.5, atol=1e-4)
        mean = repo.mean_attributes("cat", method="joint", denoise=reader)
        np.testing.assert_allclose(mean, t["cat"].sum(0) / sum(_cat_weights(graphs)), atol=1e-5)
        # forgotten sketches are fitted on their prefixes: still exact
        repo.forget([(30 * 86400.0, 1.0), (float("inf"), 0.25)], now=366 * 86400.0)
        _, m2 = repo.mass("edge", method="joint", denoise=reader)
        np.testing.assert_allclose(m2, t["edge"], atol=1e-5)
        with pytest.raises(ValueError, match="method='joint'"):
            repo.mass("edge", denoise=reader)
        with pytest.raises(ValueError, match="fan_in=3"):
            repo.mass("edge", method="joint", fan_in=3, denoise=reader)


def test_guided_warns_when_an_erased_fit_is_ill_conditioned(monkeypatch):
    sk, sub, graphs, s = fitted()
    reader = GuidedReader(sk, sub, fan_in=3)
    words = layout_words(sk)                        # independent: dense words (d, K)
    assert reader.unknowns == words.shape[1]
    full = np.linalg.cond(words)
    # random words are well conditioned (6.5x the full sketch's at the shortest prefix here):
    # a lower threshold shows the guard, decided against the independent condition numbers
    monkeypatch.setattr(recsketch.guided, "COND_WARN", 4.0)
    short, long = words.shape[1], 64
    assert np.linalg.cond(words[:short]) > 4.0 * full > np.linalg.cond(words[:long])
    with pytest.warns(RuntimeWarning, match=f"{short} kept coordinates.*cond="):
        reader.mass(rs.erase(s, short), "edge")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader.mass(rs.erase(s, long), "edge")      # well conditioned: silent
