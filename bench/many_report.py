"""Summarise a bench_many_modules.py run as one markdown table: per group, ms per object of
recsketch (2 threads, the default, and 1 thread) and of its baselines, the baselines' times
as ratios to recsketch (same run), and the fraction of the physical bound. SciPy's products run
on one core: its ratios are to recsketch with one thread. schedule-only and naive call
recsketch's products with the default threads: their ratios are to recsketch's default.

Baselines (bench/real_shapes.py): "scipy" = SciPy CSR/CSC products (NumPy FWHT for the
orthogonal family) in the level-batched algebra, with its time split into "build + products"
and "products only" on fresh-module scenes; "fair" = the same Python schedule calling
recsketch's own products (measures the schedule only); "naive" = the object-by-object
recursion with recsketch's products. The under-load and memory groups are printed after the table.

Run: python bench/many_report.py many.json
"""

import json
import sys
from collections import defaultdict


def _ms(x):
    return "-" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


def _ratio(base, t):
    return "-" if base is None or t is None else f"{base / t:.1f}x"


def main(path: str) -> None:
    groups = defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        impl = b["param"].split("-")[-1] if "param" in b and b["param"] else b["name"]
        groups[b["group"]][impl] = b
    print("| group | recsketch 2 thr | 1 thr | SciPy build + products | SciPy products only | "
          "schedule-only | naive | SciPy b+p / 1 thr | SciPy products / 1 thr | "
          "schedule-only / 2 thr | naive / 2 thr | bound (1 thr) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    other = []
    for group, impls in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if not str(group).startswith("sketch ") or "load" in str(group) or "torch" in str(group):
            other.append((group, impls))
            continue
        n = next(iter(impls.values()))["extra_info"].get("objects", 1)
        per = {k: 1e3 * b["stats"]["min"] / n for k, b in impls.items()}
        sp = impls.get("scipy", {}).get("extra_info", {})
        products = 1e3 * sp["products_only_s"] / n if "products_only_s" in sp else None
        fresh = "generated per call" in sp.get("baseline", "")
        one = per.get("recsketch_1thread")
        bound = impls.get("recsketch_1thread", {}).get("extra_info", {}).get("bound_fraction")
        print(f"| {group} | {_ms(per.get('recsketch'))} | {_ms(one)} | "
              f"{_ms(per.get('scipy')) if fresh else '-'} | "
              f"{_ms(products if fresh else per.get('scipy'))} | {_ms(per.get('fair'))} | "
              f"{_ms(per.get('naive'))} | {_ratio(per.get('scipy') if fresh else None, one)} | "
              f"{_ratio(products if fresh else per.get('scipy'), one)} | "
              f"{_ratio(per.get('fair'), per.get('recsketch'))} | "
              f"{_ratio(per.get('naive'), per.get('recsketch'))} | "
              f"{'-' if bound is None else f'{100 * bound:.1f}%'} |")
    for group, impls in other:
        print(f"\n{group}:")
        for impl, b in sorted(impls.items(), key=lambda kv: kv[1]["stats"]["min"]):
            info = {k: v for k, v in b.get("extra_info", {}).items() if not isinstance(v, list)}
            print(f"  {impl:40s} min {b['stats']['min']:.3f} s  median {b['stats']['median']:.3f} s"
                  f"  {info}")


if __name__ == "__main__":
    main(sys.argv[1])
