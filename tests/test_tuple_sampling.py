"""Footnote 2's sampled tuples (``Sketcher.sketch(..., tuple_sampling=k)``).

The reference below re-derives a sampled sketch from the documented scheme alone (its own
graph digest, splitmix64 stream, pick rule and draw order) with dense NumPy matrices
``(I + R) / 2`` from ``to_dense()``, and the plain sketch is the native kernel's."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

import recsketch as rs
from recsketch.tuple_sampling import MAX_TUPLE_SAMPLING, graph_digest, sampled_sketch

D = 1008


def _sketcher(seed: int = 3, dtype: str = "float64") -> rs.Sketcher:
    return rs.Sketcher(D, seed=seed, dtype=dtype)


def _unit(rng: np.random.Generator, m: int) -> np.ndarray:
    x = rng.random(m) + 0.05
    return x / np.linalg.norm(x)


def _scene(seed: int = 0) -> rs.Graph:
    """Two top objects; a child shared by two parents; a child at two positions of one parent;
    an input of weight 0; an object whose only input has weight 0."""
    rng = np.random.default_rng(seed)
    g = rs.Graph()
    leaf1 = g.add("leaf", _unit(rng, 3))
    leaf2 = g.add("leaf", _unit(rng, 3))
    leaf3 = g.add("leaf", _unit(rng, 3))
    midA = g.add("mid", _unit(rng, 4), [(leaf1, 0.3), (leaf2, 0.5), (leaf1, 0.2)])
    midB = g.add("mid", _unit(rng, 4), [(leaf2, 0.6), (leaf3, 0.0)])
    lone = g.add("mid", _unit(rng, 4), [(leaf3, 0.0)])
    root = g.add("root", _unit(rng, 5), [(midA, 0.45), (midB, 0.35), (lone, 0.2)])
    g.set_output([(root, 0.7), (g.add("root", _unit(rng, 5), [(midB, 1.0)]), 0.3)])
    return g


def _shared_scene(seed: int = 0) -> rs.Graph:
    """A lattice: every mid reads both leaves, each of three tops reads every mid."""
    rng = np.random.default_rng(seed)
    g = rs.Graph()
    leaves = [g.add("leaf", _unit(rng, 3)) for _ in range(2)]
    mids = [g.add("mid", _unit(rng, 4), [(leaves[0], 0.2 + 0.2 * i), (leaves[1], 0.5 - 0.1 * i)])
            for i in range(3)]
    tops = [g.add("top", _unit(rng, 6), [(m, w) for m, w in zip(mids, ws)])
            for ws in ((0.5, 0.3, 0.2), (0.1, 0.1, 0.7), (0.0, 0.6, 0.4))]
    g.set_output([(tops[0], 0.5), (tops[1], 0.2), (tops[2], 0.3)])
    return g


def _digest(graph: rs.Graph) -> bytes:
    """graph_digest's documented byte layout, written out here."""
    q = lambda n: n.to_bytes(8, "little", signed=True)  # noqa: E731
    f = lambda x: struct.pack("<d", x)  # noqa: E731
    parts = [q(len(graph))]
    for h in graph:
        name = h.module.encode("utf-8")
        x = [float(v) for v in graph.attributes(h)]
        parts += [q(len(name)), name, q(len(x))] + [f(v) for v in x]
        ins = graph.inputs(h)
        parts += [q(len(ins))] + [q(c.index) + f(w) for c, w in ins]
    parts += [q(len(graph.output))] + [q(c.index) + f(w) for c, w in graph.output]
    return hashlib.sha256(b"".join(parts)).digest()


