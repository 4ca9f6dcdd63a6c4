"""What :func:`recsketch.network.unmixing.word_vectors` returns for a *constant* coefficient that is
the sum of its descendants' count coefficients (the root's count in a tree whose importance
weights sum to 1), checked against a closed form on planted data (dense NumPy).

Why it matters (docs/unmix.md, round 6): ``learn_network`` removes the root's count word from a
depth-3 block as ``r * word_vectors(YV, r)``. The root count word alone is not in the row space
of the sketches, only the leaves' identifiable words ``A_leaf + 16 A_mid + 256 A_root`` are, so
the dual of the constant is a mix of them: it holds ``share / 16`` of each mid's count word, with
``share = |A_sibling|^2 / (|A_midA|^2 + |A_midB|^2)`` when the leaves' words are short beside
``16 A_mid``. A mid's count read corrected with it is therefore ``g - (g_root / 16) share``,
not ``g`` (measured on the teacher: share 0.26-0.58, within 0.05 of the formula on 8 mids).
"""

import numpy as np

from recsketch.network.unmixing import word_vectors

D, S = 3000, 60
# (name, norm) of exactly orthogonal planted words: the root's count word, the two mids' count
# words, four leaves' count words (two per mid) and three attribute words
NORMS = {"root": 3.0, "midA": 9.0, "midB": 11.0, "lA1": 1.5, "lA2": 2.0, "lB1": 1.0,
         "lB2": 2.5, "x1": 4.0, "x2": 7.0, "x3": 5.0}


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(D, len(NORMS))))[0]
    A = {n: Q[:, i] * v for i, (n, v) in enumerate(NORMS.items())}
    # leaf counts with a constant sum (importance weights summing to 1 at every level)
    leaves = rng.dirichlet(np.ones(4), size=S) * 2.0 ** -13
    c = {"lA1": leaves[:, 0], "lA2": leaves[:, 1], "lB1": leaves[:, 2], "lB2": leaves[:, 3]}
    c["midA"] = 16 * (c["lA1"] + c["lA2"])
    c["midB"] = 16 * (c["lB1"] + c["lB2"])
    c["root"] = 16 * (c["midA"] + c["midB"])
    for n in ("x1", "x2", "x3"):
        c[n] = rng.random(S) * 2.0 ** -6
    Y = sum(np.outer(c[n], A[n]) for n in NORMS)
    return A, c, Y


def test_the_dual_of_a_constant_count_carries_a_share_of_the_mid_count_words():
    A, c, Y = _planted()
    assert np.ptp(c["root"]) < 1e-12 * c["root"][0]  # the root's count is constant
    _, s, Vt = np.linalg.svd(Y, full_matrices=False)
    K = int(np.sum(s > 1e-10 * s[0]))
    assert K == 7  # 10 words, 3 dependencies among the counts
    V = Vt[:K].T
    word = V @ word_vectors(Y @ V, c["root"][:, None])[:, 0]

    # closed form: the identifiable words are W_i = A_leaf_i + 16 A_mid(i) + 256 A_root (the
    # attribute words are orthogonal to them), the dual of the constant r = 256 sum_i l_i is
    # 256 W G^-1 1 with G = W^T W, and the word is that dual over its squared norm
    leaves = ("lA1", "lA2", "lB1", "lB2")
    W = np.stack([A[f] + 16 * A["mid" + f[1]] + 256 * A["root"] for f in leaves], axis=1)
    u = np.linalg.solve(W.T @ W, np.ones(4))
    expected = W @ u / (256 * u.sum())
    assert np.linalg.norm(word - expected) <= 1e-8 * np.linalg.norm(expected)

    # in terms of the true words: all of A_root, and share / 16 of each mid's count word
    share = {"midA": (u[0] + u[1]) / u.sum(), "midB": (u[2] + u[3]) / u.sum()}
    for name, w in (("root", 1.0), ("midA", share["midA"] / 16), ("midB", share["midB"] / 16)):
        assert np.isclose(word @ A[name] / NORMS[name] ** 2, w, rtol=1e-8)
    assert np.isclose(share["midA"] + share["midB"], 1.0)
    # the shares follow the sibling's count-word norm (leaf words short beside 16 A_mid)
    approx = NORMS["midB"] ** 2 / (NORMS["midA"] ** 2 + NORMS["midB"] ** 2)
    assert abs(share["midA"] - approx) < 0.01
    assert share["midA"] > 0.5  # not an even split: the shorter count word takes more

    # so a mid's count read (here: along its own word) with r * word removed is
    # g - (g_root / 16) share, not g
    read = Y @ A["midA"] / NORMS["midA"] ** 2
    corrected = (Y - np.outer(c["root"], word)) @ A["midA"] / NORMS["midA"] ** 2
    assert np.allclose(read, c["midA"], rtol=1e-8)
    assert np.allclose(corrected, c["midA"] - c["root"] / 16 * share["midA"], rtol=1e-6)
    assert np.all(corrected < 0.5 * c["midA"])
