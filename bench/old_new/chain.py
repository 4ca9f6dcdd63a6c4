"""Per-object time of the 4-object chain scene (bench/real_shapes.py), for alternated old/new
runs in one sitting (see run_alternated.sh).

    python bench/old_new/chain.py D REPS THREADS          # this build
    OLD_PKG=DIR python bench/old_new/chain.py D REPS THREADS   # a previous build (_overlay.py)

One thread: thread CPU time; more: wall clock. Prints min and median ms per object and a hash
of the sketches (old and new must agree bit for bit).
"""
import hashlib
import os
import sys
import time

import _overlay  # noqa: F401  (before recsketch)
import numpy as np
import recsketch as rs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from real_shapes import chain_scene  # noqa: E402

target, reps, nt = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
p = rs.suggest_block_sparse(target)
sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=1)
g = chain_scene(0)
sk.sketch_many([g], num_threads=nt)
clock = time.thread_time if nt == 1 else time.perf_counter
ts = []
for _ in range(reps):
    t = clock()
    S = sk.sketch_many([g], num_threads=nt)
    ts.append(clock() - t)
print(f"chain d={p.d_sketch} threads={nt}: {min(ts) / 4 * 1e3:.3f} ms/object (min), median "
      f"{np.median(ts) / 4 * 1e3:.3f}", hashlib.sha1(S.tobytes()).hexdigest()[:12])
