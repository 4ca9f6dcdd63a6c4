"""Issue 13's depth-3 criteria for ``learn_network(..., method="unmix")`` at the issue's setting:
the fixed-tree "deep" teacher of bench/teacher_network.py (output <- root <- midA, midB <- two
leaves each; depths 2, 3, 4), d = 524,262 (b = 69), q = 4e-4, S samples, three seeds; for two
learners: ``unmix`` (the plain sketches alone) and ``separated`` (the same with
``sampled_sketches=``: the same S inputs sketched once more with ``tuple_sampling=1``, each of
which holds one object, so every object's part of the sketches is unmixed on its own;
``recsketch.network.separation``).

Asserted, against the truth read off the teacher's graphs and the Sketcher's matrices
(:class:`recsketch.network.NetworkTruth`, scored by bench/teacher_unmix.py's ``criteria``):

* >= 90% of the depth-3 essential columns that have >= 2 nonzero blocks held by a module,
  exact (Hamming <= 0.2 q d, <= 5% wrong signs); no module column at any depth with a wrong
  index or sign;
* each depth-3 module's median (over samples) l-inf attribute error, gain divided out, <= 0.1;
* depths and the depth-3 tree edges all right;
* depth 2 no worse than the per-sample learner on the same sketches: at least as many depth-2
  columns recovered, none wrong, and the worst depth-2 module's median l-inf at most the
  per-sample learner's plus ``DEPTH2_SLACK`` = 0.002. The slack is for the per-sample learner's
  own variation with S: its depth-2 l-inf was the same to the third decimal at S = 120, 160
  and 200 on seeds 0, 3 and 6 (docs/unmix.md, "The CI test, CI-sized"), so its spread is
  below 0.001; 0.002 is twice that.

Depth 4 is out of scope: the issue's criteria are about depths 3 and 2; depth 4 is reported
(measured, with the d it would need) in docs/unmix.md, not asserted here.

Sketching S graphs at this d takes minutes, so the sketches are synthesised: on a fixed tree
they are exactly ``Y = Z W``, 31 word vectors ``W`` (bench/tree_words.py: batched products of
the Sketcher's own matrices) mixed by the coefficients ``Z`` read off the graphs. The fixture
checks the synthesis against the Sketcher on real sketches of two samples before anything is
learned: float64 sketches to 1e-12 of their largest entry (measured 8e-16: the algebra is
exact), float32 sketches to 1e-6 (measured 1.5e-7: the Sketcher rounds every object sketch of
a float32 call to float32, the synthesis once). Two samples are two combinations of the words,
so the same synthesis is also checked on ALL S samples of the same tree at a small d
(:func:`test_the_synthesis_is_the_sketchers_sketch_on_every_sample`). Timings: docs/unmix.md,
"The CI test, CI-sized".

Criteria that fail today are listed in ``FAILING`` with their measured values (numbers, larger
is worse) and checked strictly: xfail while failing and no worse than recorded (beyond
``REGRESSION_SLACK``), a failure if any measurement got worse, and a failure once they pass.
The plain learner's known failures stay listed as a regression guard; the issue's criteria are
met by the ``separated`` learner, which has no entry.
"""

import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np
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
# the same criteria as these synthesised ones), seed 6 (used by no development run) and seed 7
# (synthesised only after the unmixing code was committed).
SEEDS = (3, 6, 7)
CRITERIA = ("wrong", "columns", "depths", "edges", "linf", "depth2")
LEARNERS = ("unmix", "separated")
CHECKED = (0, S - 1)  # samples the Sketcher sketches to check the synthesis at full d
DEPTH2_SLACK = 0.002  # see the module docstring

# (seed, criterion) that fail on the code this test was written against, with what was
# measured: every number is "larger is worse" (see ``_measured``). Each is checked strictly: it
# xfails while it fails and no measurement exceeds its recorded value by more than
# REGRESSION_SLACK; it FAILS if one does, and FAILS once the criterion passes (then the entry
# goes). The separated learner has no entry; the plain learner's stay as a regression guard.
FAILING = {
    ("unmix", 6, "linf"): {"midA": 0.1578, "midB": 0.2426},
    # moved by round 6 (was midA 0.1263, midB 0.0875): the better root read changes the words
    # the leak correction removes, and _steadier's choice for midB's columns flips; round 7
    # (midB's gain from its norm, learn._whole_norm) took midB from 0.1717 to 0.1596, round 8
    # (that gain as the count read less its leak) to 0.0782. Seed 7's columns hold since
    # round 8 (learn._pair_biased_counts: midA's count column, read below midA's norm).
    ("unmix", 7, "linf"): {"midA": 0.1131, "midB": 0.0782},
}
# How much worse than recorded a known failure may measure (the test is deterministic on one
# build; the slack absorbs other machines' rounding and changes small at the criterion's
# scale): counts not at all, l-inf errors by a tenth of the 0.1 criterion at depth 3, and by
# DEPTH2_SLACK at depth 2.
REGRESSION_SLACK = {"midA": 0.01, "midB": 0.01, "linf excess": DEPTH2_SLACK}

