"""learn_network (Theorem 5) on a planted fixed-tree teacher, checked against the true matrices
of the Sketcher, the true tree and the true attributes; the tree step on true attributes; the
garbage rules on planted data; argument checks."""

import numpy as np
import pytest

import recsketch as rs
from recsketch.network import (OUTPUT, NetworkTruth, depth_from_gain, infer_tree,
                               learn_network)

# The regime where the first round works (bench/teacher_network.py): q d / b ~ 2 blocks per
# column and a noise ratio r ~ 0.25 at depth 2.
D, Q, S = 97200, 0.0015, 48


def _unit(z):
    return z / np.linalg.norm(z)


def sink_teacher(n, seed=0):
    """output <- midA, midB (weights a, 1 - a varying per input) <- two leaves each."""
    rng = np.random.default_rng(seed)
    W = {m: rng.normal(0, 0.7, (4, 6)) for m in ("midA", "midB")}
    graphs = []
    for _ in range(n):
        g = rs.Graph()
        mids = []
        for m in ("midA", "midB"):
            leaves = [g.add(f"{m}_leaf{i}", _unit(rng.random(3) + 0.05)) for i in range(2)]
            x = _unit(np.logaddexp(0, W[m] @ np.concatenate([g.attributes(h) for h in leaves])))
            mids.append(g.add(m, x, [(h, 0.5) for h in leaves]))
        a = float(rng.uniform(0.3, 0.7))
        g.set_output([(mids[0], a), (mids[1], 1 - a)])
        graphs.append(g)
    return graphs


@pytest.fixture(scope="module")
def learned():
    sk = rs.Sketcher(D, block_size=rs.default_block_size(D), density=Q, seed=7)
    graphs = sink_teacher(S)
    Y = sk.sketch_many(graphs)
    model = learn_network(None, Y, sketcher=sk)
    return sk, graphs, Y, model


def true_columns(R, cols, d):
    E = np.zeros((len(cols), d))
    E[np.arange(len(cols)), cols] = 1.0
    return np.sign(np.round(R.matvec(E), 12))


def recovered_columns(mat):
    dense = mat.to_scipy()[:, mat.columns].toarray().T
    return np.sign(dense)


def truth_of(graphs, name):
    """(attributes (S, k), path weights (S,)) of a top-level module, read off the graphs."""
    xs, ws = [], []
    for g in graphs:
        for h, w in g.output:
            if h.module == name:
                xs.append(g.attributes(h))
                ws.append(w)
    return np.stack(xs), np.array(ws)


def identify(sk, model, name):
    """The recovered modules whose recovered attribute-column entries all carry the signs of
    R[name,1]'s entries at those rows (a column may miss blocks, never have wrong entries)."""
    hits = []
    for m in model.modules:
        got = recovered_columns(m.attribute_matrix)
        want = true_columns(sk.module_matrix(name, 1), m.attribute_matrix.columns, D)
        if np.all((got == 0) | (got == want)):
            hits.append(m)
    return hits


def within_hamming(sk, mat, name, k):
    """Per recovered column: sign/support Hamming distance to the truth <= 0.2 q d."""
    want = true_columns(sk.module_matrix(name, k), mat.columns, D)
    return np.sum(recovered_columns(mat) != want, axis=1) <= 0.2 * Q * D


def test_every_top_level_module_is_identified(learned):
    sk, graphs, Y, model = learned
    assert len(model.modules) == 2  # depth-3 modules are below the noise: none invented
    close = []
    for name in ("midA", "midB"):
        hits = identify(sk, model, name)
        assert len(hits) == 1, name
        m = hits[0]
        assert m.attribute_matrix.columns.size >= 2 and np.all(m.attribute_matrix.columns < 4)
        assert m.count_matrix is not None and list(m.count_matrix.columns) == [0]
        assert within_hamming(sk, m.count_matrix, name, 2).all()
        close.append(within_hamming(sk, m.attribute_matrix, name, 1))
        assert m.depth == 2
    # at q d / b ~ 2.4 blocks per column a column that lost one block of b = 60 entries is
    # already beyond 0.2 q d = 29: most, not all, columns are that close
    close = np.concatenate(close)
    assert close.mean() >= 0.75
    assert model.levels == {2: [0, 1]}
    assert not model.garbage or all("signed" in why or ">=" in why for _, why in model.garbage)


def test_attributes_gains_and_weights_match_truth(learned):
    sk, graphs, Y, model = learned
    for name in ("midA", "midB"):
        m = identify(sk, model, name)[0]
        x, w = truth_of(graphs, name)
        err = np.abs(m.attributes - x[:, m.columns])
        assert np.median(err) < 0.05 and err.max() < 0.15
        g_true = w / 32.0  # g(w, 2) = w 2^-5
        assert np.max(np.abs(m.gains - g_true) / g_true) < 0.1
        assert np.max(np.abs(m.path_weights - w)) < 0.06


