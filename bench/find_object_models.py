"""find_object on graphs captured from a real model (issue 16): EfficientNet-Lite0 on
scikit-image's photos (4 crops each: 84 inputs), captured with ``recsketch.torch.capture`` at
the layers ``_blocks.15``, ``_conv_head``, ``_fc`` (one object each, depths 4, 3, 2).

Every input's graph is stored with its objects (``add_graphs(objects=True)``); the queries are
the sketches of scenes of ``k`` inputs (``Graph.combine``, so the sketch holds ``k`` objects of
each module) and ask ``find_object(s, module, 1, path=...)`` for each input's object of the
module. Top-1 identification (the stored object of that input first) against d, k and the
repository size (how many inputs are stored; the queried inputs are always among them), beside
chance (1 / stored) and, on the same queries, nearest neighbour of the recovered attribute
among the objects' TRUE attributes (the limit of attribute recovery, not of the search).

Usage: python bench/find_object_models.py [--quick] > out.txt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import real_models  # noqa: E402

import recsketch as rs  # noqa: E402
from recsketch.repository import Repository  # noqa: E402

LAYERS = ["_blocks.15", "_conv_head", "_fc"]


def paths_of(g, module):
    """The input positions from the output down to the object of ``module`` (one per input
    graph inside a combined scene), in output order."""
    out = []
    for pos, (h, _) in enumerate(g.output, start=1):
        stack = [(h, [pos])]
        while stack:
            o, p = stack.pop()
            if o.module == module:
                out.append((o, p))
                continue
            stack.extend((c, p + [i]) for i, (c, _) in enumerate(g.inputs(o), start=1))
    return out


def run(cap, d, k, stored, module, family, seed=0, n_scenes=21):
    rng = np.random.default_rng(seed)
    n = len(cap)
    keep = np.sort(rng.choice(n, stored, replace=False)) if stored < n else np.arange(n)
    sk = rs.Sketcher(d, family=family, seed=seed)
    truth = np.array([cap[int(i)].attributes(next(h for h in cap[int(i)] if h.module == module))
                      for i in keep])
    hits = exact = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository.create(Path(tmp) / "r", sk)
        ids = repo.add_graphs([cap[int(i)] for i in keep], objects=True)
        for _ in range(n_scenes):
            members = rng.choice(keep.size, k, replace=False)
            scene = rs.Graph.combine([cap[int(keep[m])] for m in members])
            s = repo.sketcher.sketch(scene)
            for m, (_, path) in zip(members, paths_of(scene, module)):
                r = repo.find_object(s, module, 1, path=path if k > 1 else None)
                hits += int(r.graph_ids[0]) == int(ids[m])
                est = repo.sketcher.attributes(s, module, path if k > 1 else None).attributes
                exact += int(np.argmax(truth @ est)) == int(m)
                total += 1
        repo.close()
    return hits / total, exact / total, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    import torch

    from recsketch.torch import capture

    torch.manual_seed(0)
    model = real_models.efficientnet()
    x, _ = real_models.photos(crops=4)
    t0 = time.time()
    cap = capture(model, torch.from_numpy(x), layers=LAYERS)
    print(f"captured {len(cap)} inputs in {time.time() - t0:.1f} s; layers {LAYERS} "
          f"(depths from the output: 2 = _fc)")
    grid = [("orthogonal", 4096, 1, 84)] if a.quick else [
        (fam, d, k, st) for fam, d in (("block_sparse", 4095), ("block_sparse", 16371))
        for k in (1, 2, 4) for st in (21, 84)]
    print("family | d | module | objects of the module in the sketch | stored | chance | "
          "find_object top-1 | true-attribute NN | queries")
    for fam, d, k, st in grid:
        for module in ("_fc", "_conv_head"):
            t1 = time.time()
            rate, exact, total = run(cap, d, k, st, module, fam)
            print(f"{fam} | {d} | {module} | {k} | {st} | {1 / st:.3f} | {rate:.3f} | "
                  f"{exact:.3f} | {total}  ({time.time() - t1:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
