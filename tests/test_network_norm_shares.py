"""The gain of a module without a count column whose recovered columns hold only part of its
unit attribute norm (``learn._norm_shares``): the share is fitted from the parent's gain, since
sibling path weights sum to the parent's. Planted modules; every expected value comes from the
planted truth, not from the code under test."""

import dataclasses

import numpy as np
import pytest

from recsketch.dictionary import RecoveredMatrix
from recsketch.network.learn import (OUTPUT, SHARE_SE_MAX, TreeEdge, _fit_norm_shares, _module,
                                     _norm_shares)

W0 = 2.0 ** -3.5


def _matrix(columns):
    """A placeholder recovered matrix on ``columns`` (its blocks are not read here)."""
    cols = np.asarray(columns, dtype=np.int64)
    return RecoveredMatrix(9, 3, 0.5, np.ones(1, np.int8), cols,
                           [np.array([0]) for _ in cols],
                           [np.ones((1, 3), np.int8) for _ in cols])


def _unit_rows(rng, n, k):
    z = rng.uniform(0.2, 1.0, (n, k))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _family(n=200, seed=0, missing=0.6, b_count=False, a_factor=1.0):
    """A parent (depth 2, count column) and two children (depth 3): A with all 4 coordinates
    recovered, B with coordinates 0 and 2 of 3 recovered and coordinate 1 (the constant
    ``missing``) not. Sibling weights a, 1 - a; one level down the gain has a factor 2^-4.
    ``a_factor`` scales A's reads (a leak-like bias)."""
    rng = np.random.default_rng(seed)
    w_p = rng.uniform(0.6, 1.0, n)
    g_p = w_p * 2.0 ** -5
    a = rng.uniform(0.3, 0.7, n)
    g_a, g_b = g_p * a / 16, g_p * (1 - a) / 16
    x_p = _unit_rows(rng, n, 3)
    x_a = _unit_rows(rng, n, 4)
    x_b = np.empty((n, 3))
    x_b[:, [0, 2]] = np.sqrt(1 - missing ** 2) * _unit_rows(rng, n, 2)
    x_b[:, 1] = missing
    parent = _module(0, (_matrix([0, 1, 2]), g_p[:, None] * x_p), (_matrix([0]), g_p[:, None]),
                     W0)
    child_a = _module(1, (_matrix([0, 1, 2, 3]), a_factor * g_a[:, None] * x_a), None, W0)
    c_b = g_b[:, None] * x_b[:, [0, 2]]
    child_b = _module(2, (_matrix([0, 2]), c_b),
                      (_matrix([0]), g_b[:, None]) if b_count else None, W0)
    edges = [TreeEdge(OUTPUT, 0, 1.0), TreeEdge(0, 1, 0.5), TreeEdge(0, 2, 0.5)]
    return [parent, child_a, child_b], edges, g_b, x_b


def test_a_missing_coordinate_share_is_fitted_from_the_parents_gain():
    """B's recovered columns hold 0.8 of its unit norm (the missing coordinate is 0.6): its
    gain |c|_2 is 0.8 g and its attributes 1.25x too large. With the parent's gain the true
    g, x and share 0.8 come back; A (every coordinate recovered, share 1) and the parent are
    left as they were."""
    mods, edges, g_b, x_b = _family()
    assert np.allclose(mods[2].gains, 0.8 * g_b)  # the planted shortfall
    out = _norm_shares(mods, edges, W0)
    b = out[2]
    assert b.norm_share == pytest.approx(0.8, rel=1e-9)
    assert np.allclose(b.gains, g_b, rtol=1e-9)
    assert np.allclose(b.attributes, x_b[:, [0, 2]], rtol=1e-9)
    assert b.depth == 3 and np.allclose(b.path_weights, g_b * 2.0 ** 9, rtol=1e-9)
    assert out[0] is mods[0] and out[1] is mods[1] and out[1].norm_share is None


def test_a_module_with_a_count_column_keeps_its_gain():
    """The same family with B's count column recovered: its gain is the count read and the
    share fit does not touch it (its attributes are already x on its columns)."""
    mods, edges, _, x_b = _family(b_count=True)
    out = _norm_shares(mods, edges, W0)
    assert all(o is m for o, m in zip(out, mods))
    assert np.allclose(out[2].attributes, x_b[:, [0, 2]])


def test_a_share_near_one_is_not_used():
    """A missing coordinate of 0.3 leaves a share of sqrt(1 - 0.09) = 0.954, within what the
    reads' common bias gives a module with every column: the gain stays |c|_2."""
    mods, edges, _, _ = _family(missing=0.3)
    out = _norm_shares(mods, edges, W0)
    assert out[2] is mods[2]


