"""Sketching real-shaped graphs (issue 11): many modules used once per call, the 80-module
graph, a CNN's 4-layer chain and the 50-object scene, at d = 4k, 16k and 64k, both families.

Every group holds recsketch and its baselines (bench/real_shapes.py): "fair", the same
level-batched algebra in NumPy (CSR matmat where the matrices fit in memory, else recsketch's
batched products), and "naive", the object-by-object recursion (only where it finishes in
reasonable time). extra_info records objects per second and `bound_fraction`: the time the
unavoidable adds take at one core's SIMD add rate as the library's own probe measures it
(real_shapes.bound_seconds and peak_add_rate: rs._core.add_rate_probe) divided by the measured time (1 = at the bound; a multi-threaded run can pass
it). `streaming_add_rate` records what NumPy's add loop reaches on this machine.

Run: pytest bench/bench_many_modules.py --benchmark-only --benchmark-json=many.json
"""

import functools

import numpy as np
import pytest

import recsketch as rs
from real_shapes import (LevelBaseline, bound_seconds, chain_scene, csr_products,
                         eighty_module_scene, many_module_scene, measured_add_rate, naive_sketch,
                         peak_add_rate,
                         native_products, roles_of)
from scene import scene as fifty_object_scene

SIZES = {("orthogonal", "4k"): 4096, ("orthogonal", "16k"): 16384, ("orthogonal", "64k"): 65536,
         ("block_sparse", "4k"): 4095, ("block_sparse", "16k"): 16371,
         ("block_sparse", "64k"): 65520}
# rounds per benchmark: a d = 64k block_sparse call of the many-module scene takes tens of
# seconds, so 64k runs one round (its figures are single measurements)
ROUNDS = {"4k": 3, "16k": 3, "64k": 1}
SCENES = {
    "many": (many_module_scene, 2),   # scene, graphs per call
    "eighty": (eighty_module_scene, 1),
    "chain": (chain_scene, 1),
    "fifty": (fifty_object_scene, 1),
}


def sketcher(family, size):
    """A new Sketcher, with the process's walk cache emptied: every implementation of a group
    starts equally cold (a shared, cached Sketcher let only the first one run fresh)."""
    rs._core.clear_walk_cache()
    d = SIZES[(family, size)]
    return rs.Sketcher(d, family="orthogonal", seed=1) if family == "orthogonal" \
        else rs.Sketcher(d, seed=1)


@functools.lru_cache(maxsize=1)
def add_rate():
    return peak_add_rate()


@functools.lru_cache(maxsize=1)
def streaming_rate():
    return measured_add_rate()


IMPLS = ["recsketch", "recsketch_1thread", "fair", "naive"]


def _graphs(scene, call, impl=None):
    make, n = SCENES[scene]
    # "many" and "eighty" get fresh modules in every call (as a stream of real inputs would),
    # and each implementation its own module names, so no implementation meets modules another
    # one built; "chain" and "fifty" reuse theirs.
    offset = 0 if impl is None or scene not in ("many", "eighty") else 100 * (IMPLS.index(impl) + 1)
    return [make(1000 * (call + offset) + k) for k in range(n)]


def _uses_csr(scene, family, size):
    return family == "block_sparse" and scene in ("chain", "fifty") and size == "4k"


