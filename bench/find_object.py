"""Identification rate of Repository.find_object (top-1 is the true stored object) against d,
the number of objects of the module in the sketch (n_top) and the repository size, on the
benchmark scene of bench/scene.py (top-level objects of modules "cat"/"wall", 4 children
each), with baselines measured on the same queries:

- chance: 1 / (objects of the module stored);
- exact-attr NN: the recovered attribute's nearest neighbour among the objects' TRUE
  attributes (what a repository storing attributes, not sketches, would do);
- fingerprint NN: the recovered attribute's nearest neighbour among the stored fingerprints
  (find_object's default, ``rerank=False``);
- re-ranked: find_object(rerank=True): the fingerprint candidates re-ranked by the centred
  cosine between their stored object sketches and the object sketch rebuilt from the query.

Usage: python bench/find_object.py [--quick] > out.txt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import recsketch as rs
from recsketch.repository import Repository

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene import scene  # noqa: E402  (the benchmark scene, with n_top and attrs)


def run(d: int, n_top: int, n_graphs: int, n_queries: int, seed: int = 0,
        attrs: str = "uniform") -> dict:
    sk = rs.Sketcher(d, seed=seed)
    graphs = [scene(1000 * n_top + i, n_top, attrs=attrs) for i in range(n_graphs)]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository.create(Path(tmp) / "r", sk)
        ids = repo.add_graphs(graphs, objects=True)
        # true attributes of every stored "cat" object (the exact-attr baseline)
        true = {(int(ids[k]), h.index): g.attributes(h)
                for k, g in enumerate(graphs) for h in g if h.module == "cat"}
        keys = list(true)
        X = np.stack([true[k] for k in keys])
        hits = {"exact-attr NN": 0, "fingerprint NN": 0, "re-ranked": 0}
        n = 0
        rng = np.random.default_rng(seed)
        for k in rng.choice(n_graphs, size=min(n_queries, n_graphs), replace=False).tolist():
            g = graphs[k]
            s = repo.sketcher.sketch(g)
            for pos, (h, _) in enumerate(g.output, start=1):
                if h.module != "cat":
                    continue
                want = (int(ids[k]), h.index)
                est = repo.sketcher.attributes(s, "cat", [pos]).attributes
                hits["exact-attr NN"] += keys[int(np.argmax(X @ est))] == want
                m = repo.find_object(s, "cat", 1, path=[pos], rerank=True)
                hits["re-ranked"] += (int(m.graph_ids[0]), int(m.indices[0])) == want
                fp = repo.find_object(s, "cat", 1, path=[pos])
                hits["fingerprint NN"] += (int(fp.graph_ids[0]), int(fp.indices[0])) == want
                n += 1
        repo.close()
    out = {"d": d, "n_top": n_top, "cats_in_sketch": n_top // 2,
           "stored_cats": len(keys), "queries": n, "chance": 1.0 / len(keys)}
    out.update({k: v / n for k, v in hits.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--attrs", choices=("uniform", "relu"), default="uniform")
    a = ap.parse_args()
    if a.quick:
        grid = [(1014, 2, 20), (4095, 2, 20)]
        nq = 10
    else:
        grid = [(d, n_top, n_graphs) for d in (1014, 4095) for n_top in (2, 6, 10)
                for n_graphs in (20, 80)]
        nq = 20
    cols = ["d", "cats_in_sketch", "stored_cats", "queries", "chance", "exact-attr NN",
            "fingerprint NN", "re-ranked"]
    print(f"attributes: {a.attrs}")
    print(" | ".join(cols))
    for d, n_top, n_graphs in grid:
        t0 = time.time()
        r = run(d, n_top, n_graphs, nq, attrs=a.attrs)
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols),
              f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