class _Reference:
    """The module docstring of recsketch.tuple_sampling, implemented independently: draws one
    scalar uniform at a time, evaluates every object (reached or not) in index order."""

    def __init__(self, sk: rs.Sketcher, graph: rs.Graph, k: int, sample_seed: int):
        key = hashlib.sha256(b"recsketch.tuple_sampling" + struct.pack("<Q", sk.seed)
                             + struct.pack("<Q", sample_seed) + _digest(graph)).digest()
        self.state = int.from_bytes(key[:8], "little")
        self.n = 0
        self.k = k
        self.sk = sk
        self.graph = graph
        self.dense = {}

    def uniform(self) -> float:
        m = 2**64
        z = (self.state + self.n + 0x9E3779B97F4A7C15) % m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % m
        z ^= z >> 31
        self.n += 1
        return (z >> 11) / 2.0**53

    def keep(self, weights):
        w = np.array(weights, dtype=float)
        live = np.flatnonzero(w > 0)
        out = np.zeros(len(w))
        if len(live) <= 1:
            out[live] = w[live]
            return out
        total = w[live].sum()
        edges = np.cumsum(w[live])
        for _ in range(self.k):
            i = int(np.searchsorted(edges, self.uniform() * total, side="right"))
            out[live[min(i, len(live) - 1)]] += total / self.k
        return out

    def dense_of(self, R) -> np.ndarray:
        if len(self.dense) > 64:  # long chains: many modules, keep the cache small
            self.dense.clear()
        if R.role not in self.dense:
            self.dense[R.role] = R.to_dense()
        return self.dense[R.role]

    def P(self, R, x: np.ndarray) -> np.ndarray:
        return (x + self.dense_of(R) @ x) / 2

    def sketch(self) -> np.ndarray:
        sk, g = self.sk, self.graph
        draws = {}
        for h in g:
            ins = g.inputs(h)
            if any(w > 0 for _, w in ins):
                a, b = self.keep([0.5, 0.5])
                draws[h.index] = (a, b * self.keep([w for _, w in ins]))
            else:
                draws[h.index] = (0.5, np.zeros(len(ins)))
        top = self.keep([w for _, w in g.output])
        s = {}
        for h in g:  # inputs come before the objects that read them
            a, child = draws[h.index]
            x = g.attributes(h)
            s_attr = (self.dense_of(sk.module_matrix(h.module, 1))[:, :len(x)] @ x / 2
                      + self.dense_of(sk.module_matrix(h.module, 2))[:, 0] / 2)
            t = a * self.P(sk.position_matrix(1), s_attr)
            if np.any(child > 0):
                s_in = sum(w * self.P(sk.position_matrix(p + 1), s[c.index])
                           for p, ((c, _), w) in enumerate(zip(g.inputs(h), child)) if w > 0)
                t = t + self.P(sk.position_matrix(2), s_in)
            s[h.index] = self.P(sk.module_matrix(h.module, 0), t)
        return sum(w * self.P(sk.position_matrix(p + 1), s[c.index])
                   for p, ((c, _), w) in enumerate(zip(g.output, top)) if w > 0)


def test_graph_digest_follows_the_documented_layout():
    g = rs.Graph()
    g.set_output([(g.add("naïve-module", [0.6, 0.8]), 1.0)])
    for graph in (_scene(0), _shared_scene(1), g):
        assert graph_digest(graph) == _digest(graph)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("sample_seed", [0, 1, 77])
