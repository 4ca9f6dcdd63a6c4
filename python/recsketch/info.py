"""What this installation of recsketch is: version, native build, threads, families."""

from __future__ import annotations

from typing import Any, Dict

from ._native import _core
from ._version import __version__


def build_info() -> Dict[str, Any]:
    """Version, OpenMP availability and version, default thread count, the SIMD path the
    kernels run with on this CPU, compiler and matrix families."""
    info = dict(_core.build_info())
    info["version"] = __version__
    info["families"] = ["block_sparse", "orthogonal"]
    return info


def format_info() -> str:
    info = build_info()
    lines = [f"recsketch {info['version']}"]
    lines.append(f"  native core : {info['compiler']}"
                 f"{' (-march=native)' if info['native'] else ' (portable build)'}")
    if info["openmp"]:
        openmp = (f"on (OpenMP {info['openmp_version']}, {info['max_threads']} threads by "
                  "default; set with num_threads= or OMP_NUM_THREADS)")
    else:
        openmp = ("off (the thread pool still runs; the default thread count is the "
                  "hardware's)")
    lines.append(f"  OpenMP      : {openmp}")
    lines.append(f"  threads     : {info['max_threads']}")
    lines.append(f"  SIMD path   : {info['simd']}")
    lines.append(f"  families    : {', '.join(info['families'])}")
    cache = _core.walk_cache_info()
    lines.append(f"  walk cache  : {cache['bytes'] / 2**20:.1f} of {cache['limit'] / 2**20:.0f} MiB")
    return "\n".join(lines)
