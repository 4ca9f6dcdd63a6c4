"""The Graph API's validation: every rule raises a clear error and a failed call changes nothing."""

import json

import numpy as np
import pytest

import recsketch as rs
from scenes import room, unit

X = np.array([0.6, 0.8])


def test_add_validates_attributes_and_leaves_the_graph_unchanged():
    g = rs.Graph()
    a = g.add("a", X)
    bad = [
        (np.array([0.6, np.nan]), ValueError, "NaN"),
        (np.array([-0.6, 0.8]), ValueError, "nonnegative"),
        (np.array([1.0, 1.0]), ValueError, "unit l2 norm"),
        (np.zeros((2, 2)), ValueError, "1-D"),
        (np.array([]), ValueError, "empty"),
        ("ab", TypeError, "array of numbers"),
    ]
    for attrs, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            g.add("b", attrs, [(a, 0.5)])
    assert len(g) == 1 and g.inputs(a) == []
    h = g.add("b", [3.0, 4.0], normalize=True)
    np.testing.assert_allclose(g.attributes(h), X)
    with pytest.raises(ValueError, match="all-zero"):
        g.add("b", [0.0, 0.0], normalize=True)
    with pytest.raises(ValueError, match="read-only"):
        g.attributes(h)[0] = 1.0


def test_add_validates_module_and_inputs():
    g, other = rs.Graph(), rs.Graph()
    a, b = g.add("a", X), g.add("a", X)
    foreign = other.add("a", X)
    cases = [
        (dict(module=""), ValueError, "must not be empty"),
        (dict(module=3), TypeError, "module must be a str"),
        (dict(inputs=[(a, -0.1)]), ValueError, r"in \[0, 1\]"),
        (dict(inputs=[(a, float("nan"))]), ValueError, r"in \[0, 1\]"),
        (dict(inputs=[(a, 0.7), (b, 0.4)]), ValueError, "sum to"),
        (dict(inputs=[(foreign, 0.5)]), ValueError, "another graph"),
        (dict(inputs=[(0, 0.5)]), TypeError, "not a Handle"),
        (dict(inputs=[a]), TypeError, "pair"),
        (dict(inputs=[(a, True)]), TypeError, "real number"),
    ]
    for kw, exc, msg in cases:
        args = {"module": "p", "attributes": X, "inputs": (), **kw}
        with pytest.raises(exc, match=msg):
            g.add(args["module"], args["attributes"], args["inputs"])
    assert len(g) == 2
    g.add("p", X, [(a, 0.5), (b, 0.5)])  # weights summing to exactly 1 are fine


def test_depth_rules_and_output():
    g = rs.Graph()
    leaf = g.add("leaf", X)
    mid = g.add("mid", X, [(leaf, 1.0)])
    with pytest.raises(ValueError, match="depths 2 and 3"):
        g.set_output([(mid, 0.5), (leaf, 0.5)])  # leaf under the output and under mid
    assert g.output is None
    g2 = rs.Graph()
    x1 = g2.add("x", X)
    x2 = g2.add("x", X)
    y = g2.add("y", X, [(x2, 1.0)])
    with pytest.raises(ValueError, match="module 'x' appears at depths 2"):
        g2.set_output([(x1, 0.5), (y, 0.5)])
    with pytest.raises(ValueError, match="at least one input"):
        g2.set_output([])
    sk = rs.Sketcher(256, family="orthogonal")
    with pytest.raises(ValueError, match="no output"):
        sk.sketch(rs.Graph())
    g3 = rs.Graph()
    used = g3.add("u", X)
    g3.add("orphan", X)
    g3.set_output([(used, 1.0)])
    with pytest.raises(ValueError, match="does not feed the output"):
        sk.sketch(g3)
    assert sk.modules == {}


