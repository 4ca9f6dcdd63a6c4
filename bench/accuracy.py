"""Accuracy of the estimators against the ground truth, as d grows (the README's table).

For each d and family: the paper's room (a cat of weight 1/2 with two edges, two walls of
weight 1/4, in input order wall, wall, cat), one matrix draw per seed, mean l-inf errors of:
the cat's attributes (Theorem 1 case (i)), the second wall's attributes by its path (case (ii),
another wall present), the second edge of the cat by its path (depth 3, case (ii)) and the wall
count (Theorem 3). Usage: python bench/accuracy.py [n_seeds]
"""

import sys
import time

import numpy as np

import recsketch as rs

SIZES = {"orthogonal": [1024, 4096, 16384, 65536], "block_sparse": [1008, 4095, 16371, 65520]}


def unit(rng, m):
    x = rng.random(m)
    return x / np.linalg.norm(x)


def room(rng):
    g = rs.Graph()
    edges = [g.add("edge", unit(rng, 16)) for _ in range(2)]
    walls = [g.add("wall", unit(rng, 8)) for _ in range(2)]
    cat = g.add("cat", unit(rng, 32), [(e, 0.5) for e in edges])
    g.set_output([(walls[0], 0.25), (walls[1], 0.25), (cat, 0.5)])
    return g, cat, walls, edges


def measure(family, d, seeds):
    err = {}
    for seed in seeds:
        sk = rs.Sketcher(d, family=family, seed=seed)
        g, cat, walls, edges = room(np.random.default_rng(seed))
        s = sk.sketch(g)
        for m in ("paper", "matched"):
            rows = {
                "cat (i)": (sk.attributes(s, "cat", weight=0.5, method=m), g.attributes(cat)),
                "wall (ii)": (sk.attributes(s, "wall", path=[2], weight=0.25, method=m),
                              g.attributes(walls[1])),
                "edge (ii), depth 3": (sk.attributes(s, "edge", path=[3, 2], weight=0.25,
                                                     method=m), g.attributes(edges[1])),
                "wall count": (np.array([sk.count(s, "wall", 0.25, method=m)]), np.array([2.0])),
            }
            for name, (est, truth) in rows.items():
                err.setdefault((name, m), []).append(float(np.max(np.abs(est - truth))))
    return {k: np.mean(v) for k, v in err.items()}


def main(n_seeds=8):
    for family, sizes in SIZES.items():
        t0 = time.time()
        table = {d: measure(family, d, range(n_seeds)) for d in sizes}
        names = ["cat (i)", "wall (ii)", "edge (ii), depth 3", "wall count"]
        print(f"\n{family} ({n_seeds} matrix draws per d, {time.time() - t0:.0f} s)\n")
        print("| query | " + " | ".join(f"d = {d}" for d in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for name in names:
            cells = [f"{table[d][name, 'paper']:.3f} → **{table[d][name, 'matched']:.3f}**"
                     for d in sizes]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
