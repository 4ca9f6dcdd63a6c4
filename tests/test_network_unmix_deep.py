"""Issue 13's depth-3 criteria for ``learn_network(..., method="unmix")`` at the issue's setting:
the fixed-tree "deep" teacher of bench/teacher_network.py (output <- root <- midA, midB <- two
leaves each; depths 2, 3, 4), d = 524,262 (b = 69), q = 4e-4, S samples.

Asserted, against the truth read off the teacher's graphs and the Sketcher's matrices
(:class:`recsketch.network.NetworkTruth`, scored by bench/teacher_unmix.py's ``criteria``):

* >= 90% of the depth-3 essential columns that have >= 2 nonzero blocks held by a module,
  exact (Hamming <= 0.2 q d, <= 5% wrong signs); no module column at any depth with a wrong
  index or sign;
* each depth-3 module's median (over samples) l-inf attribute error, gain divided out, <= 0.1;
* depths and the depth-3 tree edges all right;
* depth 2 no worse than the per-sample learner on the same sketches.

Sketching S graphs at this d takes minutes, so the sketches are synthesised: on a fixed tree
they are exactly ``Y = Z W``, 31 word vectors ``W`` (bench/tree_words.py: batched products of
the Sketcher's own matrices) mixed by the coefficients ``Z`` read off the graphs. The fixture
checks the synthesis against the Sketcher on real sketches of two samples before anything is
learned: float64 sketches to 1e-12 of their largest entry (measured 8e-16: the algebra is
exact), float32 sketches to 1e-6 (measured 1.5e-7: the Sketcher rounds every object sketch of
a float32 call to float32, the synthesis once). Timings: docs/unmix.md, "The CI test, CI-sized".

Criteria that fail today are listed in ``FAILING`` with their measured values and checked
strictly (xfail while failing, a failure once they pass): the issue is done when it is empty.
"""

import dataclasses
import sys
from pathlib import Path

import pytest

import recsketch as rs
from recsketch.network import NetworkTruth, learn_network

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from teacher_network import build_teacher  # noqa: E402
from teacher_unmix import criteria  # noqa: E402
from tree_words import agreement, coefficients, synthesise, tree_words  # noqa: E402

D, Q = 524262, 4e-4
# The criteria were the same at S = 120, 160 and 200 on seeds 0, 3 and 6 (docs/unmix.md, "The CI
# test, CI-sized"); 120 is the cheapest (the unmixing's Gram matrix grows like S^2).
S = 120
# Teacher draws: seed 3 (held out while the method was built on 0-2; its real sketches gave
# the same criteria as these synthesised ones) and seed 6 (used by no development run).
SEEDS = (3, 6)
CHECKED = (0, S - 1)  # samples the Sketcher sketches to check the synthesis

# (seed, criterion) that fail on the code this test was written against, with the measured
# value. Each is checked strictly: it xfails while it fails and FAILS once it passes, so the
# entry must then be removed. The issue is done when this set is empty.
FAILING = {
    (3, "linf"): "midB 0.145 > 0.1 (midA 0.073)",
    (6, "linf"): "midA 0.158, midB 0.243 > 0.1",
}

pytestmark = pytest.mark.slow  # ~1 min per seed (CI runs slow tests: plain `pytest`)


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def deep(request):
    seed = request.param
    d, b, q = rs.suggest_block_sparse(D, Q)
    assert (d, b) == (524262, 69)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
    graphs = build_teacher("deep", S, seed)[1]
    truth = NetworkTruth.from_graphs(sk, graphs)
    W, labels = tree_words(sk, truth)
    Z = coefficients(truth, labels)
    agree = agreement(sk, graphs, W, Z, CHECKED)
    # nothing is learned from sketches that are not the Sketcher's
    assert agree["rel float64"] <= 1e-12 and agree["rel float32"] <= 1e-6, agree
    Y = synthesise(W, Z)
    del W
    scores = {}
    for method in ("sample", "unmix"):
        model = learn_network(None, Y, sketcher=sk, method=method)
        scores[method] = _scored(model, truth)
    return seed, agree, scores


def _scored(model, truth):
    """(report, {depth: criteria}), scored once. Garbage clusters are in no criterion, and
    matching them against every true matrix is most of the report's time, so the model is
    scored without them."""
    modules_only = dataclasses.replace(model, garbage=[])
    report = modules_only.report(truth)
    return report, {h: criteria(modules_only, truth, h, report=report) for h in (2, 3)}


def _holds(seed, criterion, ok, detail):
    """Assert ``ok``, unless (seed, criterion) is a known failure: then xfail while it fails
    and fail as soon as it passes."""
    if (seed, criterion) not in FAILING:
        assert ok, detail
    elif ok:
        pytest.fail(f"{criterion} now holds on seed {seed}: remove it from FAILING ({detail})")
    else:
        pytest.xfail(f"known failure: {FAILING[seed, criterion]}; measured {detail}")


def test_the_synthesis_is_the_sketchers_sketch(deep):
    _, agree, _ = deep
    assert agree["rel float64"] <= 1e-12, agree
    assert agree["rel float32"] <= 1e-6, agree


def test_no_module_column_has_a_wrong_index_or_sign(deep):
    seed, _, scores = deep
    levels = scores["unmix"][0].levels
    assert sorted(levels) == [2, 3, 4]
    wrong = {h: lv.columns_wrong for h, lv in levels.items()}
    _holds(seed, "wrong", all(v == 0 for v in wrong.values()), wrong)


def test_depth3_two_block_columns_are_recovered(deep):
    seed, _, scores = deep
    c = scores["unmix"][1][3]
    assert c["cols2"] >= 5  # the criterion is about something
    _holds(seed, "columns", c["ok2"] >= 0.9 * c["cols2"], c)


def test_depths_are_right(deep):
    seed, _, scores = deep
    ok = all(scores["unmix"][1][h]["identified"] == scores["unmix"][1][h]["depth_ok"] == n
             for h, n in ((2, 1), (3, 2)))
    _holds(seed, "depths", ok, {h: scores["unmix"][1][h] for h in (2, 3)})


def test_depth3_tree_edges_are_right(deep):
    seed, _, scores = deep
    c = scores["unmix"][1][3]
    _holds(seed, "edges", c["edges_ok"] == c["edges"] == 2 and c["edges_wrong"] == 0, c)


def test_depth3_attributes_median_linf(deep):
    seed, _, scores = deep
    c = scores["unmix"][1][3]
    assert sorted(c["linf_modules"]) == ["midA", "midB"], c
    _holds(seed, "linf", max(c["linf_modules"].values()) <= 0.1, c["linf_modules"])


def test_depth2_is_no_worse_than_the_per_sample_learner(deep):
    seed, _, scores = deep
    lv = {m: rep.levels[2] for m, (rep, _) in scores.items()}
    c = {m: crit[2] for m, (_, crit) in scores.items()}
    ok = (lv["unmix"].columns_recovered >= lv["sample"].columns_recovered
          and lv["unmix"].columns_wrong == 0
          and c["unmix"]["linf"] <= max(1.5 * c["sample"]["linf"], 0.01))
    _holds(seed, "depth2", ok, (lv, {m: v["linf"] for m, v in c.items()}))
