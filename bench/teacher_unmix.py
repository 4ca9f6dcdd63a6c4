"""Learning below the top level by unmixing across samples (issue 13), beside the per-sample
decoding in the same run.

The teacher is ``deep`` of ``bench/teacher_network.py`` (output <- root <- 2 mids <- 2 leaves
each; depths 2, 3, 4; a fixed tree). For each (d, q, S, seed) the sketches are made once and
``learn_network`` runs with ``method="sample"`` (the baseline: every sample decoded on its own)
and ``method="unmix"`` (with and without ``correct_leaks``, the removal of the shallower
modules' words from each block read). Scored against the truth
(:class:`NetworkTruth`): per depth, modules and matrices identified, essential columns
recovered (Hamming <= 0.2 q d) / partial / wrong, attribute error after the gain is divided
out, gain error, depth and tree edges. Beside it, per depth, from the truth:

* ``blocks``: of the nonzero blocks of the essential columns, how many the unmixed block scan
  decoded to the right column and sign (and, for the baseline, how many any sample decoded);
* ``r sample``: the per-sample noise ratio ``rms(y - identity word) sqrt(dq) / (g max x)``
  (median over modules, first 40 samples);
* ``r unmix``: the same ratio for the top singular vector ``u`` of a word's block of the basis,
  ``|u - a p| / (a sqrt b)`` with ``p`` the true signs and ``a = u.p / b`` (decodes below ~0.3);
* ``floor``: the issue's estimate ``2^(3(h-1)/2) sqrt(q)`` of what an object's own diffuse
  words leave.

Usage: PYTHONPATH=python python bench/teacher_unmix.py [--d 262143] [--q 5e-4] [--samples 200]
       [--seeds 0 1 2] [--quick] [--varying]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
from recsketch.network import NetworkTruth, learn_network  # noqa: E402
from recsketch.network.unmixing import block_directions, sketch_basis  # noqa: E402
from teacher_network import build_teacher, diagnostics  # noqa: E402


def _true_signs(R, col: int, d: int, b: int) -> Dict[int, np.ndarray]:
    e = np.zeros((1, d))
    e[0, col] = 1.0
    v = R.matvec(e)[0].reshape(-1, b)
    nz = np.flatnonzero(np.abs(v).max(axis=1) > 0)
    return {int(k): np.sign(v[k]) for k in nz}


def block_table(sk: rs.Sketcher, truth: NetworkTruth, Y: np.ndarray) -> Dict[int, dict]:
    """Per depth: essential columns' nonzero blocks, how many the unmixed scan decodes right,
    and the median unmixed noise ratio on them."""
    d, b = sk.d_sketch, sk.block_size
    s, V, K = sketch_basis(Y)
    _, left, _ = block_directions(V, b)
    signs = np.where(left >= 0, 1, -1).astype(np.int8)
    dec = rs.decode_blocks(signs, d)
    out: Dict[int, dict] = {}
    for name, h in truth.depths.items():
        x = truth.attributes[name]
        cols = [(1, j) for j in np.flatnonzero(np.quantile(x, 0.9, axis=0) >= 0.2)] + [(2, 0)]
        row = out.setdefault(h, {"blocks": 0, "decoded": 0, "r": [], "K": K})
        for k, j in cols:
            for blk, p in _true_signs(sk.module_matrix(name, k), int(j), d, b).items():
                row["blocks"] += 1
                u = left[blk]
                a = float(u @ p) / b
                row["r"].append(np.linalg.norm(u - a * p) / (abs(a) * math.sqrt(b)))
                ok = dec.status[blk] == 0 and dec.column[blk] == j
                row["decoded"] += int(ok)
    return out


def cache_path(cache: Path, d: int, b: int, q: float, S: int, seed: int) -> Path:
    """The cache file of the teacher ``deep``'s sketches for (d, b, q, S, seed)."""
    return cache / f"deep_d{d}_b{b}_q{q:g}_S{S}_seed{seed}.npy"


