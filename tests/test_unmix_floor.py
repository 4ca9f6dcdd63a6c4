"""bench/unmix_floor.py's priors for the heavy words, against dense NumPy on small planted words."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from unmix_floor import heavy_reads, module_errors  # noqa: E402

K, D, S = 7, 400, 50
HEAVY = [0, 1]


def _setup(orthogonal: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    if orthogonal:  # disjoint supports
        W = np.zeros((K, D))
        for k in range(K):
            W[k, k * 50:(k + 1) * 50] = rng.normal(size=50)
    else:
        W = rng.normal(size=(K, D))
    Z = rng.uniform(0.5, 2.0, size=(S, K))
    P = rng.normal(size=(D, 5)) * (rng.random((D, 5)) < 0.2)  # sparse patterns
    return W, Z, P


def test_orthogonal_words_every_prior_is_exact():
    W, Z, P = _setup(orthogonal=True)
    pri = heavy_reads(W @ W.T, W @ P, Z, HEAVY)
    for name in ("first", "orth", "dual"):
        np.testing.assert_allclose(pri[name], pri["true"], atol=1e-10, err_msg=name)
    np.testing.assert_array_equal(pri["plain"], 0)


def test_priors_against_dense_projections():
    W, Z, P = _setup(orthogonal=False)
    pri = heavy_reads(W @ W.T, W @ P, Z, HEAVY)
    np.testing.assert_allclose(pri["true"], W[HEAVY] @ P)
    for t, i in enumerate(HEAVY):
        others = np.delete(W, i, axis=0)
        # component of A_i orthogonal to the span of the others, by dense least squares
        perp = W[i] - others.T @ np.linalg.lstsq(others.T, W[i], rcond=None)[0]
        np.testing.assert_allclose(pri["orth"][t], perp @ P, rtol=1e-8, atol=1e-10)
        first = W[i] - sum((W[i] @ o) / (o @ o) * o for o in others)
        np.testing.assert_allclose(pri["first"][t], first @ P, rtol=1e-8, atol=1e-10)
        # the dual of the coefficient in the row space of the dense Y = Z W
        x = np.linalg.pinv(Z @ W) @ Z[:, i]
        np.testing.assert_allclose(pri["dual"][t], (x / (x @ x)) @ P, rtol=1e-6, atol=1e-10)


def test_module_errors_zero_with_true_heavy_words_and_no_light_words():
    # one light module whose two columns rest on their own blocks; the rest heavy or zero
    rng = np.random.default_rng(1)
    W = np.zeros((4, 40))
    W[:2] = rng.normal(size=(2, 40))  # heavy, spread everywhere
    W[2, 0:5], W[3, 10:15] = 1.0, 1.0  # the module's spikes (x units: spike read 1)
    g = rng.uniform(1, 2, S)
    x = rng.uniform(0.2, 0.8, (S, 2))
    Z = np.column_stack([rng.uniform(1, 3, (S, 2)), g * x[:, 0], g * x[:, 1]])
    pats = np.zeros((40, 2))
    pats[0:5, 0], pats[10:15, 1] = 1.0, 1.0
    WP = W @ pats
    pri = heavy_reads(W @ W.T, WP, Z, [0, 1])
    out = module_errors(WP, Z, [0, 1], pri, [2, 3], [[0], [1]], np.array([5.0, 5.0]), g, x)
    assert out["true"] == pytest.approx(0, abs=1e-12)
    assert out["light"] == pytest.approx(0, abs=1e-12)
    assert out["plain"] > 0.1  # the heavy words do leak without a prior
