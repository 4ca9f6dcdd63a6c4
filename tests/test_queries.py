"""The paper's guarantees (Theorems 1-3, graceful erasure) measured on seeded random scenes.

Unbiasedness is checked over independent matrix draws (MATH.md §3.5: with fixed matrices the
error is a fixed bias), scaling over d, and `matched` against `paper` on the same sketches.
Unbiasedness windows are 4 standard errors over the draws and must be narrow enough to
resolve a 5-7% bias; the other bounds are statistical assertions with fixed seeds.
"""

import numpy as np
import pytest

import recsketch as rs
from scenes import ordered_room, room, unit


def scene(rng, order=("wall", "wall", "cat")):
    """Walls (w = .25 each) and a cat (w = .5, two edges of w = .5) in the given input order."""
    return ordered_room(rng, order)


def ratio(est, x):
    """Regression slope of the estimate on the truth: 1 when the gain is right."""
    return float(np.dot(est, x) / np.dot(x, x))


def assert_mean_near(values, target, n_se=4.0, resolve=0.05):
    """The mean is within ``n_se`` standard errors of ``target`` (the standard error being
    estimated, a false alarm with probability P(|t| > 4) on n - 1 degrees of freedom: 2.2e-4
    per assertion at 48 draws, 5.6e-4 at 24), and that window is narrower than ``resolve * target``: a bias of
    that relative size would be seen (else the test could not back "unbiased")."""
    v = np.asarray(values)
    se = v.std(ddof=1) / np.sqrt(v.size)
    assert n_se * se < resolve * abs(target), ("too noisy to resolve the bias", se)
    assert abs(v.mean() - target) < n_se * se, (v.mean(), se)


UNBIASED_DRAWS = range(48)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["matched", "paper"])
@pytest.mark.parametrize("order", [("wall", "wall", "cat"), ("cat", "wall", "wall")])
def test_estimators_are_unbiased_over_matrix_draws(method, order):
    # Position 1 makes R[1] both position and slot; the gain must account for it.
    # At d = 16384 one draw's relative spread is 2-11% (the paper's estimator the widest), so 48
    # draws put 4 standard errors under 5% (matched) or 7% (paper) of the target: a bias of
    # that size would fail. (At d = 1024 and 40 draws the window was 6-22%.)
    cat_i, wall_ii, count, sub = [], [], [], []
    for seed in UNBIASED_DRAWS:
        sk = rs.Sketcher(16384, family="orthogonal", seed=seed, dtype="float64")
        g, h = scene(np.random.default_rng(1000 + seed), order)
        s = sk.sketch(g)
        cat = g.attributes(h["cat"])
        cat_i.append(ratio(sk.attributes(s, "cat", weight=0.5, method=method), cat))
        first_wall = 1 + list(order).index("wall")
        wall = g.attributes(h["wall"][0])
        wall_ii.append(ratio(sk.attributes(s, "wall", path=[first_wall], weight=0.25,
                                           method=method), wall))
        count.append(sk.count(s, "wall", 0.25, method=method))
        t = sk.subsketch(s, [1 + list(order).index("cat")], "cat", method=method, weight=0.5)
        sub.append(ratio(sk.attributes(t, "cat", weight=1.0, method=method), cat))
    # the paper's literal estimator spreads wider (up to 11% per draw): it is resolved to 7%
    resolve = 0.05 if method == "matched" else 0.07
    assert_mean_near(cat_i, 1.0, resolve=resolve)
    assert_mean_near(wall_ii, 1.0, resolve=resolve)
    assert_mean_near(count, 2.0, resolve=resolve)
    assert_mean_near(sub, 1.0, resolve=resolve)


def linf(a, b):
    return float(np.max(np.abs(a - b)))