def test_tree_is_the_top_level_of_the_truth(learned):
    sk, graphs, Y, model = learned
    ids = {name: identify(sk, model, name)[0].id for name in ("midA", "midB")}
    got = {(e.parent, e.child) for e in model.edges}
    assert got == {(OUTPUT, ids["midA"]), (OUTPUT, ids["midB"])}
    for e in model.edges:
        name = "midA" if e.child == ids["midA"] else "midB"
        assert abs(e.weight - np.median(truth_of(graphs, name)[1])) < 0.05
        assert e.position is None  # positions live only in multi-matrix words


def test_report_agrees_with_the_independent_checks(learned):
    sk, graphs, Y, model = learned
    score = model.report(NetworkTruth.from_graphs(sk, graphs))
    top, low = score.levels[2], score.levels[3]
    assert (top.modules, top.modules_identified, top.matrices_matched, top.depth_correct) \
        == (2, 2, 4, 2)
    assert top.columns_wrong == 0 and top.edges_recovered == 2 and top.edges_wrong == 0
    assert (low.modules, low.modules_identified, low.edges_recovered) == (4, 0, 0)
    assert score.spurious_modules == 0
    assert set(score.names.values()) == {"midA", "midB"}


def test_deterministic(learned):
    sk, graphs, Y, model = learned
    again = learn_network(None, Y, block_size=sk.block_size, density=sk.density, num_threads=1)
    assert len(again.modules) == len(model.modules)
    for a, b in zip(model.modules, again.modules):
        assert np.array_equal(a.columns, b.columns)
        assert np.array_equal(a.gains, b.gains) and np.array_equal(a.attributes, b.attributes)
    assert again.edges == model.edges


def test_inputs_give_a_learnability_diagnostic(learned):
    sk, graphs, Y, model = learned
    rng = np.random.default_rng(1)
    noise = rng.random((S, 3))
    # a module's own true attributes explain its recovered attributes; noise does not
    x = truth_of(graphs, "midA")[0]
    m = identify(sk, model, "midA")[0]
    explained = learn_network(x, Y, sketcher=sk).modules[m.id].input_r2
    unexplained = learn_network(noise, Y, sketcher=sk).modules[m.id].input_r2
    assert explained > 0.95 and unexplained < 0.5


def _tree_truth(n, seed=3):
    """Three levels of true attributes: root <- midA, midB <- two leaves each."""
    rng = np.random.default_rng(seed)
    att = {f"leaf{k}": np.abs(rng.normal(size=(n, 3))) for k in range(4)}
    kids = {"midA": ["leaf0", "leaf1"], "midB": ["leaf2", "leaf3"], "root": ["midA", "midB"]}
    for p in ("midA", "midB", "root"):
        src = np.hstack([att[c] for c in kids[p]])
        att[p] = np.logaddexp(0, src @ rng.normal(0, 1.0, (src.shape[1], 4)))
    att = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in att.items()}
    depth = {"root": 2, "midA": 3, "midB": 3, **{f"leaf{k}": 4 for k in range(4)}}
    half = rng.uniform(0.3, 0.7, n)
    w = {"root": np.ones(n), "midA": half, "midB": 1 - half}
    for k in range(4):
        w[f"leaf{k}"] = 0.5 * w["midA" if k < 2 else "midB"]
    true = {(p, c) for p, cs in kids.items() for c in cs}
    return att, depth, w, true


def test_tree_step_recovers_a_three_level_tree_from_true_attributes():
    att, depth, w, true = _tree_truth(300)
    edges = infer_tree(att, depth, w)
    assert {(e.parent, e.child) for e in edges} == true
    for e in edges:
        assert abs(e.weight - np.median(w[e.child] / w[e.parent])) < 1e-9
    # a child whose path weight exceeds its parent's is not attached
    heavy = dict(w, leaf0=w["midA"] * 2)
    assert ("midA", "leaf0") not in {(e.parent, e.child) for e in infer_tree(att, depth, heavy)}


@pytest.mark.parametrize("h", [2, 3, 4])
@pytest.mark.parametrize("w", [0.1, 0.5, 1.0, 1.3])
def test_depth_from_gain(h, w):
    assert depth_from_gain(w * 2.0 ** -(4 * h - 3)) == h