pytestmark = pytest.mark.slow  # ~1 min per seed (CI runs slow tests: plain `pytest`)


def test_failing_names_only_known_seeds_and_criteria():
    stale = set(FAILING) - {(m, s, c) for m in LEARNERS for s in SEEDS for c in CRITERIA}
    assert not stale, f"FAILING names a seed or criterion the test does not check: {stale}"
    for key, recorded in FAILING.items():
        assert recorded and all(isinstance(v, (int, float)) for v in recorded.values()), key


def test_a_known_failure_that_gets_worse_fails(monkeypatch):
    """The strict check itself, on made-up measurements: no worse (within the slack) xfails,
    worse fails, passing fails."""
    key = ("separated", SEEDS[0])
    monkeypatch.setitem(FAILING, key + ("linf",), {"midA": 0.12, "midB": 0.05})
    with pytest.raises(pytest.xfail.Exception):
        _holds(*key, "linf", False, {"midA": 0.12 + 0.9 * REGRESSION_SLACK["midA"],
                                     "midB": 0.05})
    with pytest.raises(AssertionError, match="worse"):
        _holds(*key, "linf", False, {"midA": 0.12 + 1.1 * REGRESSION_SLACK["midA"],
                                     "midB": 0.05})
    with pytest.raises(pytest.fail.Exception, match="remove it"):
        _holds(*key, "linf", True, {"midA": 0.09, "midB": 0.05})


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
    # the same inputs, each sketched once more with one term kept per tuple (the Sketcher's own
    # sketches: a sampled sketch holds one object's path, cheap at any d)
    Ys = sk.sketch_many(graphs, tuple_sampling=1, sample_seed=range(S))
    scores = {}
    for label, options in (("sample", {}), ("unmix", {"method": "unmix"}),
                           ("separated", {"method": "unmix", "sampled_sketches": Ys})):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = learn_network(None, Y, sketcher=sk, **options)
        # the one warning expected: a leaf drawn no more times than its rank by S sampled
        # sketches (each leaf is held in ~1/16 of them) is left unassigned
        assert all("left unassigned" in str(w.message) for w in caught), \
            [str(w.message) for w in caught]
        scores[label] = _scored(model, truth)
    return seed, agree, scores


def _scored(model, truth):
    """(report, {depth: criteria}), scored once. Garbage clusters are in no criterion, and
    matching them against every true matrix is most of the report's time, so the model is
    scored without them."""
    modules_only = dataclasses.replace(model, garbage=[])
    report = modules_only.report(truth)
    return report, {h: criteria(modules_only, truth, h, report=report) for h in (2, 3)}


def _measured(learner, criterion, scores):
    """(holds, {name: value}) for one criterion of ``learner``; every value is larger-is-worse."""
    rep, crit = scores[learner]
    c3 = crit[3]
    if criterion == "wrong":
        wrong = {h: lv.columns_wrong for h, lv in rep.levels.items()}
        return all(v == 0 for v in wrong.values()), {"wrong columns": sum(wrong.values())}
    if criterion == "columns":
        return (c3["ok2"] >= 0.9 * c3["cols2"],
                {"missed": c3["cols2"] - c3["ok2"]})
    if criterion == "depths":
        want = {2: 1, 3: 2}
        ok = all(crit[h]["identified"] == crit[h]["depth_ok"] == n for h, n in want.items())
        return ok, {"depth errors": sum(abs(n - crit[h]["identified"])
                                        + abs(crit[h]["identified"] - crit[h]["depth_ok"])
                                        for h, n in want.items())}
    if criterion == "edges":
        ok = c3["edges_ok"] == c3["edges"] == 2 and c3["edges_wrong"] == 0
        return ok, {"edges missed": 2 - c3["edges_ok"], "edges wrong": c3["edges_wrong"]}
    if criterion == "linf":
        assert sorted(c3["linf_modules"]) == ["midA", "midB"], c3
        return max(c3["linf_modules"].values()) <= 0.1, dict(c3["linf_modules"])
    if criterion == "depth2":
        lv = {m: r.levels[2] for m, (r, _) in scores.items()}
        linf = {m: cr[2]["linf"] for m, (_, cr) in scores.items()}
        m = {"columns short": lv["sample"].columns_recovered - lv[learner].columns_recovered,
             "wrong": lv[learner].columns_wrong,
             "linf excess": linf[learner] - linf["sample"]}
        return (m["columns short"] <= 0 and m["wrong"] == 0
                and m["linf excess"] <= DEPTH2_SLACK), m
    raise AssertionError(criterion)


