"""The measured noise ratio per depth against the floor ``2^(3(h-1)/2) sqrt(q)`` (issue 13):
per sample and after unmixing, on the "deep" teacher of ``bench/teacher_network.py``; writes
docs/unmix_noise.png and prints the table.

``r unmixed``: for every nonzero block of a depth-h essential column, the top left singular
vector ``u`` of the basis restricted to the block against the true signs ``p``:
``|u - a p| / (|a| sqrt b)`` with ``a = u.p / b`` (a block decodes below ~0.3). ``r per sample``:
``rms(y - identity word) sqrt(dq) / (g max x)`` on the first 40 samples
(``teacher_network.diagnostics``).

Usage: PYTHONPATH=python python bench/unmix_noise.py --cache DIR [--d 524262] [--q 4e-4]
       [--samples 200] [--seeds 0 1 2] [--out docs/unmix_noise.png]
(the sketches are made once per seed and kept in DIR: 0.4 GB per seed at d = 524k, S = 200)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
from recsketch.network import NetworkTruth  # noqa: E402
from teacher_network import build_teacher, diagnostics  # noqa: E402
from teacher_unmix import block_table, sketches  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=524262)
    ap.add_argument("--q", type=float, default=4e-4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "docs" / "unmix_noise.png")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        d, b, q = rs.suggest_block_sparse(args.d, args.q)
        sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
        _, graphs = build_teacher("deep", args.samples, seed)
        Y, _ = sketches(sk, graphs, seed, args.cache)
        truth = NetworkTruth.from_graphs(sk, graphs)
        unmixed = block_table(sk, truth, Y)
        few = min(args.samples, 40)
        per = diagnostics(sk, Y[:few].astype(np.float64),
                          NetworkTruth.from_graphs(sk, graphs[:few]))
        for h, v in sorted(unmixed.items()):
            r = np.asarray(v["r"])
            rows.append((seed, h, v["K"], v["decoded"], v["blocks"], per[h][0], np.median(r),
                         np.quantile(r, 0.1), np.quantile(r, 0.9),
                         2 ** (1.5 * (h - 1)) * math.sqrt(q)))
        print(f"seed {seed} done", flush=True)
    print(f"\nd = {d}, b = {b}, q = {q:g}, S = {args.samples}\n")
    print("| seed | depth | K | blocks decoded, unmixed | r per sample | r unmixed, median "
          "(10-90%) | floor 2^(3(h-1)/2) sqrt q | r unmixed / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for s, h, K, dec, blk, rp, rm, lo, hi, fl in rows:
        print(f"| {s} | {h} | {K} | {dec}/{blk} | {rp:.2f} | {rm:.2f} ({lo:.2f}-{hi:.2f}) | "
              f"{fl:.2f} | {rm / fl:.1f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    hs = sorted({r[1] for r in rows})
    for s in args.seeds:
        sub = [r for r in rows if r[0] == s]
        ax.semilogy([r[1] for r in sub], [r[5] for r in sub], "o--", color="C0",
                    label="per sample" if s == args.seeds[0] else None)
        ax.semilogy([r[1] for r in sub], [r[6] for r in sub], "s-", color="C1",
                    label="unmixed (median)" if s == args.seeds[0] else None)
    ax.semilogy(hs, [2 ** (1.5 * (h - 1)) * math.sqrt(q) for h in hs], "k:",
                label="floor 2^(3(h-1)/2) sqrt q")
    ax.axhline(0.3, color="r", lw=0.8, label="decodes below ~0.3")
    ax.set_xticks(hs)
    ax.set_xlabel("depth h")
    ax.set_ylabel("noise ratio")
    ax.set_title(f"deep teacher, d = {d}, q = {q:g}, S = {args.samples}, seeds {args.seeds}",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
