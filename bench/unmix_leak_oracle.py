"""Where the depth-3 attribute error of ``learn_network(method="unmix")`` comes from: an oracle
decomposition of its leak correction against the true word vectors (docs/unmix.md, round 6).

On a fixed tree the sketches are ``Y = C A^T`` (``bench/tree_words.py`` computes the true words
``A``). ``learn_network`` reads a depth-3 column off its decoded blocks and removes the heavier
(depth-2) words' share of each read, with those words taken as the duals of their estimated
coefficients (``unmixing.word_vectors``). This script runs ``learn_network`` once per seed,
records the modules before that correction (and ``V``, ``Y V``), and replaces one ingredient at
a time by the truth:

* **oracle** -- each depth-3 module's criterion (median over samples of the l-inf error of
  ``x``, gain divided out) for: ``learn_network``'s final module (the steadiness choice
  included); the plain reads; the corrected reads of every column; the duals of the *true*
  heavy coefficients; the *true* heavy words with the estimated / true coefficients; every
  other word true ("true words, true c" also removes the root's words of columns the learner
  did not recover). Each with the read gain (as the criterion), the true gain, and the count
  read corrected the same way as the attributes.
* **words** -- the error of candidate heavy-word vectors on the depth-3 blocks, as the error
  they leave in a corrected read (x units, median over samples; median / max over blocks),
  for the root's attribute words and its count word: the duals; the first-order dual with
  respect to the true words (``A_j - sum_i <A_j, A_i> / |A_i|^2 A_i``: what orthogonality of
  the true words alone would give); duals in a per-word weighted metric (rows down-weighted
  where the dual word itself is large); the spike-anchored joint fit
  (``lstsq(V[U], spikes)`` over the rows ``U`` of every decoded block, 0 on the other words'
  blocks, the constant column left out).
* **joint** -- the anchored joint fit's own coefficients, ``C = Y V N (N^T N)^-1`` and a least
  squares on the rows ``U`` with the fitted words' full values.
* **share** -- the dual of a constant coefficient on the sibling count words: the corrected
  count read of a mid is ``g - (g_root / 16) share`` with ``share`` measured on its count
  blocks, against ``|A_sibling|^2 / (|A_A|^2 + |A_B|^2)`` of the true count words.

Truth is read only here, never by the learner. Usage (cached sketches, as
``bench/teacher_unmix.py --cache``):
    PYTHONPATH=python python bench/unmix_leak_oracle.py --seeds 0 1 --cache /path/to/cache
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
import recsketch.network.learn as learn  # noqa: E402
from recsketch.network import NetworkTruth, learn_network  # noqa: E402
from recsketch.network.unmixing import word_vectors  # noqa: E402
from teacher_network import build_teacher  # noqa: E402
from teacher_unmix import cache_path  # noqa: E402
from tree_words import coefficients, tree_words, word_cosines  # noqa: E402

Leak = Callable[[np.ndarray], np.ndarray]


def capture(Y: np.ndarray, sk: rs.Sketcher):
    """``learn_network(method="unmix")`` with its leak correction's inputs recorded: (model,
    modules before the correction, V, Y V, refinement rounds, w0)."""
    seen = {}
    original = learn._correct_leaks

    def hook(Y_, V, YV, modules, rounds, w0):
        seen.update(V=V, YV=YV, before=modules, rounds=rounds, w0=w0)
        return original(Y_, V, YV, modules, rounds, w0)

    learn._correct_leaks = hook
    try:
        model = learn_network(None, Y, sketcher=sk, method="unmix")
    finally:
        learn._correct_leaks = original
    return model, seen["before"], seen["V"], seen["YV"], seen["rounds"], seen["w0"]


def true_words(sk: rs.Sketcher, truth: NetworkTruth):
    """(A, labels, C): the true words scaled like the learner's (a word's spike reads 1 per unit
    coefficient on its blocks: ``tree_words``' word times ``2^(4h-3)``) and their per-sample
    coefficients in the learner's units (``g x_j`` and ``g``, ``g = w 2^-(4h-3)``)."""
    W, labels = tree_words(sk, truth)
    f = np.array([2.0 ** (4 * truth.depths[n] - 3) for n, _ in labels])
    return W * f[:, None], labels, coefficients(truth, labels) / f[None, :]


