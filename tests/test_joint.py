"""method="joint": the least-squares read-out (joint.py) against an independent dense NumPy fit,
its exactness where every object's path is enumerated, bad input and determinism.

The reference below writes the model out from MATH.md §2.3 with dense matrices
(``RandomMatrix.to_dense``): an object of module M on path (i_2, A_2, ..., i_h) contributes
``w 2^-h P(R[i_2]) P(R[A_2,0]) P(R[2]) ... P(R[i_h]) P(R[M,0]) P(R[1]) (R[M,1] x + R[M,2] e_1)``
and a path-free module's column is ``2^-(4h-3) (I + R[M,0] + R[M,0] R[1]) R[M,·] e_j``; the
fit is ``numpy.linalg.lstsq`` on the stacked columns.
"""

import itertools
import threading

import numpy as np
import pytest

import recsketch as rs
from scenes import ordered_room, random_dag, unit


def small_room(rng, order=("wall", "wall", "cat")):
    """The room with short attributes (so a small d holds every path's unknowns)."""
    return ordered_room(rng, order, dims=(2, 4, 3))


class DenseModel:
    """The joint model built from dense matrices, independently of joint.py."""

    def __init__(self, sk, fan_in, path_free_depths=()):
        self.sk, self.d = sk, sk.d_sketch
        self.dense = {}
        by_depth = {}
        for name, info in sorted(sk.modules.items()):
            by_depth.setdefault(info.depth, []).append(name)
        self.cols, self.labels = [], []  # labels: (module, path or None, channel, j)
        for depth in sorted(by_depth):
            for name in by_depth[depth]:
                dim = sk.modules[name].attribute_dim
                if depth in path_free_depths:
                    self._add(name, None, (), depth, dim)
                    continue
                for anc in itertools.product(*[by_depth[lv] for lv in range(2, depth)]):
                    for path in itertools.product(range(1, fan_in + 1), repeat=depth - 1):
                        self._add(name, path, anc, depth, dim)

    def mat(self, kind, key):
        if (kind, key) not in self.dense:
            m = (self.sk.position_matrix(key) if kind == "pos"
                 else self.sk.module_matrix(*key))
            self.dense[kind, key] = m.to_dense()
        return self.dense[kind, key]

    def P(self, kind, key):
        return 0.5 * (np.eye(self.d) + self.mat(kind, key))

    def _add(self, name, path, anc, depth, dim):
        inner = np.concatenate([self.mat("mod", (name, 1))[:, :dim],
                                self.mat("mod", (name, 2))[:, :1]], axis=1)
        if path is None:
            op = (np.eye(self.d) + self.mat("mod", (name, 0))
                  + self.mat("mod", (name, 0)) @ self.mat("pos", 1))
            block = 0.5 ** (4 * depth - 3) * op @ inner
        else:
            op = np.eye(self.d)
            for level, i in enumerate(path, start=2):
                op = op @ self.P("pos", i)
                if level < depth:
                    op = op @ self.P("mod", (anc[level - 2], 0)) @ self.P("pos", 2)
                else:
                    op = op @ self.P("mod", (name, 0)) @ self.P("pos", 1)
            block = 0.5 ** depth * op @ inner
        for j in range(dim + 1):
            self.cols.append(block[:, j])
            self.labels.append((name, path, 2 if j == dim else 1, j))

    def fit(self, s, rows=None):
        a = np.stack(self.cols, axis=1)
        rows = slice(None) if rows is None else rows
        theta = np.linalg.lstsq(a[rows], np.asarray(s, np.float64), rcond=None)[0]
        return theta

    def summed(self, theta, module, channel, path=None):
        dim = self.sk.modules[module].attribute_dim
        out = np.zeros(dim if channel == 1 else 1)
        for t, (name, p, ch, j) in zip(theta, self.labels):
            if name == module and ch == channel and (path is None or p == path):
                out[j if channel == 1 else 0] += t
        return out