def errors(make_sketcher, seeds, keep=None, mode="prefix"):
    """Mean l-inf errors of case (i) (cat), case (ii) (second wall of two) and of the wall
    count, for both methods on the same sketches; one matrix draw per seed."""
    out = {(m, k): [] for m in ("paper", "matched") for k in ("cat", "wall", "count")}
    for seed in seeds:
        sk = make_sketcher(seed)
        g, h = scene(np.random.default_rng(seed))
        s = sk.sketch(g)
        if keep is not None:
            s = rs.erase(s, keep, mode=mode, seed=seed)
        for m in ("paper", "matched"):
            out[m, "cat"].append(linf(sk.attributes(s, "cat", weight=0.5, method=m),
                                      g.attributes(h["cat"])))
            out[m, "wall"].append(linf(sk.attributes(s, "wall", path=[2], weight=0.25, method=m),
                                       g.attributes(h["wall"][1])))
            out[m, "count"].append(abs(sk.count(s, "wall", 0.25, method=m) - 2))
    return {key: float(np.mean(v)) for key, v in out.items()}


SIZES = {"orthogonal": [1024, 4096, 16384], "block_sparse": [1008, 4095, 16371]}


def sketcher(family, d, seed):
    return rs.Sketcher(d, family=family, seed=seed)


def maker(family, d):
    return lambda seed: sketcher(family, d, seed)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_error_scales_as_one_over_sqrt_d_and_matched_beats_paper(family):
    table = {d: errors(maker(family, d), range(8)) for d in SIZES[family]}
    for method in ("paper", "matched"):
        for key, w in (("cat", 0.5), ("wall", 0.25)):
            scaled = [table[d][method, key] * w * np.sqrt(d) for d in SIZES[family]]
            # Theorem 1: error * w * sqrt(d) bounded (here: within a factor 2.5 across 16x in d)
            assert max(scaled) / min(scaled) < 2.5, (method, key, scaled)
            errs = [table[d][method, key] for d in SIZES[family]]
            assert errs[0] > errs[1] > errs[2], (method, key, errs)
    for d in SIZES[family]:
        for key in ("cat", "wall", "count"):
            assert table[d]["matched", key] < table[d]["paper", key], (d, key, table[d])