def sketches(sk: rs.Sketcher, graphs: List[rs.Graph], seed: int, cache: Optional[Path]
             ) -> Tuple[np.ndarray, float]:
    """(the sketches, seconds to make them; NaN when read from ``cache``). The cache file is
    keyed by (d, b, q, S, seed) of the teacher ``deep``."""
    path = None
    if cache is not None:
        path = cache_path(cache, sk.d_sketch, sk.block_size, sk.density, len(graphs), seed)
        if path.exists():
            return np.load(path), float("nan")
    t0 = time.perf_counter()
    Y = sk.sketch_many(graphs)
    t = time.perf_counter() - t0
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, Y)
    return Y, t


def sampled_sketches(sk: rs.Sketcher, graphs: List[rs.Graph], seed: int, cache: Optional[Path]
                     ) -> Tuple[np.ndarray, float]:
    """(sketches of the same graphs with ``tuple_sampling=1``, ``sample_seed`` = the graph's
    index; seconds to make them, NaN when read from ``cache``), cached beside the plain ones."""
    path = None
    if cache is not None:
        plain = cache_path(cache, sk.d_sketch, sk.block_size, sk.density, len(graphs), seed)
        path = plain.with_name("sampled1_" + plain.name)
        if path.exists():
            return np.load(path), float("nan")
    t0 = time.perf_counter()
    Ys = sk.sketch_many(graphs, tuple_sampling=1, sample_seed=range(len(graphs)))
    t = time.perf_counter() - t0
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, Ys)
    return Ys, t


def criteria(model, truth: NetworkTruth, depth: int, report=None) -> dict:
    """The issue's target at one depth, from the truth: essential columns with >= 2 nonzero
    blocks (``cols2``) and how many a *module* (not garbage) holds within the Hamming radius
    0.2 q d with <= 5% wrong signs on its recovered entries (``ok2``); ``wrong`` module
    columns with wrong indices or signs (the report's ``columns_wrong``); per identified
    module the median over samples of the l-inf error of its attributes on the recovered
    true coordinates, gain divided out (``linf``: the worst module's); modules whose depth is
    right and true edges into the depth (``depth ok``, ``edges``). ``report``: the model's
    ``model.report(truth)`` if already computed (it is most of the time taken here)."""
    from recsketch.network.evaluate import _compare, _essential

    sk = truth.sketcher
    rep = model.report(truth) if report is None else report
    lv = rep.levels[depth]
    limit = 0.2 * model.density * model.d_sketch
    names = [n for n, h in truth.depths.items() if h == depth]
    want = {}
    for n in names:
        for k, cols in _essential(truth, n, 0.2).items():
            counts = sk.module_matrix(n, k).column_block_counts()
            want.update({(n, k, int(j)): False for j in cols if counts[j] >= 2})
    mats = [m.attribute_matrix for m in model.modules]
    mats += [m.count_matrix for m in model.modules if m.count_matrix is not None]
    for mat in mats:
        for (n, k, j) in want:
            idx = [i for i, c in enumerate(mat.columns) if c == j]
            if idx and not want[(n, k, j)]:
                ham, wrong = _compare(mat, sk.module_matrix(n, k), idx)
                want[(n, k, j)] = bool(ham[0] <= limit and wrong[0] <= 0.05)
    linf = {}
    for m in model.modules:
        n = rep.names.get(m.id)
        if n is None or truth.depths[n] != depth:
            continue
        x = truth.attributes[n]
        cols = m.columns < x.shape[1]
        if cols.any():
            err = np.abs(m.attributes[:, cols] - x[:, m.columns[cols]]).max(axis=1)
            linf[n] = float(np.median(err))
    return {"cols2": len(want), "ok2": sum(want.values()), "wrong": lv.columns_wrong,
            "linf": max(linf.values()) if linf else float("nan"), "linf_modules": linf,
            "modules": lv.modules,
            "identified": lv.modules_identified, "depth_ok": lv.depth_correct,
            "edges": lv.edges, "edges_ok": lv.edges_recovered, "edges_wrong": lv.edges_wrong}