@pytest.mark.parametrize("family,d", [("orthogonal", 512), ("block_sparse", 1008)])
@pytest.mark.parametrize("fan_in", [2, 3])
def test_joint_matches_a_dense_least_squares_fit(family, d, fan_in):
    # fan_in 2 leaves the object at position 3 out of the path blocks (the model is not exact),
    # so the comparison checks the algebra of the fit, not only that both recover the truth.
    sk = rs.Sketcher(d, family=family, seed=3, dtype="float64")
    g, h = small_room(np.random.default_rng(5))
    s = sk.sketch(g)
    ref = DenseModel(sk, fan_in)
    theta = ref.fit(s)
    kw = dict(method="joint", fan_in=fan_in)
    for module in ("cat", "wall", "edge"):
        mass = ref.summed(theta, module, 2)[0]
        summed = ref.summed(theta, module, 1)
        assert sk.mass(s, module, **kw) == pytest.approx(mass, abs=1e-9)
        assert sk.count(s, module, 0.25, **kw) == pytest.approx(mass / 0.25, abs=1e-8)
        np.testing.assert_allclose(sk.summed_attributes(s, module, 1.0, **kw), summed,
                                   atol=1e-9)
        np.testing.assert_allclose(sk.mean_attributes(s, module, **kw), summed / mass,
                                   rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(sk.attributes(s, "wall", path=[2], weight=1.0, **kw),
                               ref.summed(theta, "wall", 1, (2,)), atol=1e-9)
    np.testing.assert_allclose(sk.attributes(s, "edge", path=[1, 2], weight=1.0, **kw),
                               ref.summed(theta, "edge", 1, (1, 2)), atol=1e-9)


@pytest.mark.filterwarnings("ignore:method='joint' fits module 'edge':RuntimeWarning")
def test_joint_matches_a_dense_fit_with_path_free_deep_modules():
    # d = 128 enumerates 64 unknowns: the depth-2 paths (3 x (5 + 4) = 27) but not the depth-3
    # ones (3 x 2 x 3 x 3 = 54), so the edges get one path-free block.
    sk = rs.Sketcher(128, family="orthogonal", seed=1, dtype="float64")
    g, h = small_room(np.random.default_rng(2))
    s = sk.sketch(g)
    ref = DenseModel(sk, 3, path_free_depths=(3,))
    theta = ref.fit(s)
    got = sk.summed_attributes(s, "edge", 1.0, method="joint", fan_in=3)
    np.testing.assert_allclose(got, ref.summed(theta, "edge", 1), atol=1e-9)
    assert sk.mass(s, "wall", method="joint", fan_in=3) == pytest.approx(
        ref.summed(theta, "wall", 2)[0], abs=1e-9)
    # a case (ii) query on the path-free module adds that path's blocks (one per ancestor)
    for anc in ("cat", "wall"):
        ref._add("edge", (3, 2), (anc,), 3, 2)
    theta = ref.fit(s)
    got = sk.attributes(s, "edge", path=[3, 2], weight=1.0, method="joint", fan_in=3)
    np.testing.assert_allclose(got, ref.summed(theta, "edge", 1, (3, 2)), atol=1e-9)
    e = rs.erase(s, 100)
    theta = ref.fit(s[:100], rows=slice(0, 100))
    got = sk.attributes(e, "edge", path=[3, 2], weight=1.0, method="joint", fan_in=3)
    np.testing.assert_allclose(got, ref.summed(theta, "edge", 1, (3, 2)), atol=1e-9)


def test_joint_erased_sketch_matches_a_dense_fit_on_the_kept_coordinates():
    sk = rs.Sketcher(512, family="orthogonal", seed=4, dtype="float64")
    g, h = small_room(np.random.default_rng(4))
    s = sk.sketch(g)
    e = rs.erase(s, 400, mode="random", seed=9)
    ref = DenseModel(sk, 2)
    theta = ref.fit(s[e.indices], rows=e.indices)
    np.testing.assert_allclose(sk.summed_attributes(e, "cat", 1.0, method="joint", fan_in=2),
                               ref.summed(theta, "cat", 1), atol=1e-9)


def paths_of(g):
    """(handle, positions from the output, path weight) of every path of the graph."""
    out = []

    def walk(hd, pos, w):
        out.append((hd, pos, w))
        for i, (c, wc) in enumerate(g.inputs(hd), 1):
            walk(c, pos + (i,), w * wc)

    for i, (hd, w) in enumerate(g.output, 1):
        walk(hd, (i,), w)
    return out


@pytest.mark.parametrize("family,d", [("orthogonal", 4096), ("block_sparse", 4095)])
def test_joint_is_exact_where_every_path_is_enumerated(family, d):
    # A random depth-3 DAG with shared children and fan-in <= 3: every object's words lie in
    # the span of the fitted columns, so the joint read-out recovers masses and per-path
    # attributes to rounding, where the matched filter is off by percents.
    rng = np.random.default_rng(11)
    g, _ = random_dag(rng, depth=3, width=4, max_fan_in=3, dims=(3, 8))
    sk = rs.Sketcher(d, family=family, seed=2)
    s = sk.sketch(g)
    paths = paths_of(g)
    for module in sk.modules:
        truth = sum(w for hd, _, w in paths if hd.module == module)
        joint = sk.mass(s, module, method="joint", fan_in=3)
        matched = sk.mass(s, module, method="matched")
        assert abs(joint - truth) < 1e-5 * truth
        assert abs(matched - truth) > 100 * abs(joint - truth)
    for hd, pos, w in paths:
        est = sk.attributes(s, hd.module, path=list(pos), weight=w, method="joint", fan_in=3)
        np.testing.assert_allclose(est, g.attributes(hd), atol=1e-4)
    # weight-free attributes and the weight-free mean
    hd, pos, w = paths[0]
    est = sk.attributes(s, hd.module, path=list(pos), method="joint", fan_in=3)
    np.testing.assert_allclose(est.attributes, g.attributes(hd), atol=1e-4)
    assert est.weight == pytest.approx(w, abs=1e-5)


def test_joint_mean_and_count_on_the_room():
    rng = np.random.default_rng(0)
    g, h = small_room(rng)
    sk = rs.Sketcher(4096, family="orthogonal", seed=0)
    s = sk.sketch(g)
    kw = dict(method="joint", fan_in=3)
    assert sk.count(s, "wall", 0.25, **kw) == pytest.approx(2.0, abs=1e-5)
    walls = [g.attributes(w) for w in h["wall"]]
    np.testing.assert_allclose(sk.mean_attributes(s, "wall", 0.25, **kw), np.mean(walls, 0),
                               atol=1e-5)
    np.testing.assert_allclose(sk.mean_attributes(s, "wall", **kw), np.mean(walls, 0), atol=1e-5)
    est = sk.attributes(s, "cat", **kw)
    np.testing.assert_allclose(est.attributes, g.attributes(h["cat"]), atol=1e-5)
    assert est.weight == pytest.approx(0.5, abs=1e-6)


def test_joint_batch_equals_single_and_is_deterministic():
    rng = np.random.default_rng(1)
    scenes = [small_room(rng)[0] for _ in range(3)]
    a = rs.Sketcher(1008, family="block_sparse", density=0.25, seed=7)
    batch = a.sketch_many(scenes)
    out = a.summed_attributes(batch, "cat", 0.5, method="joint", fan_in=3)
    for k in range(3):
        one = a.summed_attributes(batch[k], "cat", 0.5, method="joint", fan_in=3)
        np.testing.assert_allclose(out[k], one, rtol=0, atol=1e-12)
    b = rs.Sketcher(1008, family="block_sparse", density=0.25, seed=7)
    b.sketch_many(scenes)  # same registry
    again = b.summed_attributes(batch, "cat", 0.5, method="joint", fan_in=3, num_threads=1)
    assert np.array_equal(out, again)


def _in_threads(call, n=4):
    """``call()`` from ``n`` threads at once: their results (the first error is raised)."""
    got, errors = [None] * n, []

    def run(k):
        try:
            got[k] = call()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return got


def test_joint_from_threads_equals_one_thread():
    rng = np.random.default_rng(3)
    g, _ = small_room(rng)
    sk = rs.Sketcher(1024, family="orthogonal", seed=5)
    s = sk.sketch(g)
    want = sk.summed_attributes(s, "wall", 0.25, method="joint", fan_in=3)
    sk.decoder.clear_cache()
    for x in _in_threads(lambda: sk.summed_attributes(s, "wall", 0.25, method="joint",
                                                      fan_in=3)):
        assert np.array_equal(x, want)


def test_joint_from_threads_with_a_cache_that_rebuilds_equals_one_thread():
    # Between cache_bytes_needed and cache_bytes_fast the design is rebuilt and probes and
    # factors are evicted while other threads read them: every answer the same bits.
    rng = np.random.default_rng(4)
    g, _ = small_room(rng)
    ref = rs.Sketcher(1024, family="orthogonal", seed=5, query_cache_bytes=1 << 30)
    s = ref.sketch(g)
    e = rs.erase(s, 700, mode="random", seed=1)

    def queries(sk):
        out = []
        for x in (s, e):
            for module in ("wall", "cat", "edge"):
                out.append(sk.mass(x, module, method="joint", fan_in=3))
                out.append(sk.summed_attributes(x, module, 0.5, method="joint", fan_in=3))
            out.append(sk.attributes(x, "edge", path=[3, 2], method="joint", fan_in=3).attributes)
            out.append(sk.attributes(x, "cat", path=[3], method="joint", fan_in=3).attributes)
        return out

    want = queries(ref)
    plan = ref.decoder.joint_plan(fan_in=3)
    for cache in (plan["cache_bytes_needed"], (plan["cache_bytes_needed"]
                                                + plan["cache_bytes_fast"]) // 2):
        assert cache < plan["cache_bytes_fast"]
        sk = rs.Sketcher(1024, family="orthogonal", seed=5, query_cache_bytes=cache)
        sk.sketch(g)
        for answers in _in_threads(lambda: queries(sk)):
            for a, b in zip(answers, want, strict=True):
                np.testing.assert_array_equal(a, b)


def test_joint_bad_input():
    rng = np.random.default_rng(0)
    g, _ = small_room(rng)
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    s = sk.sketch(g)
    with pytest.raises(ValueError, match="fan_in applies to method='joint'"):
        sk.mass(s, "wall", method="matched", fan_in=3)
    for bad in (0, -1, 65):
        with pytest.raises(ValueError, match="fan_in"):
            sk.mass(s, "wall", method="joint", fan_in=bad)
    for bad in (2.5, "3", True):
        with pytest.raises(TypeError, match="fan_in"):
            sk.mass(s, "wall", method="joint", fan_in=bad)
    with pytest.raises(ValueError, match="method must be one of"):
        sk.mass(s, "wall", method="Joint")
    bad = s.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sk.mass(bad, "wall", method="joint", fan_in=3)
    with pytest.raises(ValueError, match="shape"):
        sk.mass(s[:-1], "wall", method="joint", fan_in=3)
    with pytest.raises(ValueError, match="not registered"):
        sk.mass(s, "dog", method="joint", fan_in=3)
    with pytest.raises(ValueError, match="needs 2 positions"):
        sk.attributes(s, "edge", path=[1], method="joint", fan_in=3)
    sub = sk.subsketch(s, [3], module="cat")
    with pytest.raises(ValueError, match="SubSketch"):
        sk.mass(sub, "edge", method="joint", fan_in=3)
    with pytest.raises(ValueError, match="subsketch has no 'joint'"):
        sk.subsketch(s, [3], module="cat", method="joint")


def test_joint_refuses_an_erasure_that_leaves_too_few_coordinates():
    # Erasing down to fewer coordinates than twice the path-free blocks' unknowns: refused
    # before anything is built, naming the limit.
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    s = sk.sketch(g)
    e = rs.erase(s, 8)
    with pytest.raises(ValueError, match=r"needs 12 unknowns.*half of the 8 sketch coordinates"):
        sk.mass(e, "wall", method="joint", fan_in=3)
    assert sk.decoder.cache_info()["entries"] == 0


def test_joint_gram_factor_refuses_ill_conditioned_designs():
    # Cholesky succeeds on this Gram matrix (pivot ratio ~1e-14), but a fit on it would turn
    # rounding into garbage: refused like a singular one.
    from recsketch.joint import gram_factor
    rng = np.random.default_rng(0)
    rows, noise = rng.standard_normal((3, 64)), rng.standard_normal(64)
    rows[2] = rows[0] + 1e-7 * noise
    np.linalg.cholesky(rows @ rows.T)   # exists
    with pytest.raises(ValueError, match="linearly dependent"):
        gram_factor(rows)
    rows[2] = rows[0] + 1e-2 * noise
    assert np.all(np.isfinite(gram_factor(rows)))


def _wide(d, n_modules, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    sk = rs.Sketcher(d, family="orthogonal", seed=seed, dtype="float64")
    for k in range(n_modules):
        sk.register_module(f"m{k:03d}", 2, dim)
    g = rs.Graph()
    a, b = g.add("m000", unit(rng, dim)), g.add("m001", unit(rng, dim))
    g.set_output([(a, 0.5), (b, 0.5)])
    return sk, sk.sketch(g)


def test_joint_counts_path_free_blocks_against_the_budget():
    # 61 modules of dim 16 at d = 1024: 1037 path-free unknowns. Fitted, they returned a mass
    # error of 0.18 (cond ~1e14) without a word; now refused before anything is built.
    sk, s = _wide(1024, 61)
    plan = sk.decoder.joint_plan()
    assert plan["unknowns"] == 61 * 17 and plan["budget"] == 512
    with pytest.raises(ValueError, match=r"1037 unknowns for the 61 registered modules.*"
                                         r"register fewer modules.*joint_plan"):
        sk.mass(s, "m000", method="joint")
    assert sk.decoder.cache_info()["entries"] == 0
    # 30 modules (510 unknowns) fit and agree with a dense least-squares fit
    sk, s = _wide(1024, 30)
    theta = DenseModel(sk, 8, path_free_depths=(2,)).fit(s)
    with pytest.warns(RuntimeWarning, match="path-free"):
        assert sk.mass(s, "m000", method="joint") == pytest.approx(theta[16], abs=1e-9)


def test_joint_plan_reserves_room_for_deeper_path_free_blocks():
    # Enumerating depth 2 (27 unknowns) would leave no room for the 40 path-free unknowns of
    # depth 3 within d / 2 = 64: depth 2 is fitted path-free instead.
    sk = rs.Sketcher(128, family="orthogonal", seed=0)
    sk.register_module("wall", 2, 3)
    sk.register_module("cat", 2, 4)
    for k in range(4):
        sk.register_module(f"e{k}", 3, 9)
    plan = sk.decoder.joint_plan(fan_in=3)
    assert plan["budget"] == 64
    assert plan["unknowns"] == 9 + 40 and plan["path_depths"] == []
    assert plan["path_free_depths"] == [2, 3]


def test_joint_refuses_a_module_no_path_reaches():
    # nothing registered at depth 2: no block of the fit reads "deep", which returned 0
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    sk.register_module("deep", 3, 4)
    s = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    with pytest.raises(ValueError, match="no module is registered at depth 2"):
        sk.mass(s, "deep", method="joint", fan_in=3)
    with pytest.raises(ValueError, match="no module is registered at depth 2"):
        sk.attributes(s, "deep", path=[1, 1], weight=1.0, method="joint", fan_in=3)


def test_joint_design_build_leaves_nothing_referenced():
    # design_rows memoised partial products in a self-referencing closure: ~1.35x the design
    # stayed alive after the call until the garbage collector ran.
    import gc
    import tracemalloc
    from recsketch.joint import design_rows, plan_blocks
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(2048, family="orthogonal", seed=0)
    sk.sketch(g)
    blocks = plan_blocks(sk.modules, 3, 1024)
    design_rows(sk, blocks, None)   # warm up the matrices' own caches
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        rows = design_rows(sk, blocks, None)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        gc.enable()
    assert held < rows.nbytes + 0.1 * rows.nbytes


def test_joint_erased_sketch_factor_is_cached_per_kept_set(monkeypatch):
    import recsketch.joint_readout as jr
    calls = []
    real = jr.gram_factor
    monkeypatch.setattr(jr, "gram_factor", lambda rows: calls.append(rows.shape[1]) or real(rows))
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    s = sk.sketch(g)
    e = rs.erase(s, 400, mode="prefix")
    first = sk.attributes(e, "wall", path=[1], method="joint", fan_in=3)   # two channels
    again = sk.attributes(e, "wall", path=[1], method="joint", fan_in=3)
    sk.mass(rs.erase(s, 400, mode="prefix"), "cat", method="joint", fan_in=3)
    assert calls == [400]   # one factor for both channels and both calls
    np.testing.assert_array_equal(first.attributes, again.attributes)
    sk.mass(rs.erase(s, 300, mode="prefix"), "cat", method="joint", fan_in=3)
    sk.mass(rs.erase(s, 400, mode="random", seed=1), "cat", method="joint", fan_in=3)
    assert calls == [400, 300, 400]
    fresh = rs.Sketcher(512, family="orthogonal", seed=0)
    fresh.sketch(g)
    np.testing.assert_allclose(fresh.mass(e, "wall", method="joint", fan_in=3),
                               sk.mass(e, "wall", method="joint", fan_in=3), rtol=1e-12)


def _count_design_builds(monkeypatch):
    """Record the unknowns of every design ``design_rows`` builds, and every Gram factor."""
    import recsketch.joint_readout as jr
    builds, factors = [], []
    real_rows, real_factor = jr.design_rows, jr.gram_factor
    monkeypatch.setattr(jr, "design_rows", lambda sk, blocks, t: builds.append(
        sum(b.size for b in blocks)) or real_rows(sk, blocks, t))
    monkeypatch.setattr(jr, "gram_factor",
                        lambda rows: factors.append(rows.shape) or real_factor(rows))
    return builds, factors


def test_joint_answers_do_not_depend_on_the_query_cache(tmp_path):
    # The plan used to shrink with cache_bytes: mass(cat) was 0.49999 at the default cache,
    # 0.5125 at 150,000 bytes and 0.4630 at 60,000, silently, and a Repository (default cache)
    # answered 0.5 for the same Sketcher. Now the cache only keeps the plan's design or refuses.
    g, _ = small_room(np.random.default_rng(0))
    ref = rs.Sketcher(512, family="orthogonal", seed=0)
    s = ref.sketch(g)
    plan = ref.decoder.joint_plan(fan_in=3)
    assert plan["budget"] == 256 and plan["path_depths"] == [2, 3]
    want = ref.mass(s, "cat", method="joint", fan_in=3)
    assert want == pytest.approx(0.5, abs=1e-6)
    for cache in (150_000, 60_000):   # the same answer, or refused: never another answer
        sk = rs.Sketcher(512, family="orthogonal", seed=0, query_cache_bytes=cache)
        sk.sketch(g)
        try:
            got = sk.mass(s, "cat", method="joint", fan_in=3)
        except ValueError as err:
            assert "raise cache_bytes" in str(err)
        else:
            assert got == want
    n = plan["unknowns"]
    # the factor and one module's probe (dims 3, 4 and 2 in small_room: the cat's 5 rows);
    # the other probes and the design (8 n d) are kept only where there is room
    dims = sum(ref.module_info(m).attribute_dim + 1 for m in ("wall", "cat", "edge"))
    assert plan["cache_bytes_needed"] == 8 * n * n + 8 * 5 * 512
    assert plan["cache_bytes_fast"] == 8 * n * (512 + n) + 8 * dims * 512
    # the design and factor, and more while its partial products are alive
    # (test_joint_design_bytes_bounds_the_measured_peak_of_a_build measures the peak)
    assert plan["design_bytes"] >= 8 * n * (512 + 2 * n)
    for cache in (plan["cache_bytes_needed"], 3 * plan["cache_bytes_needed"], 256 << 20):
        sk = rs.Sketcher(512, family="orthogonal", seed=0, query_cache_bytes=cache)
        sk.sketch(g)
        assert sk.decoder.joint_plan(fan_in=3) == plan
        assert sk.mass(s, "cat", method="joint", fan_in=3) == want
    for cache in (plan["cache_bytes_needed"] - 1, 60_000):
        sk.decoder.cache_bytes = cache
        assert sk.decoder.joint_plan(fan_in=3) == plan
        with pytest.raises(ValueError, match=rf"cache_bytes is {cache}: raise cache_bytes to "
                                             rf"at least {plan['cache_bytes_needed']}"):
            sk.mass(s, "cat", method="joint", fan_in=3)
    # a Repository (its own Sketcher, default cache) answers what the Sketcher answers
    sk = rs.Sketcher(512, family="orthogonal", seed=0,
                     query_cache_bytes=plan["cache_bytes_needed"])
    sketches = sk.sketch_many([small_room(np.random.default_rng(i))[0] for i in range(3)])
    repo = rs.Repository.create(tmp_path / "r", sk)
    repo.add(sketches)
    _, masses = repo.mass("cat", method="joint", fan_in=3)
    np.testing.assert_allclose(masses, [sk.mass(x, "cat", method="joint", fan_in=3)
                                        for x in sketches], rtol=1e-12)   # batch vs single
    # the explicit budget decides the plan, and is part of the cache key
    sk.decoder.joint_max_unknowns = 40
    small = sk.decoder.joint_plan(fan_in=3)
    assert small["budget"] == 40 and small["path_depths"] == [2]
    assert sk.mass(s, "cat", method="joint", fan_in=3) != want
    sk.decoder.joint_max_unknowns = 4096
    assert sk.mass(s, "cat", method="joint", fan_in=3) == want
    with pytest.raises(ValueError, match="joint_max_unknowns"):
        sk.decoder.joint_max_unknowns = 0


def test_joint_design_is_built_once_at_the_cache_limit(monkeypatch):
    # The cache must hold the factor and one module's probe (both channels). With room for
    # every planned module's probe, one build of the design answers every path=None query;
    # with room for the design too, every query. Below, the design is rebuilt (the same
    # bits) for what needs it. The room at fan_in 8 needed 370 MiB at d = 16k when the design
    # had to stay: refused with the default 256 MiB cache.
    builds, factors = _count_design_builds(monkeypatch)
    g, _ = small_room(np.random.default_rng(0))
    ref = rs.Sketcher(512, family="orthogonal", seed=0, query_cache_bytes=1 << 30)
    s = ref.sketch(g)
    n = ref.decoder.joint_plan(fan_in=3)["unknowns"]
    need = 8 * n * n + 8 * 5 * 512    # dims 3, 4, 2: the cat's probe is the largest
    probes = 8 * n * n + 8 * 12 * 512  # every module's probe
    fast = probes + 8 * n * 512        # and the design
    assert ref.decoder.joint_plan(fan_in=3)["cache_bytes_needed"] == need
    assert ref.decoder.joint_plan(fan_in=3)["cache_bytes_fast"] == fast

    def answers(sk):
        out = []
        for _ in range(3):
            for module in ("wall", "cat", "edge"):
                out.append(sk.mass(s, module, method="joint", fan_in=3))
                out.extend(sk.attributes(s, module, method="joint", fan_in=3))
                out.append(sk.summed_attributes(s, module, 1.0, method="joint", fan_in=3))
        return out

    want = answers(ref)
    want_path = ref.attributes(s, "edge", path=[3, 2], method="joint", fan_in=3)
    assert len(builds) == 1 and len(factors) == 1
    builds.clear()
    factors.clear()
    # cache, design builds for the path=None queries (3 rounds of 3 modules: at the bare
    # minimum each module's probe evicts the last one; one byte short of every probe, the
    # wall's build also makes the cat's probe, not the edge's, whose probe then evicts the
    # wall's: two builds a round), then with the two path queries
    for cache, first, then in ((need - 1, 0, 0), (need, 9, 10), (probes - 1, 6, 7),
                               (probes, 1, 2), (fast - 1, 1, 2), (fast, 1, 1)):
        sk = rs.Sketcher(512, family="orthogonal", seed=0, query_cache_bytes=cache)
        sk.sketch(g)
        if first == 0:   # too small for the factor and one probe: refused, nothing built
            with pytest.raises(ValueError, match=f"raise cache_bytes to at least {need}"):
                sk.mass(s, "wall", method="joint", fan_in=3)
            assert builds == []
            continue
        got = answers(sk)
        assert (len(builds), len(factors)) == (first, 1), cache
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        for _ in range(2):   # a path query needs the design again: rebuilt unless kept
            path = sk.attributes(s, "edge", path=[3, 2], method="joint", fan_in=3)
            np.testing.assert_array_equal(path.attributes, want_path.attributes)
            assert path.weight == want_path.weight
        assert (len(builds), len(factors)) == (then, 1), cache
        builds.clear()
        factors.clear()


def test_joint_plans_each_query_once(monkeypatch):
    # The plan was made per channel and again inside the design build (reading the cache's
    # limit each time): the two channels of one query could plan differently.
    import recsketch.joint_readout as jr
    calls = []
    real = jr.JointReadout.plan
    monkeypatch.setattr(jr.JointReadout, "plan",
                        lambda self, *a: calls.append(a[2]) or real(self, *a))
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    s = sk.sketch(g)
    sk.attributes(s, "wall", path=[1], method="joint", fan_in=3)
    assert calls == [3]
    sk.mean_attributes(s, "wall", method="joint", fan_in=3)
    sk.mass(s, "cat", method="joint", fan_in=3)
    assert calls == [3, 3, 3]


def _two_levels(d):
    """4 modules of dim 3 at depth 2 and one of dim 9 at depth 3: at d = 128 and fan_in 3
    depth 2 is enumerated (48 unknowns) and depth 3 fitted path-free (10)."""
    sk = rs.Sketcher(d, family="orthogonal", seed=0)
    for k in range(4):
        sk.register_module(f"w{k}", 2, 3)
    sk.register_module("e", 3, 9)
    return sk


def test_joint_errors_name_the_real_cause():
    sk = _two_levels(128)
    plan = sk.decoder.joint_plan(fan_in=3)
    assert plan["unknowns"] == 58 and plan["path_depths"] == [2]
    s = np.random.default_rng(0).standard_normal(128)
    # the path's 4 extension blocks (40 unknowns) push it over: not the registry's fault
    with pytest.raises(ValueError, match=r"98 unknowns with the blocks the path \[1, 1\] of "
                                         r"'e' \(4 blocks, 40 unknowns\)") as err:
        sk.attributes(s, "e", path=[1, 1], weight=1.0, method="joint", fan_in=3)
    assert "register fewer modules" not in str(err.value)
    assert "half of the 128 sketch coordinates" in str(err.value)
    # a cache too small is not helped by a larger d_sketch (the design grows with d)
    sk.decoder.cache_bytes = 1000
    with pytest.raises(ValueError, match="cache_bytes") as err:
        sk.mass(s, "w0", method="joint", fan_in=3)
    assert "d_sketch" not in str(err.value)
    # the budget set explicitly binds: named
    sk = _two_levels(128)
    sk.decoder.joint_max_unknowns = 20   # below the 26 path-free unknowns
    with pytest.raises(ValueError, match=r"joint_max_unknowns \(20;.*register fewer") as err:
        sk.mass(s, "w0", method="joint", fan_in=3)
    assert "d_sketch" not in str(err.value)


def test_joint_skips_unreachable_modules_in_a_path_free_plan():
    # six modules at depth 2 and deep4 at depth 4 with nothing at depth 3: path-free, deep4
    # still had a block and mass(s, "deep4") returned 1577.07 without a word.
    sk = rs.Sketcher(256, family="orthogonal", seed=0)
    for k in range(6):
        sk.register_module(f"m{k}", 2, 16)
    sk.register_module("deep4", 4, 3)
    plan = sk.decoder.joint_plan(fan_in=8)
    assert plan["unknowns"] == 6 * 17 and plan["path_free_depths"] == [2]
    s = np.random.default_rng(0).standard_normal(256)
    with pytest.raises(ValueError, match="no module is registered at depth 3"):
        sk.mass(s, "deep4", method="joint")
    with pytest.raises(ValueError, match="no module is registered at depth 3"):
        sk.attributes(s, "deep4", path=[1, 1, 1], method="joint")
    assert sk.decoder.cache_info()["entries"] == 0


def test_joint_warns_on_every_query_of_a_path_free_module():
    import warnings
    sk = _two_levels(256)
    s = np.random.default_rng(0).standard_normal(256)
    assert sk.decoder.joint_plan(fan_in=3)["path_free_depths"] == [3]
    for _ in range(2):   # the second query reads the cached design: warned all the same
        with pytest.warns(RuntimeWarning, match=r"fits module 'e' \(depth 3\) path-free"):
            sk.mass(s, "e", method="joint", fan_in=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk.mass(s, "w0", method="joint", fan_in=3)   # enumerated: no warning
        sk.attributes(s, "e", path=[1, 1], weight=1.0, method="joint", fan_in=3)   # its path


def test_joint_on_repository_queries(tmp_path):
    sk = rs.Sketcher(1024, family="orthogonal", seed=0)
    graphs = [small_room(np.random.default_rng(i))[0] for i in range(4)]
    sketches = sk.sketch_many(graphs)   # registers the modules before the repository copies sk
    repo = rs.Repository.create(tmp_path / "r", sk)
    repo.add(sketches)
    ids, counts = repo.count("wall", 0.25, method="joint")
    np.testing.assert_allclose(counts, 2.0, atol=1e-5)
    # fan_in reaches the Sketcher: with 2 the cat (at position 3) leaves the design, which
    # biases the walls' count exactly as on the Sketcher itself
    ids, short = repo.count("wall", 0.25, method="joint", fan_in=2)
    want = [sk.count(x, "wall", 0.25, method="joint", fan_in=2) for x in sketches]
    np.testing.assert_allclose(short, want, rtol=1e-9)
    assert np.max(np.abs(short - 2.0)) > 1e-3
    ids, masses = repo.mass("cat", method="joint", fan_in=3)
    np.testing.assert_allclose(masses, 0.5, atol=1e-5)
    mean = repo.mean_attributes("wall", method="joint", fan_in=3)
    assert mean.shape == (3,) and np.all(np.isfinite(mean))
    with pytest.raises(ValueError, match="fan_in applies to method='joint' only"):
        repo.mass("cat", method="matched", fan_in=3)
    with pytest.raises(ValueError, match="fan_in"):
        repo.count("wall", 0.25, method="joint", fan_in=0)
    with pytest.raises(TypeError, match="fan_in"):
        repo.mean_attributes("wall", method="joint", fan_in=2.5)


def test_joint_on_dask_queries():
    da = pytest.importorskip("dask.array")
    import recsketch.dask as rsd
    sk = rs.Sketcher(1024, family="orthogonal", seed=0)
    sketches = np.stack(sk.sketch_many([small_room(np.random.default_rng(i))[0]
                                        for i in range(4)]))
    arr = da.from_array(sketches, chunks=(2, 1024))
    got = rsd.count(sk, arr, "wall", 0.25, method="joint", fan_in=2).compute(scheduler="sync")
    want = sk.count(sketches, "wall", 0.25, method="joint", fan_in=2)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.max(np.abs(got - 2.0)) > 1e-3   # fan_in=2 really reached the tasks
    mean = rsd.mean_attributes(sk, arr, "wall", method="joint", fan_in=3).compute(
        scheduler="sync")
    x = sk.summed_attributes(sketches, "wall", 1.0, method="joint", fan_in=3).sum(axis=0)
    m = sk.mass(sketches, "wall", method="joint", fan_in=3).sum()
    np.testing.assert_allclose(mean, x / m, rtol=1e-9)
    with pytest.raises(ValueError, match="fan_in applies to method='joint' only"):
        rsd.count(sk, arr, "wall", 0.25, fan_in=3)
    with pytest.raises(ValueError, match="fan_in"):
        rsd.mean_attributes(sk, arr, "wall", method="joint", fan_in=65)


def test_joint_residual_flags_what_the_design_leaves_out():
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(1024, family="orthogonal", seed=0)
    s = sk.sketch(g)
    exact = sk.decoder.joint_residual(s, fan_in=3)
    short = sk.decoder.joint_residual(s, fan_in=2)   # the cat at position 3 is left out
    assert exact < 1e-5
    assert short > 0.1
    # against a dense fit: ||s - A theta|| / ||s||
    sk64 = rs.Sketcher(512, family="orthogonal", seed=3, dtype="float64")
    s64 = sk64.sketch(small_room(np.random.default_rng(5))[0])
    ref = DenseModel(sk64, 2)
    a = np.stack(ref.cols, axis=1)
    want = np.linalg.norm(s64 - a @ ref.fit(s64)) / np.linalg.norm(s64)
    assert sk64.decoder.joint_residual(s64, fan_in=2) == pytest.approx(want, rel=1e-6)
    batch = np.stack([s, 2 * s, np.zeros_like(s)])
    np.testing.assert_allclose(sk.decoder.joint_residual(batch, fan_in=2),
                               [short, short, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        sk.decoder.joint_residual(np.full_like(s, np.nan), fan_in=3)


def test_joint_warns_when_no_level_is_enumerated():
    # 10 modules of dim 16, fan_in 8, d = 1024: 1360 unknowns to enumerate depth 2, over the
    # budget of 512, so every module is fitted path-free (measured: median mass error 0.024
    # against matched 0.018 over 8 seeds, docs/joint.md). The warning points at this call.
    rng = np.random.default_rng(0)
    sk = rs.Sketcher(1024, family="orthogonal", seed=0)
    for k in range(10):
        sk.register_module(f"m{k:03d}", 2, 16)
    g = rs.Graph()
    g.set_output([(g.add(f"m{k:03d}", unit(rng, 16)), 1 / 3) for k in range(3)])
    s = sk.sketch(g)
    assert sk.decoder.joint_plan()["path_depths"] == []
    with pytest.warns(RuntimeWarning, match="path-free") as record:
        sk.mass(s, "m000", method="joint")
    # the design's (once) and the query's (every time), both pointing at this call
    assert [w.filename for w in record] == [__file__, __file__]
    assert "enumerates no level's paths" in str(record[1].message)
    assert "fits module 'm000' (depth 2) path-free" in str(record[0].message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = sk.mass(s, "m000", method="joint", fan_in=3)   # depth 2 enumerated: exact
    assert m == pytest.approx(1 / 3, abs=1e-5)


def test_joint_max_unknowns_is_stored_with_the_sketcher(tmp_path):
    # A Repository (and a pickled Sketcher: Dask workers) answered with the default budget
    # whatever the Sketcher's joint_max_unknowns was: another plan, another answer.
    import pickle
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    # always written: a later change of the default must not change a stored plan
    assert sk.to_dict()["joint_max_unknowns"] == 4096
    sk.decoder.joint_max_unknowns = 40
    s = sk.sketch(g)
    want = sk.mass(s, "cat", method="joint", fan_in=3)
    default = rs.Sketcher(512, family="orthogonal", seed=0)
    default.sketch(g)
    assert default.mass(s, "cat", method="joint", fan_in=3) != want   # the budget matters
    assert pickle.loads(pickle.dumps(sk)).decoder.joint_max_unknowns == 40
    assert rs.Sketcher.from_json(sk.to_json()).decoder.joint_max_unknowns == 40
    assert sk.same_matrices(default) and sk != default
    repo = rs.Repository.create(tmp_path / "r", sk)
    repo.add(s)
    assert repo.sketcher.decoder.joint_max_unknowns == 40
    assert repo.mass("cat", method="joint", fan_in=3)[1][0] == want
    repo.sketcher.decoder.joint_max_unknowns = 50   # this session only: not saved
    repo.close()
    again = rs.Repository.open(tmp_path / "r")
    assert again.sketcher.decoder.joint_max_unknowns == 40
    assert again.mass("cat", method="joint", fan_in=3)[1][0] == want
    again.close()
    bad = sk.to_dict()
    bad["joint_max_unknowns"] = 0
    with pytest.raises(ValueError, match="joint_max_unknowns"):
        rs.Sketcher.from_dict(bad)
    # a configuration written before the key was stored loads with the default
    old = sk.to_dict()
    del old["joint_max_unknowns"]
    assert rs.Sketcher.from_dict(old).decoder.joint_max_unknowns == 4096
    # a key this version does not know is refused, named (it might change the answers)
    with pytest.raises(ValueError, match=r"unknown keys \['joint_fan_in', 'zz'\]"):
        rs.Sketcher.from_dict({**sk.to_dict(), "zz": 1, "joint_fan_in": 3})


@pytest.mark.parametrize("family,d", [("orthogonal", 1024), ("block_sparse", 4095),
                                      ("orthogonal", 16384), ("block_sparse", 65520)])
def test_joint_default_call_fits_the_default_cache_on_the_readme_room(family, d):
    # With the default fan_in (8) and query cache (256 MiB) the README's room was refused at
    # d = 16k and 64k: the cache had to hold the design too (370 MiB / 1.3 GiB). Plans only.
    sk = rs.Sketcher(d, family=family, seed=0)
    for name, depth, dim in (("wall", 2, 8), ("cat", 2, 32), ("edge", 3, 16)):
        sk.register_module(name, depth, dim)
    plan = sk.decoder.joint_plan()
    assert plan["unknowns"] <= plan["budget"]
    assert plan["cache_bytes_needed"] == 8 * plan["unknowns"] ** 2 + 8 * d * 33   # the cat
    assert plan["cache_bytes_needed"] <= sk.decoder.cache_bytes == 256 << 20
    # from 16k every path of the room is enumerated at the default fan_in (exact read-out)
    assert plan["path_depths"] == ([2, 3] if d >= 16000 else [2])
    assert plan["design_bytes"] <= sk.decoder.joint_max_build_bytes == 4 << 30
    if d > 4096:
        return
    # a real default call at the bare minimum cache answers what a large cache answers
    g, _ = ordered_room(np.random.default_rng(1), dims=(16, 32, 8))
    s = sk.sketch(g)
    big = rs.Sketcher(d, family=family, seed=0, query_cache_bytes=1 << 30)
    big.sketch(g)
    sk.decoder.cache_bytes = plan["cache_bytes_needed"]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the edges are path-free below 16k
        for module in ("wall", "cat", "edge"):
            path = [1, 2] if module == "edge" else None
            a = sk.attributes(s, module, path=path, method="joint")
            b = big.attributes(s, module, path=path, method="joint")
            np.testing.assert_array_equal(a.attributes, b.attributes)
            assert a.weight == b.weight
            assert sk.mass(s, module, method="joint") == big.mass(s, module, method="joint")


def _deep_registry(d, n_modules=8, dim=32, family="orthogonal"):
    sk = rs.Sketcher(d, family=family, seed=0)
    for k in range(n_modules):
        sk.register_module(f"a{k}", 2, dim)
        sk.register_module(f"b{k}", 3, dim)
    return sk


def test_joint_refuses_a_build_over_joint_max_build_bytes():
    # The factor and one probe fit the default cache (175 MiB), but the build of the design
    # (10 GB, 20 GB with its partial products) was accepted and would exhaust the machine.
    import tracemalloc
    d = 524262
    sk = _deep_registry(d, family="block_sparse")
    plan = sk.decoder.joint_plan()
    n = plan["unknowns"]
    assert n == 8 * 33 * 8 + 8 * 33 and plan["path_depths"] == [2]
    assert plan["cache_bytes_needed"] <= sk.decoder.cache_bytes
    # the design and, while it is built, the partial products shared by the blocks (each
    # dropped once nothing reads it: the whole memo of them made it 2-3x the design)
    assert 1.25 * 8 * n * d <= plan["design_bytes"] <= 2 * 8 * n * d
    s = np.zeros(d)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"needs {plan['design_bytes']} bytes .* "
                                             r"more than sk.decoder.joint_max_build_bytes "
                                             rf"\({4 << 30} bytes"):
            sk.mass(s, "b0", method="joint")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20                              # refused before anything was built
    assert sk.decoder.cache_info()["entries"] == 0
    assert sk.decoder.joint_plan() == plan              # the cap never changes the plan


def test_joint_max_build_bytes_is_honoured_and_never_changes_answers():
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    s = sk.sketch(g)
    plan = sk.decoder.joint_plan(fan_in=3)
    want = sk.attributes(s, "edge", path=[3, 2], method="joint", fan_in=3)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises((TypeError, ValueError), match="joint_max_build_bytes"):
            sk.decoder.joint_max_build_bytes = bad
    assert sk.decoder.joint_max_build_bytes == 4 << 30
    fresh = rs.Sketcher(512, family="orthogonal", seed=0)
    fresh.sketch(g)
    fresh.decoder.joint_max_build_bytes = plan["design_bytes"] - 1
    with pytest.raises(ValueError, match=rf"needs {plan['design_bytes']} bytes"):
        fresh.mass(s, "cat", method="joint", fan_in=3)
    assert fresh.decoder.cache_info()["entries"] == 0
    assert fresh.decoder.joint_plan(fan_in=3) == plan
    # the erased sketch's build holds the design beside its restriction: its own figure
    e = rs.erase(s, 400, mode="random", seed=2)
    kept = fresh.decoder.joint_plan(fan_in=3, d_kept=400)["design_bytes"]
    fresh.decoder.joint_max_build_bytes = plan["design_bytes"]
    got = fresh.attributes(s, "edge", path=[3, 2], method="joint", fan_in=3)
    np.testing.assert_array_equal(got.attributes, want.attributes)
    assert got.weight == want.weight
    fresh.decoder.joint_max_build_bytes = kept
    assert fresh.mass(e, "cat", method="joint", fan_in=3) == sk.mass(e, "cat", method="joint",
                                                                      fan_in=3)


def test_joint_design_bytes_bounds_the_measured_peak_of_a_build():
    # design_bytes was 8 n (d + n): the build's partial products (about the design again,
    # measured +720 MiB against 362 MiB at d = 16k) were not counted.
    import tracemalloc
    from recsketch.joint import design_rows, gram_factor, plan_blocks
    sk = _deep_registry(8192, n_modules=2, dim=8)
    plan = sk.decoder.joint_plan(fan_in=4)
    blocks = plan_blocks(sk.modules, 4, plan["budget"])
    assert sum(b.size for b in blocks) == plan["unknowns"] and plan["path_depths"] == [2, 3]
    design_rows(sk, blocks, 1)   # the matrices' own caches, before measuring
    tracemalloc.start()
    try:
        gram_factor(design_rows(sk, blocks, 1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n, d = plan["unknowns"], 8192
    assert peak > 1.5 * 8 * n * d                        # the partial products are real
    assert 0.8 * plan["design_bytes"] <= peak <= plan["design_bytes"]


def _chain_by_chain(sk, block):
    """A path block's rows made alone, letter by letter (no sharing, no batching): the
    module's base columns, then P(R) of each letter from the innermost out, times 2^-depth."""
    from recsketch.joint import _chain
    x = np.concatenate([sk.module_matrix(block.module, 1).apply_short(np.eye(block.dim)),
                        sk.module_matrix(block.module, 2).apply_short(np.eye(1))])
    for letter in reversed(_chain(block)):
        mat = (sk.position_matrix(letter.key) if letter.kind == "position"
               else sk.module_matrix(letter.key, 0))
        for j in range(x.shape[0]):        # one vector per call
            x[j] = mat.half(x[j])
    return x * 0.5 ** block.depth


def test_joint_design_rows_are_the_block_chains_bit_for_bit_in_few_batched_products(
        monkeypatch):
    # The design was built one product per (block path, letter), of dim + 1 = 5 rows each
    # (a 4-vector panel and a slow 1-vector one in the kernel): 632 calls for the README
    # demo's question 4. Partial products that one matrix multiplies next are now stacked and
    # multiplied 4 rows a call, with at most one shorter call per stack; the bits are those
    # of each block's own chain of products.
    from recsketch import matrices
    from recsketch.joint import _SLICE_ROWS, design_rows, plan_blocks
    sk = _deep_registry(1008, n_modules=2, dim=4, family="block_sparse")
    blocks = plan_blocks(sk.modules, 3, 10**6)
    assert {b.depth for b in blocks if b.path is not None} == {2, 3}
    calls = []
    real = matrices.RandomMatrix._apply

    def record(self, x, *, transpose, half, short, num_threads):
        if not short:
            calls.append((self.role, half, np.shape(x)[0]))
        return real(self, x, transpose=transpose, half=half, short=short,
                    num_threads=num_threads)

    monkeypatch.setattr(matrices.RandomMatrix, "_apply", record)
    rows = design_rows(sk, blocks, None)
    monkeypatch.undo()
    # at d = 1008 every stack fits one panel (_PANEL_BYTES): at most one shorter call per
    # (matrix, map) (74 calls of 5 rows before, 97 of which 7 short after)
    stacks = {(role, half) for role, half, _ in calls}
    assert len([c for c in calls if c[2] != _SLICE_ROWS]) <= len(stacks)
    first = blocks[0].start
    for b in blocks:
        got = rows[b.start - first:b.start - first + b.size]
        np.testing.assert_array_equal(got, _chain_by_chain(sk, b))
