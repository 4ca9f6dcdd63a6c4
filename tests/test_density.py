"""The density q of D(b, q, d): the default rule, the paper's value one keyword away, and the
validation of the keyword (docs/density.md)."""

import math

import numpy as np
import pytest

import recsketch as rs


def test_paper_density_is_the_papers_formula():
    for d in (360, 1008, 4095, 16371, 65520):
        assert rs.paper_density(d) == pytest.approx(min(1.0, math.log2(d) / math.sqrt(d)), rel=1e-15)
    assert rs.paper_density(8) == 1.0  # log2(8) / sqrt(8) > 1: capped


@pytest.mark.parametrize("d,b", [(360, 36), (1008, 42), (4095, 45), (16371, 51), (65520, 60),
                                 (262143, 63)])
def test_default_density_leaves_a_column_empty_with_probability_1e_8(d, b):
    q = rs.default_density(d)
    assert rs.default_density(d, b) == q and rs.default_block_size(d) == b
    n_rows = d // b
    # the smallest q with (1 - q)^(d / b) <= 1e-8, computed here by bisection
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (1 - mid) ** n_rows > 1e-8 else (lo, mid)
    assert q == pytest.approx(hi, rel=1e-9)
    # about ln(1e8) = 18.4 nonzero blocks per column once d / b is large
    assert 8 < q * n_rows < 18.5


def test_default_density_follows_the_block_size():
    # a larger block leaves fewer block-rows, so each must be likelier to be nonzero
    assert rs.default_density(4095, 63) > rs.default_density(4095, 45)
    sk = rs.Sketcher(4095, block_size=63)
    assert sk.density == rs.default_density(4095, 63)


def test_sketcher_density_keyword():
    d = 4095
    assert rs.Sketcher(d).density == rs.default_density(d)
    assert rs.Sketcher(d, density="paper").density == rs.paper_density(d)
    assert rs.Sketcher(d, density=0.25).density == 0.25
    assert rs.Sketcher(d, density=np.float32(0.5)).density == 0.5
    assert rs.suggest_block_sparse(16384, density="paper").density == rs.paper_density(16371)
    assert rs.suggest_block_sparse(16384).density == rs.default_density(16371)


def test_paper_keyword_gives_the_matrices_of_that_float():
    # "paper" only names a q: the sketch of a given (d, q, seed) is the same either way
    d = 1008
    a = rs.Sketcher(d, density="paper", seed=3, dtype="float64")
    b = rs.Sketcher(d, density=rs.paper_density(d), seed=3, dtype="float64")
    x = np.random.default_rng(0).random(d)
    for k in range(3):
        assert np.array_equal(a.module_matrix("m", k) @ x, b.module_matrix("m", k) @ x)
    g = rs.Graph()
    leaf = g.add("leaf", np.ones(4) / 2)
    g.set_output([(g.add("top", np.ones(9) / 3, [(leaf, 1.0)]), 1.0)])
    assert np.array_equal(a.sketch(g), b.sketch(g))
    # the configuration records the number, so a saved Sketcher does not depend on the rule
    assert a.to_dict()["density"] == rs.paper_density(d)
    assert rs.Sketcher.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("density,exc,match", [
    ("Paper", ValueError, "'paper'"),
    ("default", ValueError, "'paper'"),
    ("", ValueError, "'paper'"),
    ("0.3", ValueError, "density"),
    (b"paper", TypeError, "density"),
    ([0.1], TypeError, "density"),
    (1j, TypeError, "density"),
    (True, TypeError, "density"),
    (0.0, ValueError, "density"),
    (math.inf, ValueError, "density"),
])
def test_bad_density(density, exc, match):
    with pytest.raises(exc, match=match):
        rs.Sketcher(4095, density=density)
    with pytest.raises(exc, match=match):
        rs.suggest_block_sparse(4095, density=density)


def test_density_keyword_refused_for_orthogonal():
    with pytest.raises(ValueError, match="block_sparse family only"):
        rs.Sketcher(4096, family="orthogonal", density="paper")


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (4.5, TypeError), (None, None)])
def test_default_density_arguments(bad, exc):
    if exc is None:
        assert rs.default_density(4095, bad) == rs.default_density(4095)
        return
    with pytest.raises(exc, match="block_size"):
        rs.default_density(4095, bad)
    with pytest.raises(exc, match="d_sketch"):
        rs.default_density(bad)
