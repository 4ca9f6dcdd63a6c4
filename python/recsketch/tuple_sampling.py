"""Footnote 2's sampled tuples: sketches in which every tuple keeps a sampled subset of its terms.

The paper (Section 3.3, footnote 2): "Rather than taking a convex combination of
((I + R_i) / 2) s_i, one might instead sample a few of them [...] it also makes it easier to do
the dictionary learning in Section 4." Why: with few draws a deep object's words are often
alone in a sample, free of the diffuse words of the objects above it, at the price of a noisy
estimate per sample (measurements: docs/unmix.md, "Round 3").

The scheme, for ``k = tuple_sampling``:

* Every tuple sketch ``sum_i w_i P(R_i) s_i`` is sampled: the output pseudo-object's input
  tuple, each object's input tuple and each object's (attr, input) tuple (weights 1/2, 1/2).
  Terms of weight 0 and zero sub-sketches (the input of an object whose inputs all have weight
  0 or that has none) are not terms.
* A tuple of one term is kept exactly. Otherwise ``k`` independent draws with replacement pick
  term ``i`` with probability ``w_i / W`` (``W = sum_i w_i``); a term drawn ``c`` times keeps
  weight ``c (W / k)``. So ``E[kept weight of i] = w_i``: the sampled sketch is an unbiased
  estimate of the plain one, and larger ``k`` brings it closer.
* Each object draws once (its sketch is one vector, whichever parents read it), so a shared
  child is consistent across its parents. The ``(I + R) / 2`` factors are not sampled.

Draws (bit-reproducible on every machine): a 64-bit key is the first 8 bytes (little-endian)
of SHA-256 over ``b"recsketch.tuple_sampling"``, the Sketcher seed and ``sample_seed`` (8 bytes
little-endian each) and the graph's content (:func:`graph_digest`); the ``n``-th uniform is
``(splitmix64(key + n mod 2^64) >> 11) / 2^53``, consumed objects in ``Handle.index`` order
(the (attr, input) tuple's ``k`` draws, then the input tuple's ``k``, each only if it has two or
more terms, the input tuple's even when the input term was not kept), then the output tuple's.
A draw ``u`` picks the first term whose cumulative weight (summed in input order) exceeds
``u W`` (the last term if rounding leaves none). The same graph, Sketcher seed and
``sample_seed`` give the same sketch, alone or in any batch; so identical graphs in one batch
get identical draws (pass a different ``sample_seed`` per graph for independent samples).

The sketch is evaluated in float64 with the Sketcher's own matrices (``RandomMatrix.half`` and
``apply_short``), graph by graph, only for the objects a kept term reaches, depth-first from
the output's kept terms (inputs in position order, each object after its inputs), and returned
in the Sketcher's dtype. Memory: an object's sketch is freed once its last reader (a parent
that kept it, or the output) has used it, so at most the *frontier* is live: one float64
``d_sketch`` vector per evaluated object that an unevaluated reader still needs, plus a few
scratch vectors. Depth-first, on a tree that is at most the kept inputs of the objects on one
path from the output (at most depth x fan-in); a child shared by several parents stays live
until the last of them is evaluated.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .graph import Graph

__all__ = ["MAX_TUPLE_SAMPLING", "draw_key", "graph_digest", "sample_draws", "sampled_sketch"]

# The largest k accepted. A tuple's kept weights deviate from the plain ones by
# E|kept - w|^2 = (W^2 - sum_i w_i^2) / k <= W^2 / k, so at k = 1024 every tuple is within
# W / 32 (rms) of the plain sketch's: larger k buys closeness the plain sketch gives exactly, at
# k draws per tuple.
MAX_TUPLE_SAMPLING = 1 << 10

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def graph_digest(graph: Graph) -> bytes:
    """SHA-256 of a graph's content: per object in index order its module (UTF-8, with its
    length), attributes and inputs (index, weight), then the output's inputs; integers as
    8-byte little-endian, floats as little-endian float64."""
    h = hashlib.sha256()
    h.update(struct.pack("<q", len(graph)))
    for obj in graph:
        name = obj.module.encode("utf-8")
        x = np.ascontiguousarray(graph.attributes(obj), dtype="<f8")
        ins = graph.inputs(obj)
        h.update(struct.pack("<q", len(name)) + name + struct.pack("<q", x.size) + x.tobytes())
        h.update(struct.pack("<q", len(ins)))
        for child, w in ins:
            h.update(struct.pack("<qd", child.index, w))
    out = graph.output or []
    h.update(struct.pack("<q", len(out)))
    for child, w in out:
        h.update(struct.pack("<qd", child.index, w))
    return h.digest()


class _Uniforms:
    """The uniforms ``(splitmix64(key + n) >> 11) / 2^53``, n = 0, 1, ..., ``k`` at a time
    (uint64 arithmetic wraps mod 2^64, as splitmix64 needs)."""

    def __init__(self, key: int):
        self._key = np.uint64(key)
        self._n = 0

    def take(self, k: int) -> np.ndarray:
        z = np.arange(self._n, self._n + k, dtype=np.uint64) + self._key
        self._n += k
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
        return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _keep(weights: Sequence[float], k: int, uniform: _Uniforms) -> List[float]:
    """Kept weight of each term (input order; 0 for a term of weight 0 or not drawn)."""
    w = np.asarray(weights, dtype=np.float64)
    live = np.flatnonzero(w > 0)
    kept = np.zeros(len(w))
    if len(live) <= 1:
        kept[live] = w[live]
        return kept.tolist()
    cum = np.cumsum(w[live])  # sequential, in input order
    total = float(cum[-1])
    # side="right": the first term whose cumulative weight exceeds u W
    picks = np.searchsorted(cum, uniform.take(k) * total, side="right")
    np.minimum(picks, len(live) - 1, out=picks)
    kept[live] = np.bincount(picks, minlength=len(live)) * (total / k)
    return kept.tolist()


def sample_draws(graph: Graph, k: int, key: int
                 ) -> Tuple[Dict[int, Tuple[float, Dict[int, Tuple[int, float]]]],
                            Dict[int, Tuple[int, float]]]:
    """The draws of one graph: per object index, (the kept weight of its attr term, {input
    position (from 1): (input object index, its kept weight times the kept weight of the
    input term)}), and the output's {position: (object index, kept weight)} (the module
    docstring's order and rule)."""
    uniform = _Uniforms(key)
    per: Dict[int, Tuple[float, Dict[int, Tuple[int, float]]]] = {}
    for obj in graph:
        ins = graph.inputs(obj)
        live_in = any(w > 0 for _, w in ins)
        attr_w, in_w = (_keep([0.5, 0.5], k, uniform) if live_in else (0.5, 0.0))
        child: Dict[int, Tuple[int, float]] = {}
        if live_in:  # drawn even when the input term was not kept: a fixed draw order
            kept = _keep([w for _, w in ins], k, uniform)
            for p, ((c, _), kw) in enumerate(zip(ins, kept), start=1):
                if kw > 0 and in_w > 0:
                    child[p] = (c.index, in_w * kw)
        per[obj.index] = (attr_w, child)
    out = graph.output or []
    kept = _keep([w for _, w in out], k, uniform)
    top = {p: (c.index, kw) for p, ((c, _), kw) in enumerate(zip(out, kept), start=1) if kw > 0}
    return per, top


