"""The demo's grown module across seeds, and what growing costs the demo's run time.

For each seed, ``recsketch demo`` (365 days, d = 16371) learns 'learned-1' on October 1st from
the largest cluster that emerged since the dog arrived and sketches October-December with it;
the figures are its firing rates read back from the stored sketches (days with / without a dog,
none of them used to learn it). Run time: the same demo with ``grow=False`` (nothing learned,
the year sketched in one pass) alternated with ``grow=True`` in one process, as a ratio.

Usage: python bench/learned_module.py [--seeds 5] [--repeats 2] > out.txt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile

import numpy as np

from recsketch.demo import run_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        def demo(seed: int, grow: bool) -> dict:
            with contextlib.redirect_stdout(io.StringIO()):
                return run_demo(os.path.join(tmp, "demo"), seed=seed, plot=False,
                                progress=False, grow=grow)
        print("seed  fires|dog  fires|no dog  largest new cluster's dog share")
        for seed in range(args.seeds):
            f = demo(seed, True)
            print(f"{seed:4d}  {f.get('learned_fires_with_dog', float('nan')):9.3f}  "
                  f"{f.get('learned_fires_without_dog', float('nan')):12.3f}  "
                  f"{f['new_cluster_dog_share']:.3f}", flush=True)
        ratios = []
        for _ in range(args.repeats):
            plain = demo(0, False)["seconds"]
            grown = demo(0, True)["seconds"]
            ratios.append(grown / plain)
            print(f"run time: grow=False {plain:.1f} s, grow=True {grown:.1f} s, "
                  f"ratio {grown / plain:.2f}  (load {os.getloadavg()[0]:.1f})", flush=True)
        print(f"median ratio grown / plain: {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
