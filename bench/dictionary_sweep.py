"""Where recursable dictionary learning works: recovery rate of planted dictionaries as the
density q, the number of heavy coefficients per sample K, the noise and d vary (the first
empirical version of the paper's Theorem 4). Writes a table and docs/dictionary_recovery.png.

Planted model (Theorem 4): y = [R_1 .. R_N] x + z, R_k ~ D(b, q, d), N = 3, K coefficients per
sample with |x| in [0.3, 1] and random signs, z Gaussian. A column counts as recovered when its
signs and support are within Hamming distance 0.2 q d of the truth (MATH.md §6 item 4).
Usage: python bench/dictionary_sweep.py [--quick]
"""

import sys
import time
from pathlib import Path

import numpy as np

import recsketch as rs
from recsketch.dictionary import DictionaryLearner

N = 3


def run(d, b, q, k, noise, samples=300, seed=0, rule="aggregate"):
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 11)
    mats = [sk.module_matrix(f"M{m}", 0) for m in range(N)]
    rng = np.random.default_rng(seed)
    cols = np.stack([rng.choice(N * d, k, replace=False) for _ in range(samples)])
    vals = rng.uniform(0.3, 1.0, cols.shape) * rng.choice([-1, 1], cols.shape)
    Y = rng.normal(0, noise, (samples, d))
    for m, R in enumerate(mats):
        X = np.zeros((samples, d))
        hit = cols // d == m
        rows = np.nonzero(hit)[0]
        X[rows, cols[hit] % d] = vals[hit]
        Y += R.matvec(X)
    t0 = time.perf_counter()
    learner = DictionaryLearner(d, b, q, rule=rule).fit(Y)
    learner.matrices_  # the model is assembled lazily
    fit_s = time.perf_counter() - t0
    sigs = [R._native.signature() for R in mats]
    sigs = [s * s[0] for s in sigs]
    essential = {(c // d, c % d) for c in np.unique(cols)}
    recovered = wrong = spurious = 0
    for mat in learner.matrices_:
        match = [m for m in range(N) if np.array_equal(sigs[m], mat.signature)]
        if len(match) != 1:
            spurious += 1
            continue
        m = match[0]
        if mat.columns.size == 0:
            continue
        E = np.zeros((mat.columns.size, d))
        E[np.arange(mat.columns.size), mat.columns] = 1.0
        true = mats[m].matvec(E)                         # rows: the true columns
        got = mat.to_scipy()[:, mat.columns].toarray().T
        ham = np.sum(np.sign(got) != np.sign(np.round(true, 12)), axis=1)
        ok = ham <= 0.2 * q * d
        recovered += sum((m, int(j)) in essential for j in mat.columns[ok])
        wrong += int(np.sum(~ok))
    return {"rate": recovered / len(essential), "wrong": wrong, "spurious": spurious,
            "fit_s": fit_s}


def main(quick=False):
    samples = 150 if quick else 300
    rows = []
    print("| d | b | q | K | noise | rule | recovered | incomplete | spurious | fit (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def record(d, b, q, k, noise, rule):
        r = run(d, b, q, k, noise, samples=samples, rule=rule)
        rows.append((d, b, q, k, noise, rule, r))
        print(f"| {d} | {b} | {q} | {k} | {noise} | {rule} | {r['rate']:.0%} | {r['wrong']} | "
              f"{r['spurious']} | {r['fit_s']:.2f} |", flush=True)
        return r

    qs = [0.05, 0.1, 0.25, 0.5]
    ks = [1, 2, 4]
    panel_a = {(rule, k): [record(4095, 45, q, k, 0.002, rule)["rate"] for q in qs]
               for rule in ("aggregate", "paper") for k in ks}
    # Noise relative to the smallest nonzero entry 0.3 / sqrt(d q): the hypercube test sees
    # entries, so the curves of different d should fall on each other.
    ratios = [0.05, 0.1, 0.2, 0.3, 0.5]
    sizes = [(1008, 42, 0.25), (4095, 45, 0.25), (16371, 51, 0.25)]
    panel_b = {d: [record(d, b, q, 1, round(r * 0.3 / np.sqrt(d * q), 6), "aggregate")["rate"]
                   for r in ratios]
               for d, b, q in sizes}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for (rule, k), rates in panel_a.items():
        ax1.plot(qs, rates, "o-" if rule == "aggregate" else "s--", label=f"K={k}, {rule}")
    ax1.set_xscale("log")
    ax1.set_xlabel("block density q")
    ax1.set_ylabel("planted columns recovered")
    ax1.set_title("d = 4095, noise 0.002")
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(fontsize=7)
    for d, rates in panel_b.items():
        ax2.plot(ratios, rates, "o-", label=f"d = {d}")
    ax2.set_xlabel("noise sd / smallest entry 0.3/sqrt(dq)")
    ax2.set_title("K = 1, q = 0.25, aggregate rule")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    out = Path(__file__).resolve().parent.parent / "docs" / "dictionary_recovery.png"
    fig.savefig(out, dpi=100)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