def draw_key(seed: int, sample_seed: int, graph: Graph) -> int:
    """The 64-bit key of a graph's draws (module docstring)."""
    h = hashlib.sha256(b"recsketch.tuple_sampling" + struct.pack("<QQ", seed, sample_seed)
                       + graph_digest(graph))
    return int.from_bytes(h.digest()[:8], "little")


def sampled_sketch(sketcher, graph: Graph, k: int, sample_seed: int,
                   num_threads: Optional[int], trace: Optional[List[Tuple[int, int]]] = None
                   ) -> np.ndarray:
    """The sampled overall sketch of one (validated) graph, float64 ``(d_sketch,)``.

    ``trace``: if a list, receives ``(object index, number of live object sketches)`` after
    each object is evaluated, in evaluation order (the live count never exceeds its largest
    entry: the tests check it against the module docstring's frontier)."""
    per, top = sample_draws(graph, k, draw_key(sketcher.seed, sample_seed, graph))
    objs = {obj.index: obj for obj in graph}
    t = num_threads
    # the objects a kept term reaches, children before parents (iterative: any depth), and
    # how many kept terms read each (its sketch is freed after the last)
    order: List[int] = []
    readers: Dict[int, int] = {}
    for _, (i, _) in top.items():
        readers[i] = readers.get(i, 0) + 1
    stack = [(i, False) for _, (i, _) in sorted(top.items(), reverse=True)]
    seen = set()
    while stack:
        i, done = stack.pop()
        if done:
            order.append(i)
            continue
        if i in seen:
            continue
        seen.add(i)
        stack.append((i, True))
        for _, (j, _) in sorted(per[i][1].items(), reverse=True):
            readers[j] = readers.get(j, 0) + 1
            if j not in seen:
                stack.append((j, False))
    memo: Dict[int, np.ndarray] = {}

    def read(j: int) -> np.ndarray:
        readers[j] -= 1
        return memo[j] if readers[j] else memo.pop(j)

    for i in order:
        o = objs[i]
        attr_w, child = per[i]
        tup = np.zeros(sketcher.d_sketch)
        if attr_w > 0:
            x = np.asarray(graph.attributes(o), dtype=np.float64)
            s_attr = (sketcher.module_matrix(o.module, 1).apply_short(x / 2, num_threads=t)
                      + sketcher.module_matrix(o.module, 2).apply_short(np.array([0.5]),
                                                                        num_threads=t))
            tup += attr_w * sketcher.position_matrix(1).half(s_attr, num_threads=t)
        if child:
            s_in = np.zeros(sketcher.d_sketch)
            for p in sorted(child):
                j, w = child[p]
                s_in += w * sketcher.position_matrix(p).half(read(j), num_threads=t)
            tup += sketcher.position_matrix(2).half(s_in, num_threads=t)
        memo[i] = sketcher.module_matrix(o.module, 0).half(tup, num_threads=t)
        if trace is not None:
            trace.append((i, len(memo)))
    overall = np.zeros(sketcher.d_sketch)
    for p in sorted(top):
        i, w = top[p]
        overall += w * sketcher.position_matrix(p).half(read(i), num_threads=t)
    return overall
