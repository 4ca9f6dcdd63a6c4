"""Turn a pytest-benchmark JSON file into the ratio tables of the README.

Usage: python bench/report.py bench.json
"""

import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    groups = defaultdict(dict)
    for b in data["benchmarks"]:
        params = b["params"] or {}
        impl = params.get("impl") or params.get("family") or b["name"]
        groups[b["group"]][impl] = b
    gemm = [b for b in data["benchmarks"] if b["group"] == "gemm float32 2048"]
    gemm_rate = gemm[0]["extra_info"]["flops"] / gemm[0]["stats"]["min"] / 1e9 if gemm else None
    if gemm_rate:
        print(f"float32 GEMM: {gemm_rate:.1f} GFLOP/s\n")
    print("| group | SciPy CSR (ms) | recsketch 1 thread (ms) | recsketch all threads (ms) | "
          "speed-up 1 thread | speed-up all | effective GFLOP/s | % of GEMM | "
          "speed-up all, no walk cache |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, impls in sorted(groups.items()):
        if "scipy_csr" not in impls or "recsketch_1thread" not in impls or name.startswith("sketch"):
            continue
        t = {k: v["stats"]["min"] for k, v in impls.items()}
        fast = impls["recsketch"]
        eff = 2 * fast["extra_info"]["nnz"] * fast["extra_info"]["batch"] / t["recsketch"] / 1e9
        pct = f"{100 * eff / gemm_rate:.0f}%" if gemm_rate else "-"
        print(f"| {name} | {t['scipy_csr']*1e3:.2f} | {t['recsketch_1thread']*1e3:.2f} | "
              f"{t['recsketch']*1e3:.2f} | {t['scipy_csr']/t['recsketch_1thread']:.1f}x | "
              f"{t['scipy_csr']/t['recsketch']:.1f}x | {eff:.1f} | {pct} | "
              + (f"{t['scipy_csr']/t['recsketch_cold']:.1f}x |" if "recsketch_cold" in t else "- |"))
    for name, impls in sorted(groups.items()):
        if name.startswith("R^T y") and "scipy_csr" in impls:
            t = {k: v["stats"]["min"] for k, v in impls.items()}
            print(f"\n{name}: SciPy CSR {t['scipy_csr']*1e3:.2f} ms, recsketch "
                  f"{t['recsketch']*1e3:.2f} ms ({t['scipy_csr']/t['recsketch']:.1f}x)")
    for name, impls in sorted(groups.items()):
        if name.startswith("family"):
            t = {k: v["stats"]["min"] for k, v in impls.items()}
            print(f"\n{name}: orthogonal {t['orthogonal']*1e3:.2f} ms, block_sparse "
                  f"{t['block_sparse']*1e3:.2f} ms (orthogonal {t['block_sparse']/t['orthogonal']:.1f}x faster)")
    for name, impls in sorted(groups.items()):
        if not (name.startswith("sketch") or name.startswith("query")
                or name.startswith("search")):
            continue
        base_key = next(k for k in ("scipy_csr", "numpy_paper", "numpy_brute_force")
                        if k in impls)
        per = {k: v["stats"]["min"] / v["extra_info"]["sketches"] for k, v in impls.items()}
        print(f"\n{name}:")
        for k, t in sorted(per.items(), key=lambda kv: -kv[1]):
            unit = "queries/s" if name.startswith("search") else "sketches/s"
            extra = impls[k]["extra_info"].get("recall_at_10")
            print(f"  {k:20s} {1 / t:12.1f} {unit}   {per[base_key] / t:7.1f}x {base_key}"
                  + (f"   recall@10 {extra:.3f}" if extra is not None else ""))
    for name, impls in sorted(groups.items()):
        if not name.startswith("dictionary"):
            continue
        t = {k: v["stats"]["min"] for k, v in impls.items()}
        print(f"\n{name}:")
        for k, v in sorted(t.items(), key=lambda kv: kv[1]):
            e = impls[k]["extra_info"]
            extra = ""
            if "recovery" in e:
                extra = f"   recovery {e['recovery']:.1%}"
            if "bytes" in e:
                extra = f"   {e['bytes'] / v / 1e9:.2f} GB/s"
            print(f"  {k:20s} {v * 1e3:10.1f} ms{extra}")
    add_rate = [b for b in data["benchmarks"] if b["group"] == "simd add rate"]
    add_rate = (add_rate[0]["extra_info"]["adds"] / add_rate[0]["stats"]["min"]
                if add_rate else None)
    ortho = sorted((n for n in groups if n.startswith("orthogonal R x")),
                   key=lambda n: [int(t.split("=")[1]) for t in n.split()[3:]])
    if ortho:
        if add_rate:
            print(f"\nSIMD double add rate (one core): {add_rate / 1e9:.1f} G adds/s")
        print("\n| group | NumPy FWHT (ms) | portable 1 thread (ms) | AVX2 1 thread (ms) | "
              "all threads (ms) | speed-up 1 thread | speed-up all | % of add bound, 1 thread |")
        print("|---|---|---|---|---|---|---|---|")
        for name in ortho:
            impls = groups[name]
            if not {"numpy_fwht", "recsketch_portable", "recsketch_1thread", "recsketch"} <= set(impls):
                continue
            t = {k: v["stats"]["min"] for k, v in impls.items()}
            adds = impls["recsketch_1thread"]["extra_info"]["adds"]
            bound = f"{100 * adds / add_rate / t['recsketch_1thread']:.0f}%" if add_rate else "-"
            print(f"| {name} | {t['numpy_fwht']*1e3:.3f} | {t['recsketch_portable']*1e3:.3f} | "
                  f"{t['recsketch_1thread']*1e3:.3f} | {t['recsketch']*1e3:.3f} | "
                  f"{t['numpy_fwht']/t['recsketch_1thread']:.1f}x | "
                  f"{t['numpy_fwht']/t['recsketch']:.1f}x | {bound} |")
    first = sorted(n for n in groups if n.startswith("first product"))
    if first:
        print("\n| group | SciPy CSR product (ms) | SciPy CSR build (ms) | recsketch warm (ms) | "
              "recsketch first (ms) | first / warm | (CSR build + product) / first |")
        print("|---|---|---|---|---|---|---|")
        for name in first:
            t = {k: v["stats"]["min"] for k, v in groups[name].items()}
            if not {"scipy_csr", "scipy_csr_build", "recsketch_warm", "recsketch_first"} <= set(t):
                continue
            print(f"| {name} | {t['scipy_csr']*1e3:.2f} | {t['scipy_csr_build']*1e3:.1f} | "
                  f"{t['recsketch_warm']*1e3:.2f} | {t['recsketch_first']*1e3:.2f} | "
                  f"{t['recsketch_first']/t['recsketch_warm']:.2f} | "
                  f"{(t['scipy_csr_build'] + t['scipy_csr'])/t['recsketch_first']:.1f}x |")
    for b in data["benchmarks"]:
        if "rss_growth_mib" in b["extra_info"]:
            e = b["extra_info"]
            print(f"\nresident growth for {e['matrices']} matrices at d={e['d']}: {e['rss_growth_mib']:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1])
