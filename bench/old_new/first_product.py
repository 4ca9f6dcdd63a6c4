"""First product of a fresh block-sparse matrix against a warm one, one thread, thread CPU time
(min over REPS), for alternated old/new runs in one sitting (see run_alternated.sh).

    [OLD_PKG=DIR] python bench/old_new/first_product.py D [REPS] [WIDTHS, e.g. 1,4,8]

Per panel width n: warm (walk cached), first (fresh matrix: walks and fills the cache),
nocache (walk cache off) in ms, their ratios, and minor page faults per call.
"""
import itertools
import resource
import sys
import time

import _overlay  # noqa: F401  (before recsketch)
import numpy as np
import recsketch as rs

target = int(sys.argv[1])
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
widths = [int(w) for w in (sys.argv[3] if len(sys.argv) > 3 else "1,4,8").split(",")]
p = rs.suggest_block_sparse(target)
sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=1)
counter = itertools.count()
rng = np.random.default_rng(0)


def fresh():
    return sk.module_matrix(f"f{next(counter)}", 0)


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(matrix, x, key, res, flt):
    f0, t = faults(), time.thread_time()
    matrix.matvec(x, num_threads=1)
    res[key].append(time.thread_time() - t)
    flt[key] += faults() - f0


for n in widths:
    x = rng.random((n, p.d_sketch)).astype(np.float32)
    W = fresh()
    W.matvec(x, num_threads=1)
    res = {"warm": [], "first": [], "nocache": []}
    flt = dict.fromkeys(res, 0)
    for _ in range(reps):
        timed(W, x, "warm", res, flt)
        timed(fresh(), x, "first", res, flt)
        rs.set_walk_cache_limit(0)
        timed(W, x, "nocache", res, flt)
        rs.set_walk_cache_limit(64 << 20)
        W.matvec(x, num_threads=1)  # W's walk back in the cache
    m = {k: min(v) * 1e3 for k, v in res.items()}
    print(f"d={p.d_sketch} n={n}: warm {m['warm']:.3f} first {m['first']:.3f} nocache "
          f"{m['nocache']:.3f} ms  first/warm {m['first'] / m['warm']:.2f} nocache/warm "
          f"{m['nocache'] / m['warm']:.2f} faults/call "
          + str({k: v / reps for k, v in flt.items()}), flush=True)