def test_matches_a_dense_evaluation_of_the_documented_scheme(k, sample_seed):
    sk = _sketcher()
    for g in (_scene(1), _shared_scene(2)):
        want = _Reference(sk, g, k, sample_seed).sketch()
        got = sk.sketch(g, tuple_sampling=k, sample_seed=sample_seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_draws_differ_between_samples_and_leave_terms_out():
    sk = _sketcher()
    g = _scene(2)
    plain = sk.sketch(g)
    ys = [sk.sketch(g, tuple_sampling=1, sample_seed=s) for s in range(12)]
    assert len({y.tobytes() for y in ys}) >= 3  # k = 1: each sample is one of ~10 chains
    assert all(not np.allclose(y, plain) for y in ys)


def test_one_term_tuples_are_kept_exactly():
    """A single leaf under the output: every tuple has one term, so the sampled sketch is the
    plain one (up to the order of float64 sums)."""
    sk = _sketcher()
    g = rs.Graph()
    g.set_output([(g.add("leaf", _unit(np.random.default_rng(0), 3)), 0.8)])
    want = sk.sketch(g)
    for k in (1, 5):
        np.testing.assert_allclose(sk.sketch(g, tuple_sampling=k), want, rtol=0,
                                   atol=1e-13 * np.abs(want).max())


@pytest.mark.parametrize("scene, k", [(_scene, 1), (_scene, 2), (_shared_scene, 1),
                                      (_shared_scene, 3)])
def test_sampled_sketches_are_unbiased(scene, k):
    """The mean of n sampled sketches approaches the plain sketch within its standard error:
    E|mean - plain|^2 = sum(var) / n; allow 3x."""
    sk = _sketcher()
    g = scene(3)
    plain = sk.sketch(g)
    n = 800
    Y = sk.sketch_many([g] * n, tuple_sampling=k, sample_seed=range(n))
    err2 = float(np.sum((Y.mean(axis=0) - plain) ** 2))
    expected = float(np.sum(Y.var(axis=0))) / n
    assert err2 < 3 * expected
    # and not trivially: one sample is far from the plain sketch
    assert float(np.sum((Y[0] - plain) ** 2)) > 10 * expected


def test_bit_reproducible_alone_in_batches_and_threads():
    sk = _sketcher(seed=11)
    graphs = [_scene(s) for s in range(4)]
    alone = [sk.sketch(g, tuple_sampling=2, sample_seed=5, num_threads=1) for g in graphs]
    batch = sk.sketch_many(graphs[::-1], tuple_sampling=2, sample_seed=5, num_threads=2)
    for y, z in zip(alone, batch[::-1]):
        assert y.tobytes() == z.tobytes()
    again = _sketcher(seed=11).sketch(_scene(0), tuple_sampling=2, sample_seed=5)
    assert again.tobytes() == alone[0].tobytes()
    # float32 Sketchers return the float64 result rounded
    y32 = _sketcher(seed=11, dtype="float32").sketch(graphs[1], tuple_sampling=2, sample_seed=5)
    assert y32.dtype == np.float32 and y32.tobytes() == alone[1].astype(np.float32).tobytes()
    # another Sketcher seed or sample_seed draws (and multiplies) differently
    assert _sketcher(seed=12).sketch(graphs[0], tuple_sampling=2, sample_seed=5).tobytes() \
        != alone[0].tobytes()
    assert sk.sketch(graphs[0], tuple_sampling=2, sample_seed=6).tobytes() != alone[0].tobytes()


def test_the_draws_follow_the_graph_content_not_its_identity():
    sk = _sketcher()
    a, b = _scene(4), _scene(4)
    assert sk.sketch(a, tuple_sampling=1).tobytes() == sk.sketch(b, tuple_sampling=1).tobytes()
    assert graph_digest(a) == graph_digest(b) != graph_digest(_scene(5))


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError),
                                          (MAX_TUPLE_SAMPLING + 1, ValueError), (1.0, TypeError),
                                          (True, TypeError), ("1", TypeError)])
def test_bad_tuple_sampling(value, error):
    sk = _sketcher()
    with pytest.raises(error, match="tuple_sampling"):
        sk.sketch(_scene(), tuple_sampling=value)
    with pytest.raises(error, match="tuple_sampling"):
        sk.sketch_many([_scene()], tuple_sampling=value)
    assert sk.modules == {}


@pytest.mark.parametrize("value, error", [(-1, ValueError), (2**64, ValueError),
                                          (0.5, TypeError), (None, TypeError)])
def test_bad_sample_seed(value, error):
    sk = _sketcher()
    with pytest.raises(error, match="sample_seed"):
        sk.sketch(_scene(), tuple_sampling=1, sample_seed=value)
    with pytest.raises(error, match="sample_seed"):
        sk.sketch_many([_scene()], sample_seed=value)
    assert sk.modules == {}


def test_refusals_leave_the_registry_alone():
    sk = _sketcher()
    with pytest.raises(ValueError, match="return_objects"):
        sk.sketch(_scene(), tuple_sampling=1, return_objects=True)
    bad = rs.Graph()
    bad.add("leaf", [1.0, 0.0, 0.0])  # no output set
    with pytest.raises(ValueError):
        sk.sketch_many([_scene(), bad], tuple_sampling=1)
    assert sk.modules == {}
    sk.sketch(_scene(), tuple_sampling=1)
    assert set(sk.modules) == {"leaf", "mid", "root"}


def test_deep_chains_need_no_recursion():
    """A chain deeper than Python's recursion limit is sketched (the plain kernel allows it),
    and matches the reference evaluation."""
    sk = rs.Sketcher(120, seed=1, dtype="float64")
    g = rs.Graph()
    h = g.add("m2000", [1.0])
    for level in range(1999, 1, -1):
        h = g.add(f"m{level}", [1.0], [(h, 1.0)])
    g.set_output([(h, 1.0)])
    # with 64 draws an (attr, input) tuple drops its input with probability 2^-64: every
    # level is reached, with kept weights c / 64 that differ from level to level
    y = sk.sketch(g, tuple_sampling=64, sample_seed=3)
    want = _Reference(sk, g, 64, 3).sketch()
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-12 * np.abs(want).max())
    assert np.abs(y - sk.sketch(g)).max() > 1e-3 * np.abs(want).max()