LEARNERS = {"sample": {}, "unmix, uncorrected": {"method": "unmix", "correct_leaks": False},
            "unmix": {"method": "unmix"},
            "separated": {"method": "unmix", "sampled_sketches": True}}


def run(d: int, q: float, S: int, seed: int, cache: Optional[Path] = None,
        criteria_only: bool = False, learners: Tuple[str, ...] = tuple(LEARNERS)) -> dict:
    d, b, q = rs.suggest_block_sparse(d, q if q > 0 else None)  # q <= 0: the paper's
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
    inputs, graphs = build_teacher("deep", S, seed)
    Y, t_sketch = sketches(sk, graphs, seed, cache)
    truth = NetworkTruth.from_graphs(sk, graphs)
    res = {"d": d, "b": b, "q": q, "S": S, "seed": seed, "t_sketch": t_sketch}
    for label in learners:
        options = dict(LEARNERS[label])
        if options.get("sampled_sketches"):
            options["sampled_sketches"], res["t_sampled"] = sampled_sketches(sk, graphs, seed,
                                                                             cache)
        t0 = time.perf_counter()
        model = learn_network(inputs, Y, sketcher=sk, **options)
        res[f"t {label}"] = time.perf_counter() - t0
        res[label] = model.report(truth)
        res[f"garbage {label}"] = res[label].garbage_roles
        res[f"criteria {label}"] = {h: criteria(model, truth, h, res[label]) for h in (2, 3)}
    res["maxrss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if criteria_only:
        return res
    res["blocks"] = block_table(sk, truth, Y)
    # the per-sample ratio on the first 40 samples (it holds two (S, d) float64 arrays per module)
    few = min(S, 40)
    res["r sample"] = {h: v[0] for h, v in diagnostics(
        sk, Y[:few].astype(np.float64), NetworkTruth.from_graphs(sk, graphs[:few])).items()}
    return res


def table(rows: List[dict]) -> str:
    out = ["| d, q | S | seed | depth | method | modules | matrices | columns ok+part/ess/all "
           "(wrong) | attr err med/max | gain err | depth ok | edges (wrong) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        done = [label for label in LEARNERS if label in r]
        for h in sorted(r[done[0]].levels):
            for label in done:
                s = r[label].levels[h]
                out.append(f"| {r['d']}, {r['q']:g} | {r['S']} | {r['seed']} | {h} | {label} | "
                           + " | ".join(s.cells()) + " |")
    out += ["", "| d, q | S | seed | depth | K | blocks decoded, unmixed | r sample (median) | "
            "r unmix (median, 10-90%) | floor 2^(3(h-1)/2) sqrt q |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for h, v in sorted(r.get("blocks", {}).items()):
            rr = np.asarray(v["r"])
            out.append(f"| {r['d']}, {r['q']:g} | {r['S']} | {r['seed']} | {h} | {v['K']} | "
                       f"{v['decoded']}/{v['blocks']} | {r['r sample'][h]:.2f} | "
                       f"{np.median(rr):.2f} ({np.quantile(rr, .1):.2f}-{np.quantile(rr, .9):.2f})"
                       f" | {2 ** (1.5 * (h - 1)) * math.sqrt(r['q']):.2f} |")
    out += ["", "| d, q | S | seed | depth | method | 2-block columns ok | wrong | l-inf med, "
            "worst (per module) | depth ok | edges ok (wrong) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for h in (2, 3):
            for label in [label for label in LEARNERS if label in r]:
                c = r[f"criteria {label}"][h]
                per = ", ".join(f"{n} {v:.3f}" for n, v in sorted(c["linf_modules"].items()))
                out.append(f"| {r['d']}, {r['q']:g} | {r['S']} | {r['seed']} | {h} | {label} | "
                           f"{c['ok2']}/{c['cols2']} | {c['wrong']} | {c['linf']:.3f} ({per}) | "
                           f"{c['depth_ok']}/{c['modules']} | {c['edges_ok']}/{c['edges']} "
                           f"({c['edges_wrong']}) |")
    out += ["", "| d | S | seed | sketch s | sampled sketch s | sample s | unmix s | "
            "separated s | max RSS GiB | garbage roles (unmix) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        garbage = r.get("garbage unmix", [])
        roles = sorted({str(g) for g in garbage if g is not None})
        out.append(f"| {r['d']} | {r['S']} | {r['seed']} | {r['t_sketch']:.1f} | "
                   f"{r.get('t_sampled', math.nan):.1f} | "
                   f"{r.get('t sample', math.nan):.1f} | {r.get('t unmix', math.nan):.1f} | "
                   f"{r.get('t separated', math.nan):.1f} | "
                   f"{r['maxrss_gib']:.2f} | "
                   f"{', '.join(roles)} ({sum(g is None for g in garbage)} unmatched) |")
    return "\n".join(out)


def varying_teacher(n: int, dim: int = 8, seed: int = 0, fixed: bool = False
                    ) -> List[rs.Graph]:
    """A graph that varies with the input: root <- two of three mids, chosen per input, in
    either order (so each mid appears at both positions). ``fixed=True``: its fixed-tree twin,
    the same maps and weights with root <- (midA, midB) for every input."""
    rng = np.random.default_rng(seed)
    mids = ("midA", "midB", "midC")
    W = {m: rng.normal(0, 1, (dim, 4)) for m in mids}
    Wr = rng.normal(0, 1, (dim, dim))
    graphs = []
    for _ in range(n):
        u = rng.random(4)
        g = rs.Graph()
        names = [mids[i] for i in rng.choice(3, 2, replace=False)]
        if fixed:
            names = ["midA", "midB"]
        hs = [g.add(m, _unit(np.logaddexp(0, 2 * W[m] @ u))) for m in names]
        w = float(rng.uniform(0.3, 0.7))
        x = _unit(np.logaddexp(0, Wr @ (g.attributes(hs[0]) + g.attributes(hs[1]))))
        g.set_output([(g.add("root", x, [(hs[0], w), (hs[1], 1 - w)]), 1.0)])
        graphs.append(g)
    return graphs


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z)


def run_varying(d: int, q: float, S: int) -> str:
    """Columns of R[M,1], R[M,2] recovered with exactly the true signs on their decoded rows,
    per method, on the varying teacher (NetworkTruth needs a fixed tree: checked directly)."""
    d, b, q = rs.suggest_block_sparse(d, q)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=5)
    graphs = varying_teacher(S)
    Y = sk.sketch_many(graphs)
    K = sketch_basis(Y)[2]
    lines = [f"varying graph, d={d}, q={q:g}, S={S}: K = {K}"]
    from varying_unmix import found_columns  # it imports this module

    for method in ("sample", "unmix"):
        model = learn_network(None, Y, sketcher=sk, method=method)
        found = found_columns(model, sk, {m: 8 for m in ("root", "midA", "midB", "midC")})
        lines.append(f"  {method}: {sorted(found)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=262143)
    ap.add_argument("--q", type=float, default=5e-4,
                    help="block probability; 0 for the paper's log2(d) / sqrt(d)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--quick", action="store_true", help="d = 65,520, S = 80 (about a minute)")
    ap.add_argument("--criteria-only", action="store_true",
                    help="only the learners and the issue's criteria (no block table, no "
                         "per-sample noise ratio)")
    ap.add_argument("--learners", nargs="+", choices=list(LEARNERS), default=list(LEARNERS),
                    metavar="LEARNER", help=f"which of {list(LEARNERS)} to run (default: all)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="directory for the sketches (.npy; 0.4 GB per seed at d = 524k, S = 200)")
    ap.add_argument("--varying", action="store_true",
                    help="the input-dependent graph of varying_teacher instead (d = 98,280, "
                         "q = 1e-3 unless given)")
    args = ap.parse_args()
    if args.varying:
        print(run_varying(args.d, args.q, args.samples))
        return
    if args.quick:
        args.d, args.q, args.samples = 65520, 1e-3, 80
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        rows.append(run(args.d, args.q, args.samples, seed, args.cache, args.criteria_only,
                         tuple(args.learners)))
        print(table(rows[-1:]), flush=True)
    print("\nall runs\n" + table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
