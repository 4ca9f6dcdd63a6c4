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
from scenes import random_dag, unit


def small_room(rng, order=("wall", "wall", "cat")):
    """The room with short attributes (so a small d holds every path's unknowns)."""
    g = rs.Graph()
    edges = [g.add("edge", unit(rng, 2)) for _ in range(2)]
    out, h = [], {"wall": []}
    for name in order:
        if name == "cat":
            h["cat"] = g.add("cat", unit(rng, 4), [(e, 0.5) for e in edges])
            out.append((h["cat"], 0.5))
        else:
            w = g.add("wall", unit(rng, 3))
            h["wall"].append(w)
            out.append((w, 0.25))
    g.set_output(out)
    h["edges"] = edges
    return g, h


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
        assert sk.mass(s, module, **kw) == pytest.approx(ref.summed(theta, module, 2)[0],
                                                         abs=1e-9)
        np.testing.assert_allclose(sk.summed_attributes(s, module, 1.0, **kw),
                                   ref.summed(theta, module, 1), atol=1e-9)
    np.testing.assert_allclose(sk.attributes(s, "wall", path=[2], weight=1.0, **kw),
                               ref.summed(theta, "wall", 1, (2,)), atol=1e-9)
    np.testing.assert_allclose(sk.attributes(s, "edge", path=[1, 2], weight=1.0, **kw),
                               ref.summed(theta, "edge", 1, (1, 2)), atol=1e-9)


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


def test_joint_from_threads_equals_one_thread():
    rng = np.random.default_rng(3)
    g, _ = small_room(rng)
    sk = rs.Sketcher(1024, family="orthogonal", seed=5)
    s = sk.sketch(g)
    want = sk.summed_attributes(s, "wall", 0.25, method="joint", fan_in=3)
    sk.decoder.clear_cache()
    got, errors = [None] * 4, []

    def run(k):
        try:
            got[k] = sk.summed_attributes(s, "wall", 0.25, method="joint", fan_in=3)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for x in got:
        assert np.array_equal(x, want)


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


def test_joint_refuses_dependent_columns():
    # Erasing down to fewer coordinates than the path-free blocks' unknowns leaves a singular
    # Gram matrix: a clear error, not a silent garbage fit.
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(512, family="orthogonal", seed=0)
    s = sk.sketch(g)
    e = rs.erase(s, 8)
    with pytest.raises(ValueError, match="linearly dependent"):
        sk.mass(e, "wall", method="joint", fan_in=3)


def test_joint_plan_and_the_cache_warning():
    g, _ = small_room(np.random.default_rng(0))
    sk = rs.Sketcher(128, family="orthogonal", seed=0, query_cache_bytes=10_000)
    s = sk.sketch(g)
    plan = sk.decoder.joint_plan(fan_in=3)
    # depth 2: 3 positions x (cat 4 + 1, wall 3 + 1); depth 3 path-free: edge 2 + 1
    assert plan == {"unknowns": 30, "path_depths": [2], "path_free_depths": [3],
                    "design_bytes": 8 * 30 * 128}
    assert sk.decoder.joint_plan(fan_in=3, d_kept=400 // 4)["path_depths"] == [2]
    with pytest.warns(RuntimeWarning, match="exceeds the query cache"):
        sk.mass(s, "wall", method="joint", fan_in=3)
    sk.decoder.cache_bytes = 1 << 20
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk.mass(s, "wall", method="joint", fan_in=3)
    with pytest.raises(ValueError, match="fan_in"):
        sk.decoder.joint_plan(fan_in=0)


def test_joint_on_repository_queries(tmp_path):
    sk = rs.Sketcher(1024, family="orthogonal", seed=0)
    graphs = [small_room(np.random.default_rng(i))[0] for i in range(4)]
    sketches = sk.sketch_many(graphs)   # registers the modules before the repository copies sk
    repo = rs.Repository.create(tmp_path / "r", sk)
    repo.add(sketches)
    ids, counts = repo.count("wall", 0.25, method="joint")
    np.testing.assert_allclose(counts, 2.0, atol=1e-5)


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
