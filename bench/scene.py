"""The benchmark scene (50 objects, depth 3) and a plain NumPy/SciPy implementation of the
sketch, written the way a user would: CSR matrices built once, then the recursion in Python."""

from __future__ import annotations

import numpy as np

import recsketch as rs

TOP, CHILDREN = 10, 4   # 10 top-level objects with 4 inputs each: 50 objects, depth 3


def scene(seed: int, n_top: int = TOP, children: int = CHILDREN, attrs: str = "uniform"
          ) -> rs.Graph:
    """``n_top`` top-level objects (modules alternate wall/cat), each over ``children`` leaves
    (edge/part). ``attrs``: "uniform" (uniform, then normalised) or "relu" (normalised ReLU of a
    Gaussian, about half the coordinates zero, like the features of a real network)."""
    rng = np.random.default_rng(seed)

    def unit(m):
        if attrs == "relu":
            x = np.maximum(rng.standard_normal(m), 0.0)
            x[rng.integers(m)] += 1e-3  # never all zero
        else:
            x = rng.random(m)
        return x / np.linalg.norm(x)

    g = rs.Graph()
    top = []
    for t in range(n_top):
        kids = [g.add("part" if k % 2 else "edge", unit(16)) for k in range(children)]
        top.append(g.add("cat" if t % 2 else "wall", unit(32),
                         [(h, 1.0 / children) for h in kids]))
    g.set_output([(h, 1.0 / n_top) for h in top])
    return g


class ScipySketcher:
    """Section 3.3 with SciPy CSR float32 matrices (the baseline)."""

    def __init__(self, sk: rs.Sketcher, modules, n_positions: int):
        self.d = sk.d_sketch
        self.mod = {m: [sk.module_matrix(m, k).to_scipy(np.float32) for k in range(3)]
                    for m in modules}
        self.pos = [None] + [sk.position_matrix(i).to_scipy(np.float32)
                             for i in range(1, n_positions + 1)]

    def sketch(self, g: rs.Graph) -> np.ndarray:
        d = self.d
        half = lambda R, v: 0.5 * (v + R @ v)
        e1 = np.zeros(d, np.float32)
        e1[0] = 1
        obj = {}
        for h in g:
            R0, R1, R2 = self.mod[h.module]
            x = np.zeros(d, np.float32)
            a = g.attributes(h)
            x[:a.size] = a
            s_attr = 0.5 * (R1 @ x) + 0.5 * (R2 @ e1)
            s_in = np.zeros(d, np.float32)
            for i, (c, w) in enumerate(g.inputs(h), start=1):
                s_in += w * half(self.pos[i], obj[c.index])
            t = 0.5 * half(self.pos[1], s_attr) + 0.5 * half(self.pos[2], s_in)
            obj[h.index] = half(R0, t)
        out = np.zeros(d, np.float32)
        for i, (c, w) in enumerate(g.output, start=1):
            out += w * half(self.pos[i], obj[c.index])
        return out