def _holds(learner, seed, criterion, ok, measured):
    """Assert ``ok``, unless (learner, seed, criterion) is a known failure: then xfail while it
    fails no worse than recorded, and fail if ``measured`` got worse or as soon as it passes."""
    detail = {k: round(v, 4) for k, v in measured.items()}
    if (learner, seed, criterion) not in FAILING:
        assert ok, detail
        return
    recorded = FAILING[learner, seed, criterion]
    if ok:
        pytest.fail(f"{criterion} now holds for {learner} on seed {seed}: remove it from "
                    f"FAILING ({detail})")
    assert set(recorded) == set(measured), (recorded, measured)
    worse = {k: (measured[k], recorded[k]) for k in recorded
             if measured[k] > recorded[k] + REGRESSION_SLACK.get(k, 0)}
    assert not worse, f"known failure got worse on seed {seed} (measured, recorded): {worse}"
    pytest.xfail(f"known failure, no worse than recorded {recorded}: measured {detail}")


def test_the_synthesis_is_the_sketchers_sketch(deep):
    _, agree, _ = deep
    assert agree["rel float64"] <= 1e-12, agree
    assert agree["rel float32"] <= 1e-6, agree


def test_the_synthesis_is_the_sketchers_sketch_on_every_sample():
    """The full-d check covers two samples; here all S samples of the same tree (seed 3's
    draws) are sketched by the Sketcher at a small d, where that is cheap."""
    seed = SEEDS[0]
    d, b, q = rs.suggest_block_sparse(8192, 0.02)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
    graphs = build_teacher("deep", S, seed)[1]
    truth = NetworkTruth.from_graphs(sk, graphs)
    W, labels = tree_words(sk, truth)
    assert W.shape == (31, d)
    Z = coefficients(truth, labels)
    assert (np.abs(Z).max(axis=0) > 0).all()  # every word is in the mix
    agree = agreement(sk, graphs, W, Z, range(S))
    assert agree["rel float64"] <= 1e-12, agree
    assert agree["rel float32"] <= 1e-6, agree


@pytest.mark.parametrize("learner", LEARNERS)
def test_no_module_column_has_a_wrong_index_or_sign(deep, learner):
    seed, _, scores = deep
    assert sorted(scores[learner][0].levels) == [2, 3, 4]
    _holds(learner, seed, "wrong", *_measured(learner, "wrong", scores))


@pytest.mark.parametrize("learner", LEARNERS)
def test_depth3_two_block_columns_are_recovered(deep, learner):
    seed, _, scores = deep
    assert scores[learner][1][3]["cols2"] >= 5  # the criterion is about something
    _holds(learner, seed, "columns", *_measured(learner, "columns", scores))


@pytest.mark.parametrize("learner", LEARNERS)
def test_depths_are_right(deep, learner):
    seed, _, scores = deep
    _holds(learner, seed, "depths", *_measured(learner, "depths", scores))


@pytest.mark.parametrize("learner", LEARNERS)
def test_depth3_tree_edges_are_right(deep, learner):
    seed, _, scores = deep
    _holds(learner, seed, "edges", *_measured(learner, "edges", scores))


@pytest.mark.parametrize("learner", LEARNERS)
def test_depth3_attributes_median_linf(deep, learner):
    seed, _, scores = deep
    _holds(learner, seed, "linf", *_measured(learner, "linf", scores))


@pytest.mark.parametrize("learner", LEARNERS)
def test_depth2_is_no_worse_than_the_per_sample_learner(deep, learner):
    seed, _, scores = deep
    _holds(learner, seed, "depth2", *_measured(learner, "depth2", scores))