def crit(c: np.ndarray, g: np.ndarray, x: np.ndarray) -> float:
    """Median over samples of the l-inf error of ``max(c, 0) / g`` against ``x``."""
    safe = np.where(g > 0, g, np.inf)
    return float(np.median(np.abs(np.maximum(c, 0) / safe[:, None] - x).max(axis=1)))


def rows_leak(vectors: np.ndarray, C: np.ndarray) -> Leak:
    """The share ``C @ vectors[:, rows]`` of given d-vectors on any rows."""
    return lambda rows: C @ vectors[:, rows]


def basis_leak(V: np.ndarray, N: np.ndarray, C: np.ndarray) -> Leak:
    """The same for words in basis coordinates (``V N``)."""
    return lambda rows: C @ (V[rows] @ N).T


def gls_word_vectors(YV: np.ndarray, C: np.ndarray, V: np.ndarray, q: float = 0.5
                     ) -> np.ndarray:
    """Duals in a per-word weighted metric: the dual word ``x`` of each coefficient, then
    ``n = G^-1 m / (m^T G^-1 m)`` with ``G = V^T diag(w) V`` and ``w = 1 / max(x^2, its q-th
    quantile)`` (``m`` the dual row). Exact when the words are orthogonal in that metric."""
    M = np.linalg.lstsq(YV, C, rcond=None)[0]
    out = np.empty_like(M)
    for t in range(M.shape[1]):
        x = V @ (M[:, t] / (M[:, t] @ M[:, t]))
        w = 1.0 / np.maximum(x * x, np.quantile(x * x, q))
        sol = np.linalg.solve(V.T @ (V * w[:, None]), M[:, t])
        out[:, t] = sol / (M[:, t] @ sol)
    return out


def columns_of(m) -> List[Tuple[object, int, Tuple[str, int, int]]]:
    """(matrix, column position, key) of a module's attribute columns and count column."""
    out = [(m.attribute_matrix, k, ("a", m.id, int(j))) for k, j in enumerate(m.columns)]
    if m.count_matrix is not None:
        out.append((m.count_matrix, 0, ("g", m.id, 0)))
    return out


def plain_coefficients(m) -> np.ndarray:
    c = [m.attributes[:, k] * m.gains for k in range(m.columns.size)]
    if m.count_matrix is not None:
        c.append(m.gains)
    return np.stack(c, axis=1)