def test_sketch_validates_against_d_and_the_registry_before_changing_it():
    sk = rs.Sketcher(256, family="orthogonal")
    g = rs.Graph()
    g.set_output([(g.add("big", unit(np.random.default_rng(0), 300)), 1.0)])
    with pytest.raises(ValueError, match="300 attributes, more than d_sketch=256"):
        sk.sketch(g)
    good, _ = room(np.random.default_rng(0))
    sk.sketch(good)
    before = sk.modules
    deeper = rs.Graph()  # the cat now at depth 3
    deeper.set_output([(deeper.add("box", X, [(deeper.add("cat", unit(np.random.default_rng(1), 32)), 1.0)]), 1.0)])
    with pytest.raises(ValueError, match="registered at depth 2"):
        sk.sketch(deeper)
    other_dim = rs.Graph()
    other_dim.set_output([(other_dim.add("wall", X), 1.0)])
    with pytest.raises(ValueError, match="registered with 8 attributes"):
        sk.sketch(other_dim)
    # sketch_many validates every graph before registering any
    fresh = rs.Graph()
    fresh.set_output([(fresh.add("lamp", X), 1.0)])
    with pytest.raises(ValueError, match="graph 1"):
        sk.sketch_many([fresh, g])
    assert sk.modules == before
    with pytest.raises(TypeError, match="recsketch.Graph"):
        sk.sketch_many([fresh, "graph"])
    with pytest.raises(ValueError, match="registered"):
        sk.register_module("wall", 3, 8)


def test_from_dict_detects_cycles_and_round_trips():
    g, _ = room(np.random.default_rng(2))
    data = json.loads(json.dumps(g.to_dict()))
    back = rs.Graph.from_dict(data)
    sk = rs.Sketcher(512, family="orthogonal", dtype="float64")
    assert np.array_equal(sk.sketch(back), sk.sketch(g))
    # children listed after their parents are fine
    rev = {"objects": [{"module": "p", "attributes": [1.0], "inputs": [[1, 1.0]]},
                       {"module": "c", "attributes": [1.0]}], "output": [[0, 1.0]]}
    assert rs.Graph.from_dict(rev).modules == ["p", "c"]
    cyc = {"objects": [{"module": "a", "attributes": [1.0], "inputs": [[1, 0.5]]},
                       {"module": "b", "attributes": [1.0], "inputs": [[0, 0.5]]}],
           "output": [[0, 1.0]]}
    with pytest.raises(ValueError, match="cycle"):
        rs.Graph.from_dict(cyc)
    with pytest.raises(ValueError, match="missing object"):
        rs.Graph.from_dict({"objects": [{"module": "a", "attributes": [1.0], "inputs": [[5, 1]]}]})


def test_query_argument_errors():
    sk = rs.Sketcher(512, family="orthogonal")
    g, _ = room(np.random.default_rng(0))
    s = sk.sketch(g)
    with pytest.raises(ValueError, match="not registered"):
        sk.attributes(s, "dog", weight=0.5)
    with pytest.raises(ValueError, match="needs 2 positions"):
        sk.attributes(s, "edge", path=[1], weight=0.5)
    with pytest.raises(ValueError, match=">= 1"):
        sk.attributes(s, "wall", path=[0], weight=0.5)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        sk.count(s, "wall", 0.0)
    with pytest.raises(ValueError, match="method"):
        sk.count(s, "wall", 0.25, method="best")
    with pytest.raises(ValueError, match="shape"):
        sk.count(s[:-1], "wall", 0.25)
    with pytest.raises(ValueError, match="NaN"):
        sk.count(np.full(512, np.nan), "wall", 0.25)
    with pytest.raises(TypeError, match="dtype"):
        sk.count(np.zeros(512, dtype=np.int64), "wall", 0.25)
    t = sk.subsketch(s, [1], "cat")
    with pytest.raises(ValueError, match="not below this sub-sketch"):
        sk.count(t, "wall", 0.25)
    with pytest.raises(ValueError, match="pass module="):
        sk.subsketch(s, [1])
    with pytest.raises(ValueError, match="d_sketch=100, this Sketcher has 512"):
        sk.count(rs.erase(np.zeros(100), 10), "wall", 0.25)
    with pytest.raises(ValueError, match="fraction"):
        rs.erase(s, 1.5)
    with pytest.raises(ValueError, match="mode"):
        rs.erase(s, 10, mode="suffix")
    with pytest.raises(ValueError, match="keep must be <= 512"):
        rs.erase(s, 513)
    with pytest.raises(ValueError, match="different dimensions"):
        rs.similarity(s, s[:10])


def _parents_first(data):
    """The same graph dict with its objects listed in reverse order (parents before children)."""
    n = len(data["objects"])
    new = lambda k: n - 1 - k  # noqa: E731
    objects = [dict(o, inputs=[[new(c), w] for c, w in o.get("inputs", [])])
               for o in reversed(data["objects"])]
    return {"objects": objects, "output": [[new(c), w] for c, w in data["output"]]}, new


