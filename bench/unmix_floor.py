"""The information floor of the depth-3 l-inf criterion of issue 13, from the true words alone
(docs/unmix.md, round 9).

On a fixed tree the sketches are ``Y = Z W`` (``bench/tree_words.py``: K = 31 words ``W``, per-
sample coefficients ``Z``). ``learn_network(method="unmix")`` reads a depth-3 column ``(M, j)``
on the spike pattern ``p = R[M,1] e_j`` and removes the heavy (depth-2: the root's attribute and
count) words' share of the read with *estimated* heavy words. ``Y`` is unchanged by
``Z -> Z T, W -> T^-1 W``; the decoded spikes fix only ``T``'s diagonal, so the heavy words'
values on a depth-3 pattern are not observable: every rule assumes something about them. This
script scores those assumptions with everything else exact (true coefficients, true gains, no
learner run), per depth-3 module: the median over samples of the l-inf error over the module's
attribute columns of ``max(r, 0) / g_M`` against ``x``, ``g_M`` the true gain (path weight), with
the read ``r = (Z W p)_corrected / (2^-(4h-3) |p|^2)`` (the nominal spike, as the learner divides):

* ``plain`` -- nothing removed (the zero-leak prior);
* ``first`` -- heavy words removed as ``A_i - sum_k <A_i, A_k> / |A_k|^2 A_k`` (k over the other
  live words): the first-order orthogonal prior, round 6's "first-order orthogonal true words";
* ``orth`` -- heavy words removed as their component orthogonal to the span of all other words;
* ``dual`` -- heavy words removed as the duals of their *true* coefficients in the row space of
  ``Y`` (``pinv(Y) c_i / |pinv(Y) c_i|^2``, ``unmixing.word_vectors`` with the true ``C``; differs
  from ``orth`` because the count coefficients are linearly dependent): round 6's "duals, true c";
* ``true`` -- heavy words removed exactly (the floor left by the light words: the module's own
  other words, its sibling's, the leaves');
* ``light`` -- every word but the read column's own removed exactly (its own diffuse part only);
* each also ``+norm``: normalised per sample to the true norm of the module's attributes on its
  read columns instead of divided by the true gain.

Everything is computed in the K-dim word space: only ``G = W W^T`` and ``W p`` for the depth-3
patterns are needed. Truth is read here only, never by the library.

Usage (one JSON line per seed, appended to --out; then the summary of any such logs):
    python bench/unmix_floor.py --d 524262 --seeds $(seq 0 17) --out floor.jsonl --errors err/
    python bench/unmix_floor.py --summary floor.jsonl [--errors err/ --min-blocks 2]
About 10-30 s per seed at d = 524,262 and 4.5-6 min at d = 2,097,150 (the words dominate).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
from recsketch.network import NetworkTruth  # noqa: E402
from recsketch.network.unmixing import screen_blocks  # noqa: E402

ESTIMATORS = tuple(p + r + n for n in ("", "+norm") for r in ("", "/pick", "/screen")
                   for p in ("plain", "first", "orth", "dual", "true", "light")) + (
                       "steady", "steady+norm")


def heavy_reads(G: np.ndarray, WP: np.ndarray, Z: np.ndarray, heavy: Sequence[int]
                ) -> Dict[str, np.ndarray]:
    """Each prior's values of the heavy words on the patterns, ``(len(heavy), P)``, from the
    Gram matrix ``G (K, K)`` of the true words, their reads ``WP = W p`` ``(K, P)`` and the
    coefficients ``Z (S, K)`` (for the duals). Zero words are left out of the projections."""
    K = G.shape[0]
    live = np.flatnonzero(np.diag(G) > 0)
    out = {"plain": np.zeros((len(heavy), WP.shape[1])), "true": WP[list(heavy)]}
    first, orth = [], []
    for i in heavy:
        o = np.array([k for k in live if k != i], dtype=int)
        first.append(WP[i] - (G[i, o] / np.diag(G)[o]) @ WP[o])
        orth.append(WP[i] - np.linalg.solve(G[np.ix_(o, o)], G[o, i]) @ WP[o])
    out["first"], out["orth"] = np.array(first), np.array(orth)
    # duals: x_i = pinv(Y) c_i in the row space; with W_live = L U (U orthonormal rows),
    # Y = (Z L) U, so x_i = U^T a_i with a_i = pinv(Z L) c_i, |x_i| = |a_i|, x_i . p = a_i . L^-1 W p
    L = np.linalg.cholesky(G[np.ix_(live, live)])
    a = np.linalg.lstsq(Z[:, live] @ L, Z[:, list(heavy)], rcond=None)[0]  # (live, H)
    Up = np.linalg.solve(L, WP[live])  # (live, P)
    out["dual"] = (a.T @ Up) / np.sum(a * a, axis=0)[:, None]
    assert out["dual"].shape == (len(heavy), WP.shape[1]) and K >= len(live)
    return out


def module_errors(WP: np.ndarray, Z: np.ndarray, heavy: Sequence[int],
                  priors: Dict[str, np.ndarray], own: Sequence[int],
                  blocks: Sequence[Sequence[int]], spike: np.ndarray, g: np.ndarray,
                  x: np.ndarray, errors: Optional[Dict[str, np.ndarray]] = None
                  ) -> Dict[str, float]:
    """Criterion per prior and read rule for one module. Column ``t`` of the module (word
    ``own[t]``, true attributes ``x[:, t]``) rests on the pattern blocks ``blocks[t]`` (columns
    of ``WP`` and of the priors), each with its nominal spike read ``spike[blk] = 2^-(4h-3)
    |p_blk|^2``; ``g (S,)`` the true gain. Read rules: ``mean`` -- all of the column's blocks
    pooled (the matched filter); ``pick`` -- the one block whose ``read / g`` varies least over
    samples (the learner's two-block rule, ``learn._two_block_columns``, with the true gain);
    ``screen`` -- as the learner reads a column: with three or more blocks those that
    :func:`~recsketch.network.unmixing.screen_blocks` keeps, pooled; with two, ``pick``.
    Also ``steady``: per column the pooled plain or dual read, whichever ``read / g`` varies
    less over samples (the learner's ``_steadier`` choice, with the true gain). Each case is
    scored twice: divided by the true gain, and (``+norm``) normalised per sample to the true
    norm of ``x`` on the module's columns, ``r |x|_2 / |r|_2`` (the learner divides by the
    reads' norm or the count read, which cancels an error common to a sample's columns; here
    with the true share, so it is the best such normalisation). ``errors``: if given, filled
    with each case's per-sample, per-column errors ``(S, cols)``."""
    out = {}
    full = Z @ WP  # (S, blocks): every word's read
    H = list(heavy)
    own_only = np.stack([Z[:, own[t]] * WP[own[t], blk] for t, bl in enumerate(blocks)
                         for blk in bl], axis=1)
    order = [blk for bl in blocks for blk in bl]
    own_only_full = np.zeros_like(full)
    own_only_full[:, order] = own_only
    cases = {name: full - Z[:, H] @ Hv for name, Hv in priors.items()}
    cases["light"] = own_only_full
    reads = {}
    for name, num in cases.items():
        for rule in ("mean", "pick", "screen"):
            r = np.empty((Z.shape[0], len(blocks)))
            for t, bl in enumerate(blocks):
                bl = np.asarray(bl)
                per = num[:, bl] / spike[bl]
                if rule == "screen" and len(bl) >= 3:
                    bl = bl[screen_blocks(per.T)]
                if rule == "mean" or len(bl) != 2 and rule == "screen" or len(bl) == 1:
                    r[:, t] = num[:, bl].sum(axis=1) / spike[bl].sum()
                else:
                    per = num[:, bl] / spike[bl]
                    r[:, t] = per[:, int(np.argmin(np.std(per / g[:, None], axis=0)))]
            reads[name if rule == "mean" else f"{name}/{rule}"] = r
    steady = np.std(reads["plain"] / g[:, None], axis=0) < np.std(reads["dual"] / g[:, None],
                                                                 axis=0)
    reads["steady"] = np.where(steady, reads["plain"], reads["dual"])
    share = np.linalg.norm(x, axis=1)  # the true share of the unit norm on these columns
    for key, r in list(reads.items()):
        pos = np.maximum(r, 0)
        norm = np.linalg.norm(pos, axis=1)
        for name, est in ((key, pos / g[:, None]),
                          (key + "+norm", pos * (share / np.where(norm > 0, norm, 1.0))[:, None])):
            err = np.abs(est - x)
            out[name] = float(np.median(err.max(axis=1)))
            if errors is not None:
                errors[name] = err
    return out


def seed_floor(d0: int, q0: float, samples: int, seed: int, num_threads=None,
               errors: Optional[Path] = None) -> dict:
    """The criterion of every depth-3 module of the deep teacher's ``seed`` under each prior;
    ``errors``: a directory for the per-sample, per-column errors (an ``.npz`` per seed, keys
    ``module:case``), to score any subset of the columns afterwards."""
    from teacher_network import build_teacher
    from tree_words import coefficients, tree_words

    t0 = time.perf_counter()
    d, b, q = rs.suggest_block_sparse(d0, q0)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
    truth = NetworkTruth.from_graphs(sk, build_teacher("deep", samples, seed)[1])
    W, labels = tree_words(sk, truth, num_threads=num_threads)
    t_words = time.perf_counter() - t0
    Z = coefficients(truth, labels)
    li = {lab: i for i, lab in enumerate(labels)}
    heavy = [i for i, (n, _) in enumerate(labels) if truth.depths[n] <= 2]
    mods = sorted(n for n, h in truth.depths.items() if h == 3)
    pats, own, spike, where = [], [], [], {}
    for n in mods:
        attr: List[int] = []
        cols: List[List[int]] = []
        dim = truth.attributes[n].shape[1]
        R = sk.module_matrix(n, 1).apply_short(np.eye(dim), num_threads=num_threads)
        for j in range(dim):
            nz = np.flatnonzero(R[j])
            if nz.size == 0:  # a column without blocks: no read at all (nor for the learner)
                continue
            cols.append([])
            for blk in np.unique(nz // b):
                rows = nz[nz // b == blk]
                cols[-1].append(len(pats))
                pats.append((rows, R[j, rows]))
                spike.append(2.0 ** -(4 * truth.depths[n] - 3) * float(R[j, rows] @ R[j, rows]))
            own.append(li[(n, j)])
            attr.append(j)
        where[n] = (cols, attr, own[len(own) - len(attr):])
    WP = np.stack([W[:, nz] @ v for nz, v in pats], axis=1)
    G = W @ W.T
    del W
    spike = np.array(spike)
    priors = heavy_reads(G, WP, Z, heavy)
    norms = np.sqrt(np.diag(G))
    light = [li[(n, j)] for n in mods for j in range(truth.attributes[n].shape[1] + 1)]
    cos = np.abs(G[np.ix_(heavy, light)]) / np.maximum(np.outer(norms[heavy], norms[light]),
                                                         1e-300)
    res = {"d": d, "b": b, "q": q, "samples": samples, "seed": seed, "modules": {},
           "words_s": round(t_words, 1), "cos_median": float(np.median(cos)),
           "cos_max": float(cos.max()),
           # the own word's full read over its nominal spike (1 + its diffuse part on p)
           "own_over_spike": [float(WP[o, bl].sum() / spike[bl].sum()) for n in mods
                              for o, bl in zip(where[n][2], where[n][0])]}
    saved: Dict[str, np.ndarray] = {}
    for n in mods:
        cols, attr, mine = where[n]
        errs: Dict[str, np.ndarray] = {}
        res["modules"][n] = module_errors(WP, Z, heavy, priors, mine, cols, spike,
                                          truth.path_weights[n], truth.attributes[n][:, attr],
                                          errs)
        saved.update({f"{n}:{k}": v for k, v in errs.items()})
        res["modules"][n]["columns"] = attr
        res["modules"][n]["blocks"] = [len(c) for c in cols]
    if errors is not None:
        errors.mkdir(parents=True, exist_ok=True)
        np.savez(errors / f"floor-d{d}-S{samples}-seed{seed}.npz", **saved)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    return res


def worst_module(row: dict, case: str, errors: Optional[Path] = None, min_blocks: int = 1
                 ) -> Optional[float]:
    """The seed's worst depth-3 module under ``case``; with ``min_blocks > 1`` only over the
    columns with that many pattern blocks (from the per-column errors in ``errors``); None when
    the case was not measured for this row."""
    if case not in next(iter(row["modules"].values())):
        return None
    if min_blocks <= 1:
        return max(m[case] for m in row["modules"].values())
    z = np.load(Path(errors) / f"floor-d{row['d']}-S{row['samples']}-seed{row['seed']}.npz")
    vals = []
    for n, m in row["modules"].items():
        keep = np.array(m["blocks"]) >= min_blocks
        if keep.any():
            vals.append(float(np.median(z[f"{n}:{case}"][:, keep].max(axis=1))))
    return max(vals) if vals else None


def summary(paths: Sequence[Path], threshold: float = 0.1, errors: Optional[Path] = None,
            min_blocks: int = 1, cases: Sequence[str] = ESTIMATORS) -> str:
    """Per d: seeds, the fraction with both depth-3 modules <= threshold, median and 90% quantile
    of the seed's worst module, per case; then the log-log fit of those over d. A later line
    of the same (d, seed) replaces an earlier one."""
    rows: Dict[int, Dict[int, dict]] = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                rows.setdefault(r["d"], {})[r["seed"]] = r
    out = [f"columns with >= {min_blocks} blocks",
           f"| d | seeds | case | both <= {threshold} | worst module median | 90% quantile | max |",
           "|---|---|---|---|---|---|---|"]
    stats: Dict[str, List[tuple]] = {e: [] for e in cases}
    for d in sorted(rows):
        for e in cases:
            worst = np.array([w for w in (worst_module(r, e, errors, min_blocks)
                                          for r in rows[d].values()) if w is not None])
            if worst.size == 0:
                continue
            med, q90 = np.median(worst), np.quantile(worst, 0.9)
            stats[e].append((d, med, q90))
            out.append(f"| {d:,} | {len(worst)} | {e} | {np.mean(worst <= threshold):.2f} "
                       f"({int(np.sum(worst <= threshold))}/{len(worst)}) | {med:.3f} | "
                       f"{q90:.3f} | {worst.max():.3f} |")
    out.append("")
    for e in cases:
        pts = stats[e]
        if len(pts) < 2:
            continue
        ld = np.log([p[0] for p in pts])
        for k, lab in ((1, "median"), (2, "q90")):
            slope, icpt = np.polyfit(ld, np.log([p[k] for p in pts]), 1)
            need = np.exp((np.log(threshold) - icpt) / slope) if slope < 0 else np.inf
            out.append(f"{e:11s} {lab:6s}: worst ~ d^{slope:+.2f}; {threshold} at d ~ {need:,.0f}")
    return "\n".join(out)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=524262)
    ap.add_argument("--q", type=float, default=4e-4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, help="append one JSON line per seed")
    ap.add_argument("--errors", type=Path, help="directory for per-sample, per-column errors")
    ap.add_argument("--summary", type=Path, nargs="+", help="summarise these logs and exit")
    ap.add_argument("--min-blocks", type=int, default=1,
                    help="summary over the columns with at least this many blocks (needs --errors)")
    ap.add_argument("--cases", nargs="+", default=list(ESTIMATORS))
    args = ap.parse_args()
    if args.summary:
        print(summary(args.summary, errors=args.errors, min_blocks=args.min_blocks,
                      cases=args.cases))
        return
    for seed in args.seeds:
        res = seed_floor(args.d, args.q, args.samples, seed, args.threads, args.errors)
        line = json.dumps(res)
        print(f"seed {seed} d {res['d']}: " + "; ".join(
            f"{n} {m['columns']} " + " ".join(f"{e} {m[e]:.3f}" for e in ESTIMATORS)
            for n, m in res["modules"].items())
            + f" | |cos| {res['cos_median']:.4f}/{res['cos_max']:.4f}, words {res['words_s']} s",
            flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    _main()