def analyse(seed: int, S: int, cache: Path, d0: int, q0: float) -> None:
    d, b, q = rs.suggest_block_sparse(d0, q0)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
    graphs = build_teacher("deep", S, seed)[1]
    truth = NetworkTruth.from_graphs(sk, graphs)
    Y = np.load(cache_path(cache, d, b, q, S, seed), mmap_mode="r")
    model, before, V, YV, rounds, w0 = capture(np.asarray(Y), sk)
    names = dataclasses.replace(model, garbage=[]).report(truth).names
    A, labels, Ct = true_words(sk, truth)
    li = {lab: i for i, lab in enumerate(labels)}
    scale = before[0].attribute_matrix.scale
    root = [n for n, h in truth.depths.items() if h == 2][0]
    heavy = [li[(root, j)] for j in range(truth.attributes[root].shape[1] + 1)]
    mods3 = [m for m in before if m.depth == 3 and names.get(m.id)]
    hm = [m for m in before if m.depth == 2 and names.get(m.id) == root]
    print(f"== seed {seed} (S = {S}): depth-3 modules "
          + ", ".join(f"{names[m.id]} cols {m.columns.tolist()}"
                      f"{' + count' if m.count_matrix is not None else ''}" for m in mods3),
          flush=True)
    if not hm or hm[0].count_matrix is None:
        print("   the root's count column was not recovered: skipped")
        return
    hm = hm[0]
    print("   true words: " + word_cosines(A, labels, truth), flush=True)
    est_idx = [li[(root, int(j))] for j in hm.columns] + [heavy[-1]]
    C_est = plain_coefficients(hm)

    # -- oracle --------------------------------------------------------------------------
    others = {m.id: [i for i, (n, _) in enumerate(labels) if n != names[m.id]] for m in mods3}
    leaks: Dict[str, Callable[[object], Leak]] = {
        "today": lambda m: basis_leak(V, word_vectors(YV, C_est), C_est),
        "dual true c": lambda m: basis_leak(V, word_vectors(YV, Ct[:, est_idx]),
                                            Ct[:, est_idx]),
        "true words, est c": lambda m: rows_leak(A[est_idx], C_est),
        "true words, true c": lambda m: rows_leak(A[heavy], Ct[:, heavy]),
        "all others true": lambda m: rows_leak(A[others[m.id]], Ct[:, others[m.id]]),
    }
    print("   oracle (l-inf: read gain / true gain / count corrected alike):")
    for m in mods3:
        n = names[m.id]
        x = truth.attributes[n][:, m.columns]
        gt = Ct[:, li[(n, truth.attributes[n].shape[1])]]
        c0 = m.attributes * m.gains[:, None]
        fin = [f for f in model.modules if f.id == m.id][0]
        cf = fin.attributes * fin.gains[:, None]
        line = (f"     {n}: learn_network {crit(cf, fin.gains, x):.3f} / {crit(cf, gt, x):.3f}"
                f" | plain {crit(c0, m.gains, x):.3f} / {crit(c0, gt, x):.3f}")
        for lab, make in leaks.items():
            leak = make(m)
            mm = learn._reread(Y, m, leak, rounds, w0)
            c = mm.attributes * mm.gains[:, None]
            if m.count_matrix is not None:
                g = learn._refine(Y, [m.count_matrix], None, rounds, leak=leak)[:, 0]
                gc = f"{crit(c, g, x):.3f} (g/g_true {np.median(g / gt):.2f})"
            else:
                gc = "-"
            line += f" | {lab} {crit(c, mm.gains, x):.3f} / {crit(c, gt, x):.3f} / {gc}"
        print(line, flush=True)

    # -- heavy words on the depth-3 blocks -------------------------------------------------
    blocks = []  # (light label index, block, pattern)
    for m in mods3:
        n = names[m.id]
        dim = truth.attributes[n].shape[1]
        for mat, k, key in columns_of(m):
            j = key[2] if key[0] == "a" else dim
            for blk, pat in zip(mat.blocks[k], mat.patterns[k]):
                blocks.append((li[(n, j)], int(blk), pat.astype(np.float64)))

    def reads(values: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.array([values(blk * b + np.arange(b)) @ p / (b * scale)
                         for _, blk, p in blocks]).T  # (words, blocks)

    hv = est_idx  # the root's recovered columns and its count, in the learner's order
    truth_reads = reads(lambda r: A[hv][:, r])
    live = np.flatnonzero(np.linalg.norm(A, axis=1) > 0)
    Nt = V.T @ A[live].T
    Gt = Nt.T @ Nt
    pos = {int(i): t for t, i in enumerate(live)}
    first_order = np.stack([Nt[:, pos[j]] - sum(Gt[pos[j], u] / Gt[u, u] * Nt[:, u]
                                                 for u in range(live.size) if u != pos[j])
                            for j in hv], axis=1)
    cands = {"duals": word_vectors(YV, Ct[:, hv]),
             "1st-order orthogonal true words": first_order,
             "weighted duals": gls_word_vectors(YV, Ct[:, hv], V)}
    # the spike-anchored joint fit over every decoded block (constant columns left out)
    mods = [m for m in before if m.depth in (2, 3)]
    cols = [c for m in mods for c in columns_of(m)]
    Cdec = np.hstack([plain_coefficients(m) for m in mods])
    sel = [i for i in range(Cdec.shape[1]) if Cdec[:, i].std() > 1e-3 * abs(Cdec[:, i].mean())]
    urows, targets = [], []
    for w, i in enumerate(sel):
        mat, k, _ = cols[i]
        for blk, pat in zip(mat.blocks[k], mat.patterns[k]):
            urows.append(int(blk) * b + np.arange(b))
            t = np.zeros((b, len(sel)))
            t[:, w] = pat * scale
            targets.append(t)
    U, T = np.concatenate(urows), np.vstack(targets)
    N = np.linalg.lstsq(V[U], T, rcond=None)[0]
    key_of = [cols[i][2] for i in sel]
    root_keys = [("a", hm.id, int(j)) for j in hm.columns]
    if all(k in key_of for k in root_keys):
        # the constant (root count) column is not in the fit: its word is taken as the duals'
        anch = np.column_stack([N[:, key_of.index(k)] for k in root_keys]
                               + [cands["duals"][:, -1]])
        cands["anchored joint fit"] = anch
    print("   heavy words on the depth-3 blocks (x-units error; attribute words | count word;"
          " median / max over blocks):")
    for lab, Nw in cands.items():
        est = reads(lambda r: (V[r] @ Nw).T)
        ea, ec = [], []
        for t, (k, _, _) in enumerate(blocks):
            g = Ct[:, [i for i, (nm, j) in enumerate(labels)
                       if nm == labels[k][0] and j == truth.attributes[nm].shape[1]][0]]
            ea.append(abs(np.median(Ct[:, hv[:-1]] @ (est[:-1, t] - truth_reads[:-1, t]) / g)))
            ec.append(abs(np.median(Ct[:, hv[-1]] * (est[-1, t] - truth_reads[-1, t]) / g)))
        print(f"     {lab:32s} {np.median(ea):.3f} / {np.max(ea):.3f} | "
              f"{np.median(ec):.3f} / {np.max(ec):.3f}", flush=True)

    # -- the anchored joint fit's coefficients --------------------------------------------
    Cj = YV @ N @ np.linalg.inv(N.T @ N)
    Wu = V[U] @ N
    Cr = np.linalg.lstsq(Wu, np.asarray(Y[:, U], dtype=np.float64).T, rcond=None)[0].T
    line = (f"   anchored joint fit (|V[U] N - spikes| / |spikes| = "
            f"{np.linalg.norm(Wu - T) / np.linalg.norm(T):.2f}), l-inf read gain / g/g_true:")
    for lab, Cx in (("C = YV N (N^T N)^-1", Cj), ("rows U", Cr)):
        line += f" {lab}:"
        for m in mods3:
            n = names[m.id]
            akeys = [("a", m.id, int(j)) for j in m.columns]
            if any(k not in key_of for k in akeys):
                line += f" {n} -"
                continue
            ca = np.stack([Cx[:, key_of.index(k)] for k in akeys], axis=1)
            gk = ("g", m.id, 0)
            g = Cx[:, key_of.index(gk)] if gk in key_of else np.linalg.norm(ca, axis=1)
            gt = Ct[:, li[(n, truth.attributes[n].shape[1])]]
            line += (f" {n} {crit(ca, g, truth.attributes[n][:, m.columns]):.3f}"
                     f" ({np.median(g / gt):.2f})")
    print(line, flush=True)

    # -- the dual of the constant on the sibling count words ------------------------------
    dual_r = word_vectors(YV, Ct[:, heavy])[:, -1]  # the root count (constant) column's
    shares = {}
    for m in mods3:
        if m.count_matrix is None:
            continue
        n = names[m.id]
        rows = [int(blk) * b + np.arange(b) for blk in m.count_matrix.blocks[0]]
        dev = [(V[r] @ dual_r - A[heavy[-1]][r]) @ p / (b * scale)
               for r, p in zip(rows, m.count_matrix.patterns[0])]
        shares[n] = 16 * float(np.mean(dev))
    mids = [n for n, h in truth.depths.items() if h == 3]
    norms = {n: float(np.sum(A[li[(n, truth.attributes[n].shape[1])]] ** 2)) for n in mids}
    formula = {n: sum(v for o, v in norms.items() if o != n) / sum(norms.values()) for n in mids}
    if shares:
        print("   share of the constant's dual on each mid's count word, measured vs "
              "|A_sibling|^2 / (|A_A|^2 + |A_B|^2): "
              + ", ".join(f"{n} {v:.3f} vs {formula[n]:.3f}" for n, v in shares.items()),
              flush=True)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=524262)
    ap.add_argument("--q", type=float, default=4e-4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cache", type=Path, required=True,
                    help="directory of the sketches (bench/teacher_unmix.py's cache layout)")
    args = ap.parse_args()
    for seed in args.seeds:
        analyse(seed, args.samples, args.cache, args.d, args.q)


if __name__ == "__main__":
    _main()
