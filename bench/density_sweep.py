"""Density q of the block_sparse family D(b, q, d): accuracy and speed over a grid of q
(issue 11, "density as a measured choice"; the analysis is in docs/density.md).

For each d and each q = factor x the paper's min(1, log2 d / sqrt d), and the default q
(recsketch.default_density):

* accuracy: the README's accuracy queries (bench/accuracy.py's room: the cat's attributes,
  the second wall's by its path, the cat's second edge at depth 3, the wall count), method
  "matched", l-inf error, one matrix draw per seed (the same seeds for every q); the median over
  seeds and the [25%, 75%] spread; "rel" is the geometric mean over the four queries of the
  median error divided by the smallest median error of that query over the grid (1 = best);
* the expected and the measured (4 matrices) number of columns with no nonzero block, and the
  matrix draws where a query failed (a queried column with no nonzero block: a ValueError);
* speed, one thread, CPU time (time.process_time, min over repeats): objects per second on the
  50-object scene (bench/scene.py, warm: the same graph again) and on the many-module scene
  (bench/real_shapes.py, one fresh 500-object graph per repeat, new modules every time), and one
  warm single-vector product R x and R^T y.

Usage: python bench/density_sweep.py [--sizes 4k,16k,64k] [--factors 0.125,0.25,0.5,1,2]
                                     [--seeds N] [--many-repeats N]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import recsketch as rs
from accuracy import room
from real_shapes import many_module_scene
from scene import scene as fifty_object_scene

SIZES = {"1k": 1008, "4k": 4095, "16k": 16371, "64k": 65520}
QUERIES = ["cat (i)", "wall (ii)", "edge (ii), depth 3", "wall count"]
# per d: matrix seeds for accuracy, fresh many-module graphs timed per q (a 500-object graph
# takes ~5 s at d = 16k and ~40 s at 64k with the paper's q)
DEFAULT_SEEDS = {"1k": 48, "4k": 24, "16k": 12, "64k": 4}
DEFAULT_MANY = {"1k": 3, "4k": 3, "16k": 2, "64k": 1}


def errors(sk: rs.Sketcher, seed: int, method: str = "matched") -> dict:
    """l-inf errors of the accuracy table's four queries on the room drawn with ``seed``."""
    g, cat, walls, edges = room(np.random.default_rng(seed))
    s = sk.sketch(g)
    est = {
        "cat (i)": (sk.attributes(s, "cat", weight=0.5, method=method), g.attributes(cat)),
        "wall (ii)": (sk.attributes(s, "wall", path=[2], weight=0.25, method=method),
                      g.attributes(walls[1])),
        "edge (ii), depth 3": (sk.attributes(s, "edge", path=[3, 2], weight=0.25, method=method),
                               g.attributes(edges[1])),
        "wall count": (np.array([sk.count(s, "wall", 0.25, method=method)]), np.array([2.0])),
    }
    return {k: float(np.max(np.abs(e - t))) for k, (e, t) in est.items()}


def cpu_min(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def speed(d: int, q: float, many_repeats: int, call: int) -> dict:
    sk = rs.Sketcher(d, density=q, seed=1)
    fifty = [fifty_object_scene(1)]
    sk.sketch_many(fifty, num_threads=1)  # warm: matrices made, walks cached
    t_fifty = cpu_min(lambda: sk.sketch_many(fifty, num_threads=1), 3)
    # fresh modules in every repeat (module names carry the seed)
    graphs = iter([[many_module_scene(10_000 * call + r)] for r in range(many_repeats)])
    n_many = len(many_module_scene(0))
    t_many = cpu_min(lambda: sk.sketch_many(next(graphs), num_threads=1), many_repeats)
    R = sk.module_matrix("product", 0)
    x = np.random.default_rng(0).random(d).astype(np.float32)
    R.matvec(x, num_threads=1)
    R.rmatvec(x, num_threads=1)
    reps = max(3, int(2e6 / d))
    t_rx = cpu_min(lambda: R.matvec(x, num_threads=1), reps)
    t_rty = cpu_min(lambda: R.rmatvec(x, num_threads=1), reps)
    return {"fifty": len(fifty[0]) / t_fifty, "many": n_many / t_many,
            "rx": 1e3 * t_rx, "rty": 1e3 * t_rty}


def sweep(size: str, factors, n_seeds: int, many_repeats: int) -> None:
    d = SIZES[size]
    paper = rs.paper_density(d)  # min(1, log2 d / sqrt d), Theorem 4
    default = rs.default_density(d)
    b = rs.Sketcher(d).block_size
    t0 = time.time()
    rows = []
    grid = sorted({min(1.0, f * paper) for f in factors} | {default})
    for i, q in enumerate(grid):
        f = q / paper
        errs, failed = [], 0
        for s in range(n_seeds):
            try:
                errs.append(errors(rs.Sketcher(d, density=q, seed=s), s))
            except ValueError:  # a column of a query's matrix has no nonzero block
                failed += 1
                errs.append({k: math.inf for k in QUERIES})
        zero = np.mean([np.count_nonzero(rs.Sketcher(d, density=q, seed=s).module_matrix(
            "m", 0).column_block_counts() == 0) for s in range(4)])
        # a failed draw counts as an infinite error ("nearest": no inf - inf interpolation)
        med, p25, p75 = ({k: float(np.percentile([e[k] for e in errs], p, method="nearest"))
                          for k in QUERIES} for p in (50, 25, 75))
        rows.append((f, q, med, p25, p75, failed, zero, speed(d, q, many_repeats, i + 1)))
    best = {k: min(r[2][k] for r in rows) for k in QUERIES}
    load = os.getloadavg()[0]
    print(f"\n### d = {d} (b = {b}, {d // b} block-rows; paper q = {paper:.4f}; "
          f"{n_seeds} seeds; {time.time() - t0:.0f} s; load average {load:.1f})\n")
    print("| q (x paper) | blocks per column | empty columns per matrix, expected / measured | "
          "failed draws | "
          + " | ".join(QUERIES)
          + " | rel. error | fifty obj/s | many obj/s | R x ms | R^T y ms |")
    print("|---|---|---|---|" + "---|" * len(QUERIES) + "---|---|---|---|---|")
    for f, q, med, p25, p75, failed, zero, sp in rows:
        rel = math.exp(np.mean([math.log(med[k] / best[k]) for k in QUERIES]))
        cells = [f"{med[k]:.3g} [{p25[k]:.3g}, {p75[k]:.3g}]" for k in QUERIES]
        mark = " **default**" if q == default else ""
        print(f"| {q:.4f} ({f:.3g}){mark} | {q * d / b:.1f} | {d * (1 - q) ** (d // b):.2g} / {zero:g} "
              f"| {failed}/{n_seeds} | "
              + " | ".join(cells)
              + f" | {rel:.2f} | {sp['fifty']:.0f} | {sp['many']:.0f} | {sp['rx']:.3f} "
              f"| {sp['rty']:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4k,16k,64k")
    ap.add_argument("--factors", default="0.125,0.25,0.5,1,2")
    ap.add_argument("--seeds", type=int, default=None, help="matrix seeds per q (default per d)")
    ap.add_argument("--many-repeats", type=int, default=None)
    args = ap.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    for size in args.sizes.split(","):
        sweep(size, factors, args.seeds or DEFAULT_SEEDS[size],
              args.many_repeats or DEFAULT_MANY[size])


if __name__ == "__main__":
    main()
