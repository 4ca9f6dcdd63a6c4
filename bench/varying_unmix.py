"""Unmixing on a graph that varies with the input, beside its fixed-tree twin (issue 13).

The teacher is ``varying_teacher`` of ``bench/teacher_unmix.py``: root <- two of three mids
(midA, midB, midC), chosen per input, in either order; its twin (``fixed=True``) has the same
maps and weights with root <- (midA, midB) for every input. Depths 2 (root, 8 attributes) and 3
(mids, 4 attributes). Both are sketched with the same Sketcher and measured the same way:

* ``K`` (the rank :func:`~recsketch.network.unmixing.sketch_basis` chooses) against the rank of
  the true coefficient matrix ``C`` (its singular values above the same floor,
  :func:`~recsketch.network.unmixing.choose_rank`): one column per word, i.e. per (module,
  input position, attribute coordinate or count), ``g x_j`` or ``g`` in each sample (0 where
  absent); a word is a fixed vector only for a fixed (module, position), so a mid seen at two
  positions has two sets of words;
* per depth, the essential columns' nonzero blocks (``x_j``'s 90% quantile >= 0.2 over the
  samples holding the module, and the count column) decoded right by the unmixed block scan,
  and the noise ratios of ``bench/teacher_unmix.py``: ``r unmix`` of the block's top singular
  vector of the basis, ``r sample`` per sample (first 40 samples holding the module);
* per depth, the columns ``learn_network`` recovers with exactly the true signs on their
  decoded rows (in modules or garbage), per method (``sample``, ``unmix``).

``--tuple-sampling k``: the varying teacher sketched with footnote 2's sampled tuples instead,
and the columns ``learn_network`` recovers from them.

Usage: PYTHONPATH=python python bench/varying_unmix.py [--d 262143] [--q 5e-4] [--samples 200]
       [--cache DIR] [--tuple-sampling K]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
from recsketch.network import learn_network  # noqa: E402
from recsketch.network.unmixing import block_directions, choose_rank, sketch_basis  # noqa: E402
from teacher_unmix import _true_signs, varying_teacher  # noqa: E402

DEPTH = {"root": 2, "midA": 3, "midB": 3, "midC": 3}


def placements(graphs: List[rs.Graph]) -> Dict[str, List[Tuple[int, float, int, np.ndarray]]]:
    """Per module: (sample, gain g of its identity word, input position, attributes) for every
    sample holding it. g = (path weight) 2^-(4h - 3)."""
    out: Dict[str, List[Tuple[int, float, int, np.ndarray]]] = {m: [] for m in DEPTH}
    for s, g in enumerate(graphs):
        root = g.output[0][0]
        out["root"].append((s, 2.0 ** -5, 1, g.attributes(root)))
        for pos, (c, w) in enumerate(g.inputs(root), start=1):
            out[c.module].append((s, w * 2.0 ** -9, pos, g.attributes(c)))
    return out


def coefficient_rank(pl: Dict[str, list], S: int) -> Tuple[int, int]:
    """(rank of the true coefficient matrix, number of words): one column per (module,
    position, coordinate or count)."""
    cols: Dict[Tuple[str, int, int], np.ndarray] = {}
    for m, rows in pl.items():
        for s, g, pos, x in rows:
            for j, v in enumerate(np.append(x, 1.0)):
                cols.setdefault((m, pos, j), np.zeros(S))[s] = g * v
    C = np.array(list(cols.values())).T
    # every word P R e_j has norm ~1, so Y = C A^T has about C's singular values: count them
    # with the rank floor unmixing uses
    return choose_rank(np.linalg.svd(C, compute_uv=False)), C.shape[1]


def essential(pl: Dict[str, list]) -> Dict[str, List[Tuple[int, int]]]:
    out = {}
    for m, rows in pl.items():
        if not rows:
            continue
        X = np.array([x for _, _, _, x in rows])
        out[m] = [(1, int(j)) for j in np.flatnonzero(np.quantile(X, 0.9, axis=0) >= 0.2)]
        out[m].append((2, 0))
    return out


def found_columns(model, sk: rs.Sketcher, dims: Dict[str, int]) -> set:
    """(module, k, column) recovered with exactly the true blocks and signs, anywhere (in a
    module or in garbage); ``dims``: attribute length of every true module."""
    d, b = sk.d_sketch, sk.block_size
    mats = [m.attribute_matrix for m in model.modules]
    mats += [m.count_matrix for m in model.modules if m.count_matrix is not None]
    mats += [g for g, _ in model.garbage]
    found = set()
    for mat in mats:
        for name, dim in dims.items():
            for k, width in ((1, dim), (2, 1)):
                for c, j in enumerate(mat.columns):
                    if j >= width:
                        continue
                    want = _true_signs(sk.module_matrix(name, k), int(j), d, b)
                    got = dict(zip(mat.blocks[c].tolist(), mat.patterns[c]))
                    if set(got) == set(want) and all(np.array_equal(got[x], want[x])
                                                      for x in got):
                        found.add((name, k, int(j)))
    return found


def analyse(sk: rs.Sketcher, graphs: List[rs.Graph], Y: np.ndarray) -> dict:
    d, b, q = sk.d_sketch, sk.block_size, sk.density
    S = len(graphs)
    pl = placements(graphs)
    ess = essential(pl)
    rank_c, n_words = coefficient_rank(pl, S)
    t0 = time.perf_counter()
    s, V, K = sketch_basis(Y)
    strength, left, _ = block_directions(V, b)
    t_basis = time.perf_counter() - t0
    dec = rs.decode_blocks(np.where(left >= 0, 1, -1).astype(np.int8), d)
    per: Dict[int, dict] = {}
    spike = np.zeros(d // b, dtype=bool)
    for m, cols in ess.items():
        row = per.setdefault(DEPTH[m], {"blocks": 0, "decoded": 0, "r": [], "r_s": [],
                                         "columns": 0, "modules": 0})
        row["modules"] += 1
        row["columns"] += len(cols)
        for k, j in cols:
            for blk, p in _true_signs(sk.module_matrix(m, k), j, d, b).items():
                spike[blk] = True
                row["blocks"] += 1
                u = left[blk]
                a = float(u @ p) / b
                row["r"].append(np.linalg.norm(u - a * p) / (abs(a) * math.sqrt(b)))
                row["decoded"] += int(dec.status[blk] == 0 and dec.column[blk] == j)
        few = pl[m][:40]
        idx = [t for t, _, _, _ in few]
        g = np.array([gg for _, gg, _, _ in few])
        X = np.array([x for _, _, _, x in few])
        ident = (sk.module_matrix(m, 1).apply_short(X * g[:, None])
                 + sk.module_matrix(m, 2).apply_short(g[:, None]))
        rms = np.sqrt(np.mean((Y[idx].astype(np.float64) - ident) ** 2, axis=1))
        row["r_s"] += (rms * math.sqrt(d * q) / (g * X.max(axis=1))).tolist()
    found = {}
    t_learn = {}
    for method in ("sample", "unmix"):
        t0 = time.perf_counter()
        model = learn_network(None, Y, sketcher=sk, method=method)
        t_learn[method] = time.perf_counter() - t0
        found[method] = found_columns(model, sk, {m: 8 for m in DEPTH})
    for m, cols in ess.items():
        for method in found:
            key = f"found {method}"
            per[DEPTH[m]][key] = per[DEPTH[m]].get(key, 0) + sum(
                (m, k, j) in found[method] for k, j in cols)
    return {"K": K, "rank C": rank_c, "words": n_words, "s": s, "per": per,
            "strength spike": float(np.median(strength[spike])),
            "strength other": float(np.median(strength[~spike])),
            "t basis": t_basis, "t learn": t_learn,
            "placements": sorted({(m, pos) for m, rows in pl.items() for _, _, pos, _ in rows})}


def table(rows: List[dict]) -> str:
    out = ["| d, q | S | teacher | K (rank of C / words) | s_K / s_1, s_K+1 / s_1 | depth | "
           "blocks decoded, unmixed | r unmix (median, 10-90%) | r sample (median) | "
           "columns found: per sample / unmix (of essential) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, K = r["s"], r["K"]
        nxt = f"{s[K] / s[0]:.1e}" if K < len(s) else "-"
        for h, v in sorted(r["per"].items()):
            rr = np.asarray(v["r"])
            out.append(
                f"| {r['d']}, {r['q']:g} | {r['S']} | {r['teacher']} | {K} ({r['rank C']} / "
                f"{r['words']}) | {s[K - 1] / s[0]:.1e}, {nxt} | {h} | "
                f"{v['decoded']}/{v['blocks']} | {np.median(rr):.2f} ({np.quantile(rr, .1):.2f}-"
                f"{np.quantile(rr, .9):.2f}) | {np.median(v['r_s']):.2f} | "
                f"{v.get('found sample', 0)} / {v.get('found unmix', 0)} (of {v['columns']}) |")
    out += ["", "| teacher | placements (module, position) | block strength: spike / other "
            "blocks (median) | sketch s | basis s | learn s: sample, unmix |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['teacher']} | {len(r['placements'])} | {r['strength spike']:.3f} / "
                   f"{r['strength other']:.3f} | {r['t sketch']:.0f} | {r['t basis']:.0f} | "
                   f"{r['t learn']['sample']:.0f}, {r['t learn']['unmix']:.0f} |")
    return "\n".join(out)


def run(d: int, q: float, S: int, cache: Optional[Path]) -> List[dict]:
    d, b, q = rs.suggest_block_sparse(d, q)
    rows = []
    for teacher in ("fixed", "varying"):
        sk = rs.Sketcher(d, block_size=b, density=q, seed=5)
        graphs = varying_teacher(S, fixed=teacher == "fixed")
        path = None if cache is None else cache / f"varying_{teacher}_d{d}_q{q:g}_S{S}.npy"
        t0 = time.perf_counter()
        if path is not None and path.exists():
            Y = np.load(path)
            t_sketch = float("nan")
        else:
            Y = sk.sketch_many(graphs)
            t_sketch = time.perf_counter() - t0
            if path is not None:
                cache.mkdir(parents=True, exist_ok=True)
                np.save(path, Y)
        res = analyse(sk, graphs, Y)
        res.update({"d": d, "q": q, "S": S, "teacher": teacher, "t sketch": t_sketch})
        rows.append(res)
        print(table([res]), flush=True)
    return rows


def run_sampled(d: int, q: float, S: int, k: int) -> str:
    """The varying teacher sketched with ``tuple_sampling=k`` (``Sketcher.sketch_many``): the
    columns ``learn_network`` recovers exactly, per depth and method (per-sample decoding
    needs no fixed tree)."""
    d, b, q = rs.suggest_block_sparse(d, q)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=5)
    graphs = varying_teacher(S)
    ess = essential(placements(graphs))
    t0 = time.perf_counter()
    Y = sk.sketch_many(graphs, tuple_sampling=k)
    t_sketch = time.perf_counter() - t0
    lines = ["| d, q | S | sketch | method | depth 2 | depth 3 | sketch s |",
             "|---|---|---|---|---|---|---|"]
    for method in ("sample", "unmix"):
        found = found_columns(learn_network(None, Y, sketcher=sk, method=method), sk,
                              {m: 8 for m in DEPTH})
        cells = []
        for h in (2, 3):
            cols = [(m, kk, j) for m, c in ess.items() if DEPTH[m] == h for kk, j in c]
            cells.append(f"{sum(c in found for c in cols)}/{len(cols)}")
        lines.append(f"| {d}, {q:g} | {S} | varying, tuple_sampling={k} | {method} | "
                     + " | ".join(cells) + f" | {t_sketch:.0f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=262143)
    ap.add_argument("--q", type=float, default=5e-4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=None, help="directory for the sketches (.npy)")
    ap.add_argument("--tuple-sampling", type=int, default=None,
                    help="instead: the varying teacher sketched with tuple_sampling=k")
    args = ap.parse_args()
    if args.tuple_sampling is not None:
        print(run_sampled(args.d, args.q, args.samples, args.tuple_sampling))
        return
    t0 = time.perf_counter()
    rows = run(args.d, args.q, args.samples, args.cache)
    print("\nall\n" + table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