@pytest.mark.parametrize("family,d", [("orthogonal", 16384), ("block_sparse", 16371)])
def test_counts_round_to_the_exact_count_at_16k(family, d):
    for seed in range(5):
        sk = sketcher(family, d, seed)
        rng = np.random.default_rng(seed)
        n_walls = 1 + seed % 4
        g = rs.Graph()
        walls = [g.add("wall", unit(rng, 8)) for _ in range(n_walls)]
        lamp = g.add("lamp", unit(rng, 4))
        g.set_output([(w, 0.8 / n_walls) for w in walls] + [(lamp, 0.2)])
        s = sk.sketch(g)
        assert round(sk.count(s, "wall", 0.8 / n_walls)) == n_walls
        assert round(sk.count(s, "lamp", 0.2)) == 1
        assert sk.mass(s, "wall") == pytest.approx(0.8, abs=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prefix", "random"])
def test_erasure_error_grows_like_sqrt_d_over_d_kept(mode):
    make = maker("orthogonal", 16384)
    base = errors(make, range(8))
    for frac in (1 / 4, 1 / 16):
        erased = errors(make, range(8), keep=frac, mode=mode)
        for key in (("matched", "cat"), ("matched", "wall"), ("paper", "cat")):
            growth = erased[key] / base[key]
            assert 0.5 * np.sqrt(1 / frac) < growth < 2.0 * np.sqrt(1 / frac), (frac, key, growth)


def test_erasure_keeping_everything_changes_nothing():
    sk = rs.Sketcher(1024, family="orthogonal", dtype="float64")
    g, _ = room(np.random.default_rng(0))
    s = sk.sketch(g)
    for mode in ("prefix", "random"):
        e = rs.erase(s, 1.0, mode=mode)
        assert e.d_kept == 1024 and np.array_equal(e.to_dense(), s)
        np.testing.assert_allclose(sk.attributes(e, "cat", weight=0.5),
                                   sk.attributes(s, "cat", weight=0.5), atol=1e-12)


def test_erasure_is_reproducible_and_remembers_its_mask():
    s = np.arange(1.0, 101.0)
    a, b = rs.erase(s, 30, mode="random", seed=9), rs.erase(s, 30, mode="random", seed=9)
    assert np.array_equal(a.indices, b.indices) and a.d_kept == 30
    assert not np.array_equal(a.indices, rs.erase(s, 30, mode="random", seed=10).indices)
    assert np.array_equal(a.values, s[a.indices])
    p = rs.erase(np.vstack([s, -s]), 0.25)
    assert p.values.shape == (2, 25) and np.array_equal(p.indices, np.arange(25))
    np.testing.assert_allclose(p.rescaled()[0, :25], 4 * s[:25])


def test_similarity_theorem_2():
    d = 16384
    sk = rs.Sketcher(d, family="orthogonal", seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    g1, h1 = room(rng)
    g2 = rs.Graph()  # disjoint modules
    g2.set_output([(g2.add("tree", unit(rng, 8)), 0.5), (g2.add("bird", unit(rng, 8)), 0.5)])
    g3 = rs.Graph()  # shares the cat (same attributes) at the same depth
    e = [g3.add("edge", g1.attributes(x)) for x in h1["edges"]]
    g3.set_output([(g3.add("cat", g1.attributes(h1["cat"]), [(x, 0.5) for x in e]), 0.5),
                   (g3.add("tree", unit(rng, 8)), 0.5)])
    s = sk.sketch_many([g1, g2, g3])
    sim = rs.similarity(s, s)
    assert sim.dot.shape == (3, 3)
    assert abs(sim.cosine[0, 1]) < 5 / np.sqrt(d)
    assert sim.cosine[0, 2] > 20 / np.sqrt(d)
    # the guaranteed lower bound g g' = (w/32)^2 for the shared depth-2 cat (Theorem 2(ii))
    assert sim.dot[0, 2] >= (0.5 / 32) ** 2
    one = rs.similarity(s[0], s[2])
    assert one.dot == pytest.approx(sim.dot[0, 2]) and isinstance(one.cosine, float)


def test_lipschitz_in_the_attributes_is_exact_for_orthogonal_matrices():
    # Theorem 2(iii): attributes each moved by at most eps in l2 move the sketch by <= eps/2.
    from scenes import random_dag
    for seed in range(5):
        sk = rs.Sketcher(512, family="orthogonal", seed=seed, dtype="float64")
        rng = np.random.default_rng(seed)
        g, (objects, output) = random_dag(rng, depth=4)
        eps = 0.05
        g2 = rs.Graph()
        hs = []
        for module, x, inputs in objects:
            y = np.abs(x + rng.normal(size=x.size) * 0.01)
            y /= np.linalg.norm(y)
            step = y - x  # move by exactly eps along the direction to y, then renormalise
            z = x + eps * step / np.linalg.norm(step) if np.linalg.norm(step) > 0 else x
            z = np.abs(z) / np.linalg.norm(z)
            assert np.linalg.norm(z - x) <= eps + 1e-12
            hs.append(g2.add(module, z, [(hs[c], w) for c, w in inputs]))
        g2.set_output([(hs[c], w) for c, w in output])
        gap = np.linalg.norm(sk.sketch(g) - sk.sketch(g2))
        assert 0 < gap <= eps / 2 + 1e-12


def test_batched_queries_equal_single_queries_and_both_routes_agree(monkeypatch):
    sk = rs.Sketcher(1008, block_size=42, density=0.25, seed=2, dtype="float64")
    graphs = [scene(np.random.default_rng(k))[0] for k in range(4)]
    S = sk.sketch_many(graphs)
    batch = sk.attributes(S, "cat", weight=0.5)
    single = np.array([sk.attributes(s, "cat", weight=0.5) for s in S])
    np.testing.assert_allclose(batch, single, atol=1e-12)
    counts = sk.count(S, "wall", 0.25)
    assert counts.shape == (4,)
    # the cached (k, d) probe matrix and the transposes are the same linear map
    import recsketch.decoder as decoder
    monkeypatch.setattr(decoder, "_PROBE_MATRIX_MAX_K", 0)
    sk2 = rs.Sketcher.from_json(sk.to_json())
    for method in ("matched", "paper"):
        for path in (None, [2]):
            a = sk.attributes(S, "wall", path=path, weight=0.25, method=method)
            b = sk2.attributes(S, "wall", path=path, weight=0.25, method=method)
            np.testing.assert_allclose(a, b, atol=1e-10)
    e = rs.erase(S, 0.5, mode="random", seed=1)
    np.testing.assert_allclose(sk.count(e, "wall", 0.25), sk2.count(e, "wall", 0.25), atol=1e-10)


def test_weight_free_estimates():
    sk = rs.Sketcher(65536, family="orthogonal", seed=7)
    g, h = room(np.random.default_rng(3))
    s = sk.sketch(g)
    est = sk.attributes(s, "cat")
    assert est.weight == pytest.approx(0.5, abs=0.05)
    assert np.linalg.norm(est.attributes) == pytest.approx(1.0)
    assert linf(est.attributes, g.attributes(h["cat"])) < 0.1
    mean = sk.mean_attributes(s, "wall")
    truth = (g.attributes(h["walls"][0]) + g.attributes(h["walls"][1])) / 2
    assert linf(mean, truth) < 0.1
    assert linf(sk.mean_attributes(s, "wall", 0.25), truth) < 0.1
    assert linf(sk.summed_attributes(s, "wall", 0.25), 2 * truth) < 0.2


def test_subsketch_unrolls_recursively():
    sk = rs.Sketcher(65536, family="orthogonal", seed=5)
    g, h = room(np.random.default_rng(8))
    s = sk.sketch(g)
    t = sk.subsketch(s, [1], weight=0.5, module="cat")
    assert isinstance(t, rs.SubSketch) and t.depth == 2 and t.path == (1,)
    # inside the cat: the edges are at relative depth 1 with weight .5 each
    assert round(sk.count(t, "edge", 0.5)) == 2
    u = sk.subsketch(t, [2], weight=0.5)  # the registry has one module at depth 3: edge
    assert u.module == "edge" and u.path == (1, 2)


@pytest.mark.slow
def test_subsketch_and_path_estimate_the_same_object_without_bias():
    # A depth-3 estimate at d = 65536 carries about 44% relative noise from one matrix draw
    # (regression slope on the truth 0.14-1.8 over 11 draws), so no l-inf bound on one draw
    # separates it from a zero estimate. Over draws, the estimate through two subsketches and
    # the one by path are both unbiased for the same edge: their mean slopes are within 4
    # standard errors of 1 (a zero estimate has slope 0), and so is their mean difference of 0.
    # 24 draws: the noise check then needs a spread below 0.73 against about 0.44, failing by
    # chance about once in 10^5 (12 draws needed below 0.52: about one run in six per estimate).
    via, direct = [], []
    for seed in range(24):
        sk = rs.Sketcher(65536, family="orthogonal", seed=seed)
        g, h = room(np.random.default_rng(8))
        s = sk.sketch(g)
        u = sk.subsketch(sk.subsketch(s, [1], weight=0.5, module="cat"), [2], weight=0.5)
        x = g.attributes(h["edges"][1])
        via.append(ratio(sk.attributes(u, "edge", weight=1.0), x))
        direct.append(ratio(sk.attributes(s, "edge", path=[1, 2], weight=0.25), x))
    assert_mean_near(via, 1.0, resolve=0.6)
    assert_mean_near(direct, 1.0, resolve=0.6)
    diff = np.subtract(via, direct)
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(diff.size)


def test_decoder_and_path_errors_name_the_argument():
    # review F8
    with pytest.raises(TypeError, match="sketcher"):
        rs.Decoder(None)
    sk = rs.Sketcher(1020, seed=3, dtype="float64")
    g = rs.Graph()
    x = np.array([0.6, 0.8])
    g.set_output([(g.add("cat", x), 1.0)])
    s = sk.sketch(g)
    for path in ([2**70], [2**64 - 1]):
        with pytest.raises(ValueError, match="path entry 0"):
            sk.attributes(s, "cat", path)