def _frontiers(graph: rs.Graph, order):
    """After each step of ``order``: the evaluated objects that an object not yet evaluated
    (or the output, evaluated last) reads."""
    readers = {h.index: set() for h in graph}
    for h in graph:
        for c, _ in graph.inputs(h):
            readers[c.index].add(h.index)
    for c, _ in graph.output:
        readers[c.index].add("output")
    done, out = set(), []
    for i in order:
        done.add(i)
        out.append(sum(1 for j in done if readers[j] - done))
    return out


def _tree(fan: int, depth: int) -> rs.Graph:
    rng = np.random.default_rng(0)
    g = rs.Graph()

    def build(level: int):  # depth is small
        if level == depth:
            return g.add("leaf", _unit(rng, 3))
        kids = [build(level + 1) for _ in range(fan)]
        return g.add(f"m{level}", _unit(rng, 4), [(c, 1 / fan) for c in kids])

    g.set_output([(build(0), 1.0)])
    return g


def _wide_dag() -> rs.Graph:
    """120 leaves, 40 mids reading 6 leaves each (every leaf read by two mids), 8 tops reading
    5 mids each, the output reading the tops."""
    rng = np.random.default_rng(1)
    g = rs.Graph()
    leaves = [g.add("leaf", _unit(rng, 3)) for _ in range(120)]
    mids = [g.add("mid", _unit(rng, 4), [(leaves[(3 * i + j) % 120], 1 / 6) for j in range(6)])
            for i in range(40)]
    tops = [g.add("top", _unit(rng, 4), [(mids[5 * i + j], 0.2) for j in range(5)])
            for i in range(8)]
    g.set_output([(t, 1 / 8) for t in tops])
    return g


@pytest.mark.parametrize("graph, peak", [(_tree(3, 4), 9), (_wide_dag(), None)])
def test_live_object_sketches_are_the_frontier(graph, peak):
    """With k = 1024 every term is drawn (a term of share 1/6 is missed with probability
    (5/6)^1024 ~ 1e-81), so the sampled graph is the whole graph: the live sketches after each
    evaluation are exactly the frontier of the evaluation order, not every object."""
    sk = _sketcher()
    want = sk.sketch(graph, tuple_sampling=1024, sample_seed=4)
    trace = []
    got = sampled_sketch(sk, graph, 1024, 4, None, trace=trace)
    assert got.tobytes() == want.tobytes()
    order = [i for i, _ in trace]
    assert sorted(order) == [h.index for h in graph]
    pos = {i: t for t, i in enumerate(order)}
    assert all(pos[c.index] < pos[h.index] for h in graph for c, _ in graph.inputs(h))
    live = [n for _, n in trace]
    assert live == _frontiers(graph, order)
    assert max(live) < len(graph) / 5
    if peak is not None:  # a ternary tree of depth 4, depth first: 3 + 2 + 2 + 2
        assert max(live) == peak


def test_identical_graphs_draw_alike_unless_seeded_apart():
    sk = _sketcher()
    g = _scene(6)
    same = sk.sketch_many([g] * 5, tuple_sampling=1)
    assert all(row.tobytes() == same[0].tobytes() for row in same)
    apart = sk.sketch_many([g] * 5, tuple_sampling=1, sample_seed=range(10, 15))
    for s, row in zip(range(10, 15), apart):
        assert row.tobytes() == sk.sketch(g, tuple_sampling=1, sample_seed=s).tobytes()
    assert len({row.tobytes() for row in apart}) >= 2
    by_array = sk.sketch_many([g] * 5, tuple_sampling=1, sample_seed=np.arange(10, 15))
    assert by_array.tobytes() == apart.tobytes()


@pytest.mark.parametrize("seeds, error", [([1, 2], ValueError), ([1, 2, -1], ValueError),
                                          ([1, 2, 0.5], TypeError), ([1, 2, 2**64], ValueError),
                                          ("abc", TypeError)])
def test_bad_sample_seed_sequences(seeds, error):
    sk = _sketcher()
    with pytest.raises(error, match="sample_seed"):
        sk.sketch_many([_scene()] * 3, tuple_sampling=1, sample_seed=seeds)
    with pytest.raises(TypeError, match="sample_seed"):
        sk.sketch(_scene(), tuple_sampling=1, sample_seed=[1])
    assert sk.modules == {}