CASES = [(s, f, z) for s in SCENES for f in ("orthogonal", "block_sparse")
         for z in ("4k", "16k", "64k")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scene,family,size", CASES)
def test_sketch(benchmark, scene, family, size, impl):
    sk = sketcher(family, size)
    d = sk.d_sketch
    if impl == "naive" and (size == "64k" or size == "16k" and family == "block_sparse"
                            or scene == "many" and size == "16k"):
        pytest.skip("the naive recursion takes minutes here")
    benchmark.group = f"sketch {scene} {family} d={d}"
    graphs0 = _graphs(scene, 0)
    # "many" and "eighty" take fresh modules in every round (a stream of real inputs), built
    # before the timing; "chain" and "fifty" reuse theirs (warmed here).
    fresh = scene in ("many", "eighty")
    n_rounds = ROUNDS[size]
    rounds = iter([_graphs(scene, c, impl) for c in range(1, n_rounds + 1)] if fresh
                  else [graphs0] * n_rounds)
    if not fresh:
        sk.sketch_many(graphs0)
    if impl.startswith("recsketch"):
        threads = 1 if impl == "recsketch_1thread" else None
        run = lambda: sk.sketch_many(next(rounds), num_threads=threads)
    else:
        matrix = (csr_products(sk, roles_of(graphs0)) if _uses_csr(scene, family, size)
                  else native_products(sk))
        base = LevelBaseline(d, matrix,
                             embeddings=LevelBaseline.embeddings_like(sk, graphs0, matrix))
        # the baseline computes the library's sketches
        ref = sk.sketch_many(graphs0)
        np.testing.assert_allclose(base.sketch_many(graphs0), ref, rtol=0,
                                   atol=2e-4 * np.abs(ref).max())
        if impl == "fair":
            # On fresh scenes the baseline calls recsketch's own products (a CSR of a matrix
            # used once costs more than applying it): it then measures the schedule only.
            benchmark.extra_info["baseline"] = ("same products, Python schedule"
                                                if not _uses_csr(scene, family, size)
                                                else "CSR products, Python schedule")
            run = lambda: base.sketch_many(next(rounds))
        else:
            run = lambda: [naive_sketch(g, d, matrix) for g in next(rounds)]
    benchmark.pedantic(run, rounds=n_rounds, iterations=1, warmup_rounds=0)
    t = benchmark.stats.stats.min
    objects = sum(len(g) for g in graphs0)
    bound = bound_seconds(sk, graphs0, add_rate())
    benchmark.extra_info.update(objects=objects, objects_per_s=objects / t,
                                ms_per_object=1e3 * t / objects, bound_s=bound,
                                bound_fraction=bound / t, d=d,
                                streaming_add_rate=streaming_rate())


_BUSY = "import time\nt = time.time()\nwhile time.time() - t < 600: pass\n"


@pytest.fixture
def competing_load():
    """A busy process on the machine for the duration of a benchmark."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", _BUSY])
    yield
    p.kill()
    p.wait()


@pytest.mark.parametrize("threads", [1, 2])
def test_sketch_under_load(benchmark, competing_load, threads):
    """Two threads must not be slower than one while another process keeps a core busy
    (compare the two entries of the group)."""
    sk = sketcher("block_sparse", "4k")
    benchmark.group = f"sketch many block_sparse d={sk.d_sketch} under a competing load"
    # a new Sketcher (above) and graphs of its own per thread count: both runs start cold
    rounds = iter([_graphs("many", 100 + 10 * threads + c) for c in range(3)])
    benchmark.pedantic(lambda: sk.sketch_many(next(rounds), num_threads=threads), rounds=3,
                       iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(threads=threads)


_MEMORY = """
import os, sys, threading, time
sys.path.insert(0, {bench!r})
import recsketch as rs
from real_shapes import many_module_scene
family, d = {family!r}, {d}
sk = rs.Sketcher(d, family="orthogonal", seed=1) if family == "orthogonal" else rs.Sketcher(d, seed=1)
graphs = [many_module_scene(5000 + k) for k in range(54)]
names = {{h.module for g in graphs for h in g}}
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, done = [0], []
def watch():  # the call releases the GIL: sample the resident set while it runs
    while not done:
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
before = rss()
w = threading.Thread(target=watch); w.start()
out = sk.sketch_many(graphs)
done.append(1); w.join()
from recsketch.graph import flatten
flat = flatten(graphs, d)  # the call's own copy of its input, which it holds throughout
inputs = sum(a.nbytes for a in (flat.attr, flat.attr_ptr, flat.module, flat.input_ptr,
                                flat.input_row, flat.input_weight))
print(len(names), max(peak[0], rss()) - before, out.nbytes, inputs)
"""


@pytest.mark.parametrize("family,size", [("orthogonal", "4k"), ("block_sparse", "4k")])
def test_memory_of_10000_distinct_modules(benchmark, family, size):
    """Peak resident-set growth (sampled every 5 ms) while one sketch_many call sketches 54
    graphs with >= 10,000 distinct modules; the documented budget is kSketchWorkingBytes
    (256 MiB) of working memory plus the walk cache's limit (64 MiB) plus the outputs plus the
    call's flattened copy of its input (8 bytes per attribute; the Sketcher's matrix handles,
    a few hundred bytes per module, come on top)."""
    import os
    import subprocess
    import sys
    d = SIZES[(family, size)]
    code = _MEMORY.format(bench=os.path.dirname(__file__), family=family, d=d)
    result = {}

    def run():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        (result["modules"], result["grew"], result["outputs"],
         result["inputs"]) = map(int, out.stdout.split())

    benchmark.group = "memory: 10,000 distinct modules in one call"
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    budget = (256 << 20) + (64 << 20) + result["outputs"] + result["inputs"]
    assert result["modules"] >= 10000
    benchmark.extra_info.update(d=d, modules=result["modules"],
                                peak_rss_growth_mib=result["grew"] / 2**20,
                                input_copy_mib=result["inputs"] / 2**20,
                                budget_mib=budget / 2**20,
                                within_budget=result["grew"] <= budget)