def test_garbage_is_separated_from_module_matrices():
    """Planted: one module's identity word plus a product-word spike of random signs (rows of a
    spike, i.e. large column indices) and a signed cluster on small indices."""
    d, b, q, n = 4095, 45, 0.08, 120
    sk = rs.Sketcher(d, block_size=b, density=q, seed=11)
    rng = np.random.default_rng(0)
    x = rng.random((n, 3)) + 0.1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g = rng.uniform(0.5, 1.0, n)
    Y = sk.module_matrix("M", 1).apply_short(x * g[:, None])
    Y += sk.module_matrix("M", 2).apply_short(g[:, None])
    far = np.zeros((n, d))
    far[:, [1000, 2500]] = 0.7 * rng.choice([-1, 1], (n, 2))
    Y += sk.position_matrix(1).matvec(far)
    near = np.zeros((n, d))
    near[:, 5] = 0.8 * rng.choice([-1, 1], n)
    Y += sk.module_matrix("W", 0).matvec(near)
    model = learn_network(None, Y, sketcher=sk)
    assert len(model.modules) == 1
    m = model.modules[0]
    assert set(m.columns) == {0, 1, 2} and list(m.count_matrix.columns) == [0]
    assert np.max(np.abs(m.attributes - x)) < 0.02 and np.max(np.abs(m.gains - g)) < 0.02
    reasons = sorted(why.split(" ")[0] for _, why in model.garbage)
    assert reasons == ["column", "signed"]


def test_truth_rejects_graphs_that_are_not_one_fixed_tree():
    sk = rs.Sketcher(4095, block_size=45, density=0.1)
    g = rs.Graph()
    leaf = g.add("leaf", [1.0])
    a = g.add("a", [1.0], [(leaf, 0.5)])
    b = g.add("b", [1.0], [(leaf, 0.5)])
    g.set_output([(a, 0.5), (b, 0.5)])
    with pytest.raises(ValueError, match="two parents"):
        NetworkTruth.from_graphs(sk, [g])
    g1, g2 = rs.Graph(), rs.Graph()
    g1.set_output([(g1.add("a", [1.0], [(g1.add("c", [1.0]), 1.0)]), 1.0)])
    g2.set_output([(g2.add("a", [1.0], [(g2.add("e", [1.0]), 1.0)]), 1.0)])
    with pytest.raises(ValueError, match="same tree"):
        NetworkTruth.from_graphs(sk, [g1, g2])


@pytest.mark.parametrize("kwargs, sketches, inputs, exc, match", [
    ({}, np.zeros((4, 90)), None, ValueError, "block_size= and density="),
    ({"block_size": 45, "density": 0.1}, np.zeros(90), None, ValueError, "2-D"),
    ({"block_size": 45, "density": 0.1}, np.zeros((0, 90)), None, ValueError, "empty"),
    ({"block_size": 45, "density": 0.1}, np.full((2, 90), np.nan), None, ValueError, "NaN"),
    ({"block_size": 45, "density": 0.1}, np.zeros((2, 100)), None, ValueError, "dividing"),
    ({"block_size": 45, "density": 0.1}, np.zeros((2, 90)), np.zeros((3, 2)), ValueError,
     "rows"),
    ({"block_size": 45, "density": 0.1}, np.zeros((2, 90)), np.array([[np.inf], [0]]),
     ValueError, "inputs contains NaN"),
    ({"block_size": 45, "density": 0.1}, [["a"] * 90] * 2, None, TypeError, "sketches"),
    ({"block_size": 45, "density": 1.5}, np.zeros((2, 90)), None, ValueError, "density"),
    ({"block_size": 45.0, "density": 0.1}, np.zeros((2, 90)), None, TypeError, "block_size"),
    ({"block_size": 45, "density": 0.1, "min_path_weight": 0}, np.zeros((2, 90)), None,
     ValueError, "min_path_weight"),
    ({"sketcher": "sk"}, np.zeros((2, 90)), None, TypeError, "Sketcher"),
])
def test_bad_input(kwargs, sketches, inputs, exc, match):
    with pytest.raises(exc, match=match):
        learn_network(inputs, sketches, **kwargs)


def test_bad_sketcher_combinations():
    sk = rs.Sketcher(4095, block_size=45, density=0.1)
    with pytest.raises(ValueError, match="not both"):
        learn_network(None, np.zeros((2, 4095)), sketcher=sk, density=0.1)
    with pytest.raises(ValueError, match="d_sketch"):
        learn_network(None, np.zeros((2, 4050)), sketcher=sk)
    with pytest.raises(ValueError, match="block_sparse"):
        learn_network(None, np.zeros((2, 4096)), sketcher=rs.Sketcher(4096, family="orthogonal"))


def test_report_skips_samples_where_a_module_has_zero_weight():
    """A module with path weight 0 in a sample is absent from that sketch: the report scores
    the other samples (and does not divide by the zero gain)."""
    sk = rs.Sketcher(D, block_size=rs.default_block_size(D), density=Q, seed=7)
    rng = np.random.default_rng(0)
    graphs = []
    for s in range(S):
        g = rs.Graph()
        a = g.add("A", _unit(rng.random(3) + 0.05))
        b = g.add("B", _unit(rng.random(3) + 0.05))
        w = 0.0 if s == 0 else float(rng.uniform(0.3, 0.7))
        g.set_output([(a, w), (b, 1 - w)])
        graphs.append(g)
    model = learn_network(None, sk.sketch_many(graphs), sketcher=sk)
    score = model.report(NetworkTruth.from_graphs(sk, graphs))
    level = score.levels[2]
    assert level.modules_identified == 2
    assert np.isfinite(level.gain_relative_error) and level.gain_relative_error < 0.5