def test_an_implausible_fit_is_refused():
    """A's reads 1.5x its g x (a share of 1.5: the relation does not hold for this family):
    nothing changes, B included."""
    mods, edges, _, _ = _family(a_factor=1.5)
    shares, _ = _fit_norm_shares(mods[0].gains, np.stack(
        [np.linalg.norm(m.attributes * m.gains[:, None], axis=1) for m in mods[1:]], axis=1))
    assert shares[0] == pytest.approx(1.5) and shares[1] == pytest.approx(0.8)
    out = _norm_shares(mods, edges, W0)
    assert all(o is m for o, m in zip(out, mods))


def test_an_undetermined_fit_is_refused():
    """Few samples with noisy reads: the shares' standard error (computed here by hand from
    the residuals) is above SHARE_SE_MAX, and nothing changes."""
    mods, edges, _, _ = _family(n=10, seed=3)
    rng = np.random.default_rng(5)
    noisy = [dataclasses.replace(m, gains=m.gains * rng.uniform(0.7, 1.3, m.gains.size))
             if i else m for i, m in enumerate(mods)]
    N = np.stack([np.linalg.norm(m.attributes * m.gains[:, None], axis=1)
                  for m in noisy[1:]], axis=1)
    G = noisy[0].gains / 16
    beta = np.linalg.solve(N.T @ N, N.T @ G)
    r = G - N @ beta
    se = np.sqrt(np.diag(r @ r / (N.shape[0] - 2) * np.linalg.inv(N.T @ N))) / beta ** 2
    assert np.max(se) > SHARE_SE_MAX
    out = _norm_shares(noisy, edges, W0)
    assert all(o is m for o, m in zip(out, noisy))


def test_fitted_share_errors_match_their_spread_over_draws():
    """With 2% read noise the fitted shares scatter around the truth (1, 0.8) by what the
    reported standard errors say: over 300 draws, the mean is within 3 standard errors of
    the mean and the spread within 25% of the mean reported error."""
    shares, errors = [], []
    for seed in range(300):
        mods, _, _, _ = _family(n=100, seed=seed)
        rng = np.random.default_rng(1000 + seed)
        N = np.stack([np.linalg.norm(m.attributes * m.gains[:, None], axis=1)
                      * rng.normal(1.0, 0.02, m.gains.size) for m in mods[1:]], axis=1)
        k, se = _fit_norm_shares(mods[0].gains, N)
        shares.append(k)
        errors.append(se)
    shares, errors = np.array(shares), np.array(errors)
    spread = shares.std(axis=0)
    assert np.all(np.abs(shares.mean(axis=0) - [1.0, 0.8]) < 3 * spread / np.sqrt(300))
    assert np.allclose(spread, errors.mean(axis=0), rtol=0.25)


def test_a_fit_without_enough_samples_or_rank_is_none():
    assert _fit_norm_shares(np.ones(3), np.ones((3, 2))) is None  # n <= k + 1
    assert _fit_norm_shares(np.ones(20), np.ones((20, 2))) is None  # rank 1


def test_a_share_that_would_move_the_depth_is_not_used():
    """B recorded one level deeper than its gain g says (depth 4, as a too-short gain can put
    it): the share would give it depth 3, against the depth its edge was taken at, so B is
    left as it was."""
    mods, edges, _, _ = _family()
    mods[2] = dataclasses.replace(mods[2], depth=4)
    out = _norm_shares(mods, edges, W0)
    assert out[2] is mods[2]


def test_a_fit_on_values_that_are_not_finite_is_none():
    from recsketch.network.learn import _fit_norm_shares
    rng = np.random.default_rng(0)
    N = rng.random((50, 2)) + 0.5
    G = N.sum(axis=1) * 16
    assert _fit_norm_shares(G, N) is not None
    for bad in (np.nan, np.inf):
        M = N.copy()
        M[3, 1] = bad
        assert _fit_norm_shares(G, M) is None
        H = G.copy()
        H[7] = bad
        assert _fit_norm_shares(H, N) is None


def test_a_fitted_share_of_zero_is_skipped(monkeypatch):
    """A share of exactly 0 (or one whose division overflows) carries no gain: the module is
    left as it was (it gave inf gains and depth_from_gain raised inside learn_network)."""
    import recsketch.network.learn as learn
    mods, edges, _, _ = _family()
    for k in (0.0, 1e-310):
        monkeypatch.setattr(learn, "_fit_norm_shares",
                            lambda g, n, k=k: (np.array([1.0, k]), np.zeros(2)))
        out = _norm_shares(mods, edges, W0)
        assert all(o is m for o, m in zip(out, mods))
