"""Footnote 2's sampled tuples (``Sketcher.sketch(..., tuple_sampling=k)``).

The reference below re-derives a sampled sketch from the documented scheme alone (its own
splitmix64 stream, pick rule and draw order) with dense NumPy matrices ``(I + R) / 2`` from
``to_dense()``, and the plain sketch is the native kernel's."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

import recsketch as rs
from recsketch.tuple_sampling import graph_digest

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


class _Reference:
    """The module docstring of recsketch.tuple_sampling, implemented independently."""

    def __init__(self, sk: rs.Sketcher, graph: rs.Graph, k: int, sample_seed: int):
        key = hashlib.sha256(b"recsketch.tuple_sampling" + struct.pack("<Q", sk.seed)
                             + struct.pack("<Q", sample_seed) + graph_digest(graph)).digest()
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

    def P(self, R) -> np.ndarray:
        if R.role not in self.dense:
            self.dense[R.role] = (np.eye(D) + R.to_dense()) / 2
        return self.dense[R.role]

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
        objs = {h.index: h for h in g}

        def obj(i: int) -> np.ndarray:
            h = objs[i]
            a, child = draws[i]
            x = g.attributes(h)
            s_attr = (self.sk.module_matrix(h.module, 1).to_dense()[:, :len(x)] @ x / 2
                      + self.sk.module_matrix(h.module, 2).to_dense()[:, 0] / 2)
            t = a * self.P(sk.position_matrix(1)) @ s_attr
            s_in = sum(w * self.P(sk.position_matrix(p + 1)) @ obj(c.index)
                       for p, ((c, _), w) in enumerate(zip(g.inputs(h), child)) if w > 0)
            if not np.isscalar(s_in):
                t = t + self.P(sk.position_matrix(2)) @ s_in
            return self.P(sk.module_matrix(h.module, 0)) @ t

        return sum(w * self.P(sk.position_matrix(p + 1)) @ obj(c.index)
                   for p, ((c, _), w) in enumerate(zip(g.output, top)) if w > 0)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("sample_seed", [0, 1, 77])
def test_matches_a_dense_evaluation_of_the_documented_scheme(k, sample_seed):
    sk = _sketcher()
    g = _scene(1)
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


def test_sampled_sketches_are_unbiased():
    """The mean of n sampled sketches approaches the plain sketch within its standard error:
    E|mean - plain|^2 = sum(var) / n; allow 3x."""
    sk = _sketcher()
    g = _scene(3)
    plain = sk.sketch(g)
    n = 800
    Y = np.array([sk.sketch(g, tuple_sampling=1, sample_seed=s) for s in range(n)])
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
                                          (2**16 + 1, ValueError), (1.0, TypeError),
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
    """A chain deeper than Python's recursion limit is sketched (the plain kernel allows it)."""
    sk = rs.Sketcher(120, seed=1)
    g = rs.Graph()
    h = g.add("m2000", [1.0])
    for level in range(1999, 1, -1):
        h = g.add(f"m{level}", [1.0], [(h, 1.0)])
    g.set_output([(h, 1.0)])
    # with 64 draws an (attr, input) tuple drops its input with probability 2^-64: every
    # level is reached
    y = sk.sketch(g, tuple_sampling=64, sample_seed=3)
    assert y.shape == (120,) and np.isfinite(y).all() and np.abs(y).max() > 0