def test_tree_step_attaches_a_weak_child_that_completes_its_parents_weight():
    """A true child that explains too little of its parent's attributes for the R^2 test (here
    its attributes are made independent of the parent's) still hangs from the parent when the
    children's path weights sum to the parent's (importance weights sum to 1); it does not
    when the parent's weight is already carried by other children, nor with the sum test off
    (tolerance below the mismatch). midB's own children (leaf2, leaf3), which explain nothing
    of the noise now standing for midB's attributes, are both weak: each weak child is tested
    on its own (0.5 of midB's weight is not 1), so they stay unattached."""
    att, depth, w, true = _tree_truth(300)
    rng = np.random.default_rng(7)
    noise = np.abs(rng.normal(size=att["midB"].shape))
    weak = dict(att, midB=noise / np.linalg.norm(noise, axis=1, keepdims=True))
    off = dict(w, midB=1.05 * w["midB"])  # estimated weights: the sum is 1.02-1.03, not 1
    got = {(e.parent, e.child) for e in infer_tree(weak, depth, off, min_r2_gain=0.05)}
    assert got == true - {("midB", "leaf2"), ("midB", "leaf3")}
    strict = infer_tree(weak, depth, off, weight_sum_tolerance=0.01)
    assert ("root", "midB") not in {(e.parent, e.child) for e in strict}
    # the root's weight already carried by midA: midB would push the sum to ~1.5
    over = dict(w, midA=np.ones_like(w["midA"]))
    got = {(e.parent, e.child) for e in infer_tree(weak, depth, over)}
    assert ("root", "midB") not in got


def test_tree_step_rejects_a_bad_weight_sum_tolerance():
    att, depth, w, _ = _tree_truth(50)
    for bad, exc in ((0.0, ValueError), (float("nan"), ValueError), ("0.1", TypeError)):
        with pytest.raises(exc, match="weight_sum_tolerance"):
            infer_tree(att, depth, w, weight_sum_tolerance=bad)


def _two_parent_case(wa, wc, wb, n=300):
    """Parents p (attributes from child A plus a coordinate weakly following B) and q (from
    child C plus a constant); B explains neither by ``min_r2_gain``. Path weights
    ``w_A = wa w_p``, ``w_C = wc w_q``, ``w_B = wb w_q`` (B's true parent is q)."""
    def rows(z):  # nonnegative, unit-norm rows
        z = np.abs(z)
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    rng = np.random.default_rng(1)
    A, C, B = (rows(rng.normal(size=(n, 4))) for _ in range(3))
    p = rows(np.hstack([A, 0.3 + 0.05 * B[:, :1] + 0.05 * rng.normal(size=(n, 1))]))
    q = rows(np.hstack([C, 0.3 + 0.05 * rng.normal(size=(n, 1))]))
    wp, wq = np.full(n, 0.5), np.full(n, 0.5)
    att = {"p": p, "q": q, "A": A, "B": B, "C": C}
    depth = {"p": 2, "q": 2, "A": 3, "B": 3, "C": 3}
    w = {"p": wp, "q": wq, "A": wa * wp, "C": wc * wq, "B": wb * wq}
    return {(e.parent, e.child) for e in infer_tree(att, depth, w)}


def test_tree_step_does_not_attach_a_weak_child_to_a_parent_already_complete():
    """B's best-R^2 parent is p, by less than ``min_r2_gain``; p's child A already carries 0.95
    of p's weight, so B does not complete p (0.95 is within the tolerance without B). The rule
    that tested only the sum with B (0.95 + 0.1 within 0.15 of 1) attached B to p."""
    got = _two_parent_case(0.95, 0.9, 0.1)
    assert {("p", "A"), ("q", "C")} <= got
    assert ("p", "B") not in got


def test_tree_step_attaches_a_weak_child_only_to_the_one_parent_it_completes():
    """B completes q only (0.7 + 0.3; p's 0.95 is complete without it): B hangs from q, not
    from its best-R^2 parent p. When it completes both (0.7 + 0.3 each) it is ambiguous and
    stays unattached."""
    got = _two_parent_case(0.95, 0.7, 0.3)
    assert {("p", "A"), ("q", "C"), ("q", "B")} == got
    got = _two_parent_case(0.7, 0.7, 0.3)
    assert {("p", "A"), ("q", "C")} == got