@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_from_dict_parents_first_sketches_like_children_first(family):
    g, _ = room(np.random.default_rng(5))
    data = json.loads(json.dumps(g.to_dict()))
    rev, new = _parents_first(data)
    assert any(c > k for k, o in enumerate(rev["objects"]) for c, _ in o.get("inputs", []))
    back = rs.Graph.from_dict(rev)
    # the caller's numbering is kept: object new(k) of `back` is object k of `g`
    assert back.modules == [data["objects"][len(data["objects"]) - 1 - k]["module"]
                            for k in range(len(g))]
    sk = rs.Sketcher(510 if family == "block_sparse" else 512, family=family, dtype="float64")
    s_ref, obj_ref = sk.sketch(g, return_objects=True)
    s_rev, obj_rev = sk.sketch(back, return_objects=True)
    np.testing.assert_array_equal(s_rev, s_ref)
    for k in range(len(g)):
        np.testing.assert_array_equal(obj_rev[new(k)], obj_ref[k])
    # in a batch, next to a child-first graph, and through the JSON command line's path
    np.testing.assert_array_equal(sk.sketch_many([g, back, g]), np.stack([s_ref] * 3))


def test_from_dict_parents_first_long_chain():
    """A long chain listed output-side first (each object's input comes later in the list)."""
    n = 3000
    objects = [{"module": f"m{k}", "attributes": [1.0], "inputs": [[k + 1, 0.5]]}
               for k in range(n - 1)] + [{"module": f"m{n - 1}", "attributes": [1.0]}]
    g = rs.Graph.from_dict({"objects": objects, "output": [[0, 1.0]]})
    assert g.modules[0] == "m0" and g.inputs(list(g)[0])[0][0].index == 1
    depths = g.depths()
    assert [depths[h] for h in g][:3] == [2, 3, 4]


class _CountingIndex(int):
    """An object index that counts its comparisons, so that work done on indices inside C
    containers (dict lookups, sorting, searches) is counted too, not only Python lines."""

    compares = 0

    def __eq__(self, other):
        _CountingIndex.compares += 1
        return int.__eq__(self, other)

    __hash__ = int.__hash__


class _CountingOrder(list):
    """The topological order, with its linear searches counted by the elements they scan (the
    historic O(n^2) was ``order.index(k)`` per object, a C loop no line count sees)."""

    scanned = 0

    def index(self, value, *args):
        out = super().index(value, *args)
        _CountingOrder.scanned += out + 1
        return out

    def __contains__(self, value):
        _CountingOrder.scanned += len(self)
        return super().__contains__(value)

    def count(self, value):
        _CountingOrder.scanned += len(self)
        return super().count(value)


def _from_dict_work(n, monkeypatch):
    """Work done by Graph.from_dict for an n-object chain listed parents first: Python lines run
    inside graph.py (sys.settrace line events), comparisons of object indices and elements
    scanned by searches of the topological order. Counts work, not time."""
    import sys
    from recsketch import graph as graph_module
    topo = graph_module._topological_order
    monkeypatch.setattr(graph_module, "_topological_order",
                        lambda children: _CountingOrder(topo(children)))
    objects = [{"module": f"m{k}", "attributes": [1.0],
                "inputs": [[_CountingIndex(k + 1), 0.5]]}
               for k in range(n - 1)] + [{"module": "m_leaf", "attributes": [1.0]}]
    data = {"objects": objects, "output": [[_CountingIndex(0), 1.0]]}
    lines = [0]

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != graph_module.__file__:
            return None
        if event == "line":
            lines[0] += 1
        return tracer

    _CountingIndex.compares = _CountingOrder.scanned = 0
    sys.settrace(tracer)
    try:
        g = rs.Graph.from_dict(data)
    finally:
        sys.settrace(None)
    assert len(g) == n and g.modules[0] == "m0"
    return lines[0] + _CountingIndex.compares + _CountingOrder.scanned


def test_from_dict_parents_first_is_linear(monkeypatch):
    # issue 12 defect 1: the renumbering searched the order list once per object (O(n^2)).
    # The work for 4n objects must stay within a constant of 4x the work for n (quadratic
    # growth would be 16x).
    small = _from_dict_work(500, monkeypatch)
    large = _from_dict_work(2000, monkeypatch)
    assert large <= 5 * small, (small, large)
