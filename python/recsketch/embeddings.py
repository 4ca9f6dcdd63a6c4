"""Leaf embeddings: a leaf object's sketch as one small dense product, where it pays.

A leaf's object sketch is linear in ``[x; 1]``: ``A_M [x; 1]`` with
``A_M = P(R[M,0]) P(R[1]) [R[M,1] e_1 .. R[M,1] e_k, R[M,2] e_1] / 4``, a ``(k + 1) x d`` matrix
(cpp/include/recsketch/sketch.hpp). With it a leaf costs ``(k + 1) d`` multiply-adds instead of
two full products and a short one, but building it costs ``2 (k + 1)`` full products and
``(k + 1) d`` float64 of memory.

Which leaves use it is decided per graph, from that graph alone: module M's leaves in graph G
are embedded when ``n_leaves(G, M) * saving > building`` (in adds, see ``_costs``) and the
embedding fits the budget. A sketch's bits therefore depend on its graph and the seed only,
never on the batch it came in or on what happens to be cached (the embedded path sums in
another order than the products, so the choice must not depend on anything else). Deciding
per call would let a graph's bits change with its batch; that is why the count is per graph.
Built embeddings are kept in a cache bounded by the same budget (least recently used evicted
first), so a module whose leaves are embedded graph after graph is built once.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._cache import ByteLRU

__all__ = ["EMBEDDING_BUDGET_BYTES", "LeafEmbeddings"]

# Bytes of leaf embeddings one Sketcher holds at most (cache and the call in flight together);
# no single embedding larger than this is ever built.
EMBEDDING_BUDGET_BYTES = 256 << 20


def _costs(sketcher: Any, k: int) -> Tuple[float, float]:
    """(adds saved per embedded leaf, adds to build A_M) for a module with k attributes."""
    d = sketcher.d_sketch
    if sketcher.family == "orthogonal":
        full = 3.0 * d * math.log2(d)        # three Walsh-Hadamard transforms
        short = full                         # a short input is still a full transform
    else:
        per_column = sketcher.density * d / sketcher.block_size * (
            sketcher.block_size / 3 + 4 + math.ceil(math.log2(d)))
        full = d * per_column
        short = k * per_column
    saving = 2 * full + short - (k + 1) * d
    building = (k + 1) * 2 * full + short
    return saving, building


class LeafEmbeddings:
    """Chooses leaf rows to embed (per graph) and keeps the embeddings, within a byte budget."""

    def __init__(self, budget_bytes: int = EMBEDDING_BUDGET_BYTES):
        self.budget_bytes = int(budget_bytes)
        # thread-safe (one Sketcher may sketch from several threads), bounded by the same budget
        self._cache = ByteLRU(self.budget_bytes)

    def plan(self, sketcher: Any, flat: Any) -> Tuple[Optional[np.ndarray], Dict[int, int]]:
        """Per-row flags (uint8, or None if no row is embedded) and {module index: k} of the
        embeddings the flagged rows need. Each graph's choice depends on that graph only."""
        d = sketcher.d_sketch
        fan_in = np.diff(flat.input_ptr)
        leaf = fan_in == 0
        leaf[flat.graph_ptr[1:] - 1] = False  # output rows
        if not leaf.any():
            return None, {}
        flags = np.zeros(flat.module.size, dtype=np.uint8)
        chosen: Dict[int, int] = {}
        for gi in range(flat.graph_ptr.size - 1):
            r0, r1 = int(flat.graph_ptr[gi]), int(flat.graph_ptr[gi + 1])
            rows = np.flatnonzero(leaf[r0:r1]) + r0
            if rows.size == 0:
                continue
            mods, counts = np.unique(flat.module[rows], return_counts=True)
            wins = []
            for m, n in zip(mods.tolist(), counts.tolist()):
                k = flat.module_dim[flat.modules[m]]
                saving, building = _costs(sketcher, k)
                if n * saving > building:
                    wins.append((n * saving - building, m, k))
            # within the budget, most useful first (ties by module name: a function of the graph)
            wins.sort(key=lambda w: (-w[0], flat.modules[w[1]]))
            used = 0
            for _, m, k in wins:
                size = (k + 1) * d * 8
                if used + size > self.budget_bytes:
                    continue
                used += size
                chosen[m] = k
                flags[rows[flat.module[rows] == m]] = 1
        if not chosen:
            return None, {}
        return flags, chosen

    def bytes_needed(self, sketcher: Any, chosen: Dict[int, int]) -> int:
        return sum((k + 1) * sketcher.d_sketch * 8 for k in chosen.values())

    def arrays(self, sketcher: Any, flat: Any, chosen: Dict[int, int],
               num_threads: Optional[int] = None) -> List[Optional[np.ndarray]]:
        """A_M for the chosen modules (None elsewhere), one entry per module of `flat`; the
        missing ones are built with ``num_threads`` (the sketching call's)."""
        out: List[Optional[np.ndarray]] = [None] * len(flat.modules)
        for m, k in chosen.items():
            out[m] = self._get(sketcher, flat.modules[m], k, num_threads)
        return out

    def _get(self, sketcher: Any, name: str, k: int, num_threads: Optional[int]) -> np.ndarray:
        def build() -> np.ndarray:
            t = num_threads
            rows = np.empty((k + 1, sketcher.d_sketch))
            rows[:k] = sketcher.module_matrix(name, 1).apply_short(np.eye(k), num_threads=t)
            rows[k] = sketcher.module_matrix(name, 2).apply_short(np.ones((1, 1)),
                                                                  num_threads=t)[0]
            emb = 0.25 * sketcher.module_matrix(name, 0).half(
                sketcher.position_matrix(1).half(rows, num_threads=t), num_threads=t)
            emb.setflags(write=False)
            return emb

        return self._cache.get((name, k), build)
