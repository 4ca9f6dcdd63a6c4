"""`recsketch info`: the SIMD path chosen at run time and OpenMP, checked against the OS."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import recsketch as rs


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_simd_path_matches_the_cpu():
    info = rs.build_info()
    assert isinstance(info["simd"], str) and info["simd"]
    flags = _cpu_flags()
    if platform.machine() == "x86_64" and flags is not None and not info["native"]:
        # the loader's choice agrees with what the kernel reports about this CPU
        assert info["simd"].startswith("avx2") == ("avx2" in flags)


def test_openmp_report_is_consistent():
    info = rs.build_info()
    if info["openmp"]:
        assert isinstance(info["openmp_version"], int) and info["openmp_version"] >= 200203  # MSVC: 2.0
    else:
        assert info["openmp_version"] is None and info["max_threads"] >= 1


def test_info_command_prints_simd_and_openmp():
    out = subprocess.run([sys.executable, "-m", "recsketch", "info"], capture_output=True,
                         text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    assert "SIMD path   : " + rs.build_info()["simd"] in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("OpenMP"))
    if rs.build_info()["openmp"]:
        # OMP_NUM_THREADS reaches the core: 1 thread by default in that process
        assert "on (OpenMP" in line and "1 threads by default" in line
    else:
        assert "off" in line
