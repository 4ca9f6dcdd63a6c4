"""Summarise a bench_many_modules.py run: per group, ms per object, objects per second, the
ratios to the fair and naive baselines (same run) and the fraction of the physical bound.

Run: python bench/many_report.py many.json
"""

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    groups = defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        impl = b["param"].split("-")[-1] if "param" in b and b["param"] else b["name"]
        groups[b["group"]][impl] = b
    for group, impls in sorted(groups.items(), key=lambda kv: str(kv[0])):
        print(f"{group}:")
        fair = impls.get("fair", {}).get("stats", {}).get("min")
        naive = impls.get("naive", {}).get("stats", {}).get("min")
        for impl, b in sorted(impls.items(), key=lambda kv: kv[1]["stats"]["min"]):
            t = b["stats"]["min"]
            info = b.get("extra_info", {})
            line = f"  {impl:18s} {1e3 * t:10.2f} ms"
            if "ms_per_object" in info:
                line += f"  {info['ms_per_object']:8.3f} ms/object  {info['objects_per_s']:9.0f} obj/s"
                line += f"  bound {100 * info['bound_fraction']:5.1f}%"
            if fair:
                line += f"  {fair / t:6.1f}x fair"
            if naive:
                line += f"  {naive / t:6.1f}x naive"
            print(line)


if __name__ == "__main__":
    main(sys.argv[1])
