"""bench_torch.py's measurement of the all-layers EfficientNet-Lite0 capture, one process per
code version, for alternated old/new runs in one sitting (see run_alternated.sh):

    [OLD_PKG=DIR] python bench/old_new/torch_cmp.py LABEL D [THREADS]

Captures, then sketches with a new Sketcher (cold walk cache); the forward pass is the min of 3
before and 3 after. Prints sketch / forward in wall-clock and CPU time, a hash of the sketches
and the load average. Needs the torch and models extras (tests/real_models.py).
"""
import hashlib
import os
import sys
import time

import _overlay  # noqa: F401  (before recsketch)
import numpy as np
import recsketch as rs
import torch
from recsketch.torch import capture

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
import real_models  # noqa: E402

label, target = sys.argv[1], int(sys.argv[2])
nt = int(sys.argv[3]) if len(sys.argv) > 3 else None
model = real_models.efficientnet()
x, _ = real_models.photos(crops=1)
x = torch.from_numpy(x[:8])


def clocks():
    return np.array([time.perf_counter(), time.process_time()])


def forward():
    best = np.full(2, np.inf)
    with torch.no_grad():
        for _ in range(3):
            t = clocks()
            model(x)
            best = np.minimum(best, clocks() - t)
    return best


p = rs.suggest_block_sparse(target)
sk = rs.Sketcher(p.d_sketch, block_size=p.block_size, density=p.density, seed=1)
f = forward()
graphs = capture(model, x, d_sketch=sk.d_sketch)
t = clocks()
S = sk.sketch_many(graphs, num_threads=nt)
s = clocks() - t
f = np.minimum(f, forward())
print(f"[torch_cmp] {label:4s} d={sk.d_sketch} threads={nt} "
      f"objects={sum(len(g) for g in graphs)} forward {f[0]:.3f}s wall {f[1]:.3f}s cpu | "
      f"sketch {s[0]:.3f}s wall {s[1]:.3f}s cpu | sketch/forward {s[0] / f[0]:.2f}x wall "
      f"{s[1] / f[1]:.2f}x cpu | {hashlib.sha1(S.tobytes()).hexdigest()[:12]} | "
      f"load {os.getloadavg()[0]:.2f}", flush=True)
