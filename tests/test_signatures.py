"""Object signatures (recsketch/signatures.py): content keys, signed graphs, reading the code
back from a sketch, against independent computations."""

import math

import numpy as np
import pytest

import recsketch as rs
from recsketch.signatures import (SignatureSpec, code_positions, code_scores, object_keys,
                                  read_signature, sign_graph, signature_code)
from scenes import unit


def _graph(rng, cat=None):
    g = rs.Graph()
    e = [g.add("edge", unit(rng, 4)) for _ in range(2)]
    c = g.add("cat", unit(rng, 8) if cat is None else cat, [(h, 0.5) for h in e])
    w = g.add("wall", unit(rng, 8))
    g.set_output([(c, 0.5), (w, 0.5)])
    return g


def test_keys_name_the_content_recursively():
    g = _graph(np.random.default_rng(0))
    again = rs.Graph.from_dict(g.to_dict())
    assert object_keys(g) == object_keys(again)
    keys = object_keys(g)
    assert len(set(keys)) == len(keys) and all(len(k) == 16 for k in keys)
    # an edge's attribute changes: that edge's key and its cat's key change, nothing else
    d = g.to_dict()
    d["objects"][0]["attributes"] = list(unit(np.random.default_rng(9), 4))
    other = object_keys(rs.Graph.from_dict(d))
    assert [a == b for a, b in zip(keys, other)] == [False, True, False, True]


def test_codes_and_signed_attributes_are_what_the_spec_says():
    spec = SignatureSpec(32, 5, math.pi / 5)
    g = _graph(np.random.default_rng(1))
    signed, keys = sign_graph(g, spec)
    assert keys == object_keys(g) and signed.modules == g.modules
    assert [(h.index, w) for h, w in signed.output] == [(h.index, w) for h, w in g.output]
    pos = code_positions(keys, spec)
    for h, k, p in zip(g, keys, pos):
        assert len(set(p.tolist())) == 5 and p.min() >= 0 and p.max() < 32
        code = np.zeros(32)
        code[p] = 1 / math.sqrt(5)
        np.testing.assert_array_equal(signature_code(k, spec), code)
        x = signed.attributes(list(signed)[h.index])
        np.testing.assert_allclose(x, np.r_[math.cos(math.pi / 5) * g.attributes(h),
                                            math.sin(math.pi / 5) * code], rtol=1e-15)
        assert abs(np.linalg.norm(x) - 1) < 1e-12 and np.all(x >= 0)
    # code_scores is the inner product with the dense code, times sqrt(ones)
    v = np.random.default_rng(2).normal(size=32)
    dense = np.stack([signature_code(k, spec) for k in keys])
    np.testing.assert_allclose(code_scores(v, pos), dense @ v * math.sqrt(5), rtol=1e-12)


def test_the_code_read_back_from_a_sketch_identifies_the_object():
    spec = SignatureSpec()
    rng = np.random.default_rng(3)
    graphs = [_graph(rng) for _ in range(40)]
    signed = [sign_graph(g, spec) for g in graphs]
    cats = [keys[2] for _, keys in signed]
    table = code_positions(cats, spec)
    sk = rs.Sketcher(4095, seed=1)
    found = 0
    for k in range(0, 40, 4):
        s = sk.sketch(signed[k][0])
        r = read_signature(sk.attributes(s, "cat", [1]).attributes, 8, spec)
        found += int(np.argmax(code_scores(r.code, table))) == k
        assert abs(np.linalg.norm(r.attributes) - 1) < 1e-12 and r.code.shape == (64,)
    assert found >= 9  # of 10 (chance 1 / 40); what signing costs: bench/signatures.py


def test_bad_specs_and_estimates():
    for bad in (SignatureSpec(0), SignatureSpec(8, 9), SignatureSpec(8, 2, 0.0),
                SignatureSpec(8, 2, math.pi / 2), SignatureSpec(8.5)):
        with pytest.raises(ValueError, match="signature"):
            bad.checked()
    with pytest.raises(ValueError, match="length"):
        read_signature(np.ones(10), 8, SignatureSpec())
    with pytest.raises(ValueError, match="NaN"):
        read_signature(np.full(72, np.nan), 8, SignatureSpec())
    with pytest.raises(ValueError, match="positions"):
        code_scores(np.ones(8), np.array([[0, 9]]))
    with pytest.raises(TypeError, match="Graph"):
        object_keys("g")
