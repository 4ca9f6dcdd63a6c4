"""Footnote 2's sampled tuples, measured (issue 13): do depth-3 identity words decode per sample?

The paper (Section 3.3, footnote 2): "Rather than taking a convex combination of
((I + R_i) / 2) s_i, one might instead sample a few of them [...] it also makes it easier to do
the dictionary learning in Section 4." This script implements that sketch with the library's
own seeded matrices and products (``RandomMatrix.half``, ``apply_short``) and measures it
against the plain sketch on the same teacher, matrices and inputs, in the same run.

The sampling scheme (``k`` = terms kept per tuple):

* Every tuple sketch ``sum_i w_i P(R_i) s_i`` (``P(R) = (I + R) / 2``) is sampled: the output
  pseudo-object's input tuple, every object's input tuple, and every object's (attr, input)
  tuple with weights (1/2, 1/2). Terms whose sub-sketch is the zero vector (the input of an
  object without inputs) are not terms.
* A tuple of one term is kept whole (exact). Otherwise ``k`` draws, independent and with
  replacement, with probability ``w_i / W`` (``W = sum_i w_i``); each draw keeps its term with
  weight ``W / k`` (a term drawn twice: ``2 W / k``), so larger ``k`` interpolates towards the
  plain sketch (every tuple of the teacher has at most two terms). So every sampled sketch is an
  unbiased estimate of the plain one: ``E[weight of term i] = k (w_i / W) (W / k) = w_i``.
* The ``(I + R) / 2`` factors are *not* sampled (the footnote samples the terms of the convex
  combination only), so an object's own ``2^(3(h-1))`` words stay in its sketch.
* Each object draws its two tuples once (memoised, as the object sketch is); the draws of
  sample ``s`` come from ``numpy.random.default_rng([seed, s])`` in object index order (the
  object's (attr, input) tuple, then its input tuple), then the output tuple. This is the
  scheme of ``Sketcher.sketch(..., tuple_sampling=k)`` (``recsketch.tuple_sampling``) with
  another random stream; ``--check`` also runs the words on the library's draws against it.

Implementation: the teacher ``deep`` (``bench/teacher_network.py``) is a fixed tree, so an
object's sketch contribution is ``c * P_path (R[M,1] x / 2 + R[M,2] e_1 / 2)``: a fixed operator
``P_path`` (its chain of ``P(R)`` factors: the attr slot ``R_1``, its wrapper ``R[M,0]``, its
position ``R_i``, then for each ancestor the input slot ``R_2``, the wrapper and the position)
times a per-sample scalar ``c`` (the product of the kept tuple weights on its path; 0 when a draw
leaves it out). The ``P_path R[M,k] e_j`` words are computed once per object with the
library's products and every sample's sketch is ``sum_obj c_obj(s) (word matrix^T [x/2, 1/2])``.
``--check`` verifies this against ``Sketcher.sketch`` (plain) and against a direct recursive
evaluation of the sampled sketch (same draws), at a small ``d``.

Measured per module depth, over the samples that hold the object (``c > 0``):

* ``held``: the share of samples whose sketch holds the object's words at all;
* ``r``: the noise ratio of ``bench/teacher_unmix.py``,
  ``rms(y - identity word) sqrt(d q) / (g max_j x_j)`` (a block decodes below ~0.3), median;
* ``blocks ok``: the essential columns' nonzero blocks (columns with 90% quantile of ``x_j`` >=
  0.2, plus the count column) whose rounded signs the library's block decoder
  (:func:`recsketch.decode_blocks`) decodes to the right column, over held samples;
* ``votes``: right block decodes per column per sample over *all* samples (what a per-sample learner
  collects);
* the top-level queries (``Sketcher.attributes`` of the root, l-inf error of the unit-normalised
  estimate; ``Sketcher.mass`` of root (true 1) and of a mid (true its weight)), per sample.

Usage: PYTHONPATH=python python bench/tuple_sampling.py [--check] [--d 1048608 --q 2e-4]
       [--samples 400] [--plain 100] [--k 1 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
from recsketch.tuple_sampling import draw_key, sample_draws  # noqa: E402
from teacher_network import build_teacher  # noqa: E402

Draws = Tuple[Dict[int, Tuple[float, Dict[int, float]]], Dict[int, float]]


def _sample_terms(weights: Sequence[float], k: Optional[int],
                  rng: Optional[np.random.Generator]) -> List[float]:
    """The kept weight of each term (0 if not kept): exact if ``k`` is None or the tuple has one
    term, else ``k`` draws with replacement, prob ``w_i / W``, weight ``W / k``."""
    w = np.asarray(weights, dtype=np.float64)
    if k is None or len(w) == 1:
        return w.tolist()
    total = float(w.sum())
    picks = rng.choice(len(w), size=k, replace=True, p=w / total)
    return (np.bincount(picks, minlength=len(w)) * (total / k)).tolist()


def draw(graph: rs.Graph, k: Optional[int], rng: Optional[np.random.Generator]) -> Draws:
    """Per object (index order): (kept weight of its attr term, {child index: kept weight of
    the child in its input sketch, already multiplied by the kept weight of the input term}),
    then the output tuple's {top index: weight}."""
    per: Dict[int, Tuple[float, Dict[int, float]]] = {}
    for h in graph:
        ins = graph.inputs(h)
        terms = [0.5] + ([0.5] if ins else [])
        kept = _sample_terms(terms, k, rng)
        w_in = kept[1] if ins else 0.0
        child: Dict[int, float] = {}
        if w_in > 0:
            for (c, w), kw in zip(ins, _sample_terms([w for _, w in ins], k, rng)):
                if kw > 0:
                    child[c.index] = child.get(c.index, 0.0) + w_in * kw
        per[h.index] = (kept[0], child)
    out = graph.output
    top = {}
    for (c, w), kw in zip(out, _sample_terms([w for _, w in out], k, rng)):
        if kw > 0:
            top[c.index] = top.get(c.index, 0.0) + kw
    return per, top


def coefficients(graph: rs.Graph, draws: Draws) -> Dict[int, float]:
    """``c`` of every object (a tree: one path each): the product of kept weights from the
    output down to its attr term."""
    per, top = draws
    c: Dict[int, float] = {}

    def walk(i: int, w: float) -> None:
        attr, child = per[i]
        c[i] = c.get(i, 0.0) + w * attr
        for j, wj in child.items():
            walk(j, w * wj)

    for i, w in top.items():
        walk(i, w)
    return c


def paths(graph: rs.Graph) -> Dict[int, List[Tuple[str, int]]]:
    """Per object, its chain of ``P(R)`` factors innermost first, as ("module", name) wrapper or
    ("position", i) entries (the attr slot is position 1, the input slot position 2)."""
    parent: Dict[int, Tuple[int, int]] = {}
    for h in graph:
        for pos, (c, _) in enumerate(graph.inputs(h), start=1):
            parent[c.index] = (h.index, pos)
    top = {c.index: pos for pos, (c, _) in enumerate(graph.output, start=1)}
    names = {h.index: h.module for h in graph}
    out = {}
    for h in graph:
        chain: List[Tuple[str, int]] = [("position", 1)]
        i = h.index
        while True:
            chain.append(("module", names[i]))
            if i in top:
                chain.append(("position", top[i]))
                break
            p, pos = parent[i]
            chain += [("position", pos), ("position", 2)]
            i = p
        out[h.index] = chain
    return out


def _factor(sk: rs.Sketcher, f: Tuple[str, object]) -> rs.RandomMatrix:
    return sk.module_matrix(f[1], 0) if f[0] == "module" else sk.position_matrix(f[1])


def words(sk: rs.Sketcher, graph: rs.Graph, spikes: Optional[Dict[int, np.ndarray]] = None
          ) -> Dict[int, np.ndarray]:
    """Per object, ``P_path [R[M,1] e_1 .. R[M,1] e_m, R[M,2] e_1]`` as rows ``(m + 1, d)``;
    the columns themselves (the identity words' spikes) go to ``spikes`` if given."""
    out = {}
    for i, chain in paths(graph).items():
        h = [x for x in graph if x.index == i][0]
        m = len(graph.attributes(h))
        v = np.concatenate([sk.module_matrix(h.module, 1).apply_short(np.eye(m)),
                            sk.module_matrix(h.module, 2).apply_short(np.ones((1, 1)))])
        if spikes is not None:
            spikes[i] = v
        for f in chain:
            v = _factor(sk, f).half(v)
        out[i] = v
    return out


def assemble(graph: rs.Graph, W: Dict[int, np.ndarray], c: Dict[int, float]) -> np.ndarray:
    """The sketch ``sum_obj c_obj P_path (R[M,1] x / 2 + R[M,2] e_1 / 2)``."""
    d = next(iter(W.values())).shape[1]
    y = np.zeros(d)
    for h in graph:
        ci = c.get(h.index, 0.0)
        if ci > 0:
            y += ci * (np.append(graph.attributes(h), 1.0) / 2) @ W[h.index]
    return y


def batch(graphs: List[rs.Graph], words_all: np.ndarray, order: List[int],
          C: List[Dict[int, float]]) -> np.ndarray:
    """``assemble`` for many graphs as one product: ``words_all`` stacks ``W[i]`` for ``i`` in
    ``order``."""
    coef = []
    for g, c in zip(graphs, C):
        hs = {h.index: h for h in g}
        coef.append(np.concatenate([c.get(i, 0.0) * np.append(g.attributes(hs[i]), 1.0) / 2
                                    for i in order]))
    return np.array(coef) @ words_all


def direct(sk: rs.Sketcher, graph: rs.Graph, draws: Draws) -> np.ndarray:
    """The sampled sketch by the paper's recursion (memoised object sketches), for --check."""
    per, top = draws
    hs = {h.index: h for h in graph}
    pos_of = {h.index: {c.index: p for p, (c, _) in enumerate(graph.inputs(h), start=1)}
              for h in graph}
    memo: Dict[int, np.ndarray] = {}

    def obj(i: int) -> np.ndarray:
        if i not in memo:
            h = hs[i]
            attr_w, child = per[i]
            x = graph.attributes(h)
            s_attr = (sk.module_matrix(h.module, 1).apply_short(x / 2)
                      + sk.module_matrix(h.module, 2).apply_short(np.array([0.5])))
            t = attr_w * sk.position_matrix(1).half(s_attr)
            if child:
                s_in = sum(w * sk.position_matrix(pos_of[i][j]).half(obj(j))
                           for j, w in child.items())
                # the input term's weight is already inside the child weights
                t = t + sk.position_matrix(2).half(s_in)
            memo[i] = sk.module_matrix(h.module, 0).half(t)
        return memo[i]

    top_pos = {c.index: p for p, (c, _) in enumerate(graph.output, start=1)}
    return sum(w * sk.position_matrix(top_pos[i]).half(obj(i)) for i, w in top.items())


def check(d: int = 16371, S: int = 4) -> None:
    """The word assembly against ``Sketcher.sketch`` (plain) and against ``direct`` (sampled)."""
    d, b, q = rs.suggest_block_sparse(d, 2e-3)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=7, dtype="float64")
    _, graphs = build_teacher("deep", S, 0)
    W = words(sk, graphs[0])
    for s, g in enumerate(graphs):
        want = sk.sketch(g)
        got = assemble(g, W, coefficients(g, draw(g, None, None)))
        err = np.abs(got - want).max() / np.abs(want).max()
        print(f"plain, sample {s}: max |words - Sketcher.sketch| / max = {err:.1e}")
        assert err < 1e-12
        for k in (1, 2):
            dr = draw(g, k, np.random.default_rng([0, s]))
            a, b_ = assemble(g, W, coefficients(g, dr)), direct(sk, g, dr)
            err = np.abs(a - b_).max() / np.abs(b_).max()
            print(f"k={k}, sample {s}: max |words - recursion| / max = {err:.1e}")
            assert err < 1e-12
            # the library's option (its own splitmix64 draws, same scheme) through the words
            per, top = sample_draws(g, k, draw_key(sk.seed, s, g))
            dr = ({i: (a_w, {j: w for j, w in child.values()}) for i, (a_w, child) in per.items()},
                  {i: w for i, w in top.values()})
            want = sk.sketch(g, tuple_sampling=k, sample_seed=s)
            err = np.abs(assemble(g, W, coefficients(g, dr)) - want).max() / np.abs(want).max()
            print(f"k={k}, sample {s}: max |words - Sketcher.sketch(tuple_sampling=k)| / max = "
                  f"{err:.1e}")
            assert err < 1e-12
    order = sorted(W)
    C = [coefficients(g, draw(g, 1, np.random.default_rng([1, s]))) for s, g in enumerate(graphs)]
    err = np.abs(batch(graphs, np.concatenate([W[i] for i in order]), order, C)
                 - np.array([assemble(g, W, c) for g, c in zip(graphs, C)])).max()
    print(f"batch vs assemble: {err:.1e}")
    assert err < 1e-12
    print("check passed")


def _true_signs(R: rs.RandomMatrix, col: int, d: int, b: int) -> Dict[int, np.ndarray]:
    e = np.zeros((1, d))
    e[0, col] = 1.0
    v = R.matvec(e)[0].reshape(-1, b)
    nz = np.flatnonzero(np.abs(v).max(axis=1) > 0)
    return {int(k): np.sign(v[k]) for k in nz}


def measure(sk: rs.Sketcher, graphs: List[rs.Graph], W: Dict[int, np.ndarray],
            spikes: Dict[int, np.ndarray], k: Optional[int], seed: int, chunk: int = 25
            ) -> Dict[str, object]:
    """Per depth (``held``, ``r``, blocks ok, votes) and the top-level queries, over ``graphs``.
    Sketches are ``coefficients @ words`` (``assemble`` as one product per chunk)."""
    d, b, q = sk.d_sketch, sk.block_size, sk.density
    g0 = graphs[0]
    depth = {h.index: v for h, v in g0.depths().items()}
    names = {h.index: h.module for h in g0}
    nfac = {i: len(ch) for i, ch in paths(g0).items()}
    order = sorted(names)
    words_all = np.concatenate([W[i] for i in order])
    X = {i: np.array([g.attributes([h for h in g if h.index == i][0]) for g in graphs])
         for i in names}
    cols = {}
    for i, n in names.items():
        ess = [(1, int(j)) for j in np.flatnonzero(np.quantile(X[i], 0.9, axis=0) >= 0.2)]
        cols[i] = [(kk, j, _true_signs(sk.module_matrix(n, kk), j, d, b))
                   for kk, j in ess + [(2, 0)]]
    stats = {h: {"held": 0, "n": 0, "r": [], "blocks": 0, "ok": 0, "votes": 0, "cols": 0}
             for h in set(depth.values())}
    root = [i for i, h in depth.items() if h == 2][0]
    mid = [i for i, h in depth.items() if h == 3][0]
    q_attr, q_root, q_mid = [], [], []
    for start in range(0, len(graphs), chunk):
        part = graphs[start:start + chunk]
        C = [coefficients(g, draw(g, k, None if k is None else
                                  np.random.default_rng([seed, start + t])))
             for t, g in enumerate(part)]
        Y = batch(part, words_all, order, C)
        for i, h in depth.items():
            st = stats[h]
            n = names[i]
            xi = X[i][start:start + len(part)]
            ci = np.array([c.get(i, 0.0) for c in C])
            g = ci * 0.5 * 2.0 ** -nfac[i]
            ident = (g[:, None] * np.append(xi, np.ones((len(part), 1)), axis=1)) @ spikes[i]
            st["n"] += len(part)
            st["cols"] += len(part) * len(cols[i])
            for t in np.flatnonzero(ci > 0):
                st["held"] += 1
                rms = np.sqrt(np.mean((Y[t] - ident[t]) ** 2))
                st["r"].append(rms * math.sqrt(d * q) / (g[t] * xi[t].max()))
            for kk, j, blocks in cols[i]:
                for blk in blocks:
                    seg = Y[:, blk * b:(blk + 1) * b]
                    sg = np.where(seg >= 0, 1, -1).astype(np.int8)
                    dec = rs.decode_blocks(sg, d)
                    right = (dec.status == 0) & (dec.column == j)
                    held = ci > 0
                    st["blocks"] += int(held.sum())
                    st["ok"] += int(right[held].sum())
                    st["votes"] += int(right.sum())
        x_root = X[root][start:start + len(part)]
        q_attr += _query(lambda: np.abs(sk.attributes(Y, names[root]).attributes - x_root
                                        ).max(axis=1), len(part))
        q_root += _query(lambda: sk.mass(Y, names[root]) - 1.0, len(part))
        w_mid = np.array([[w for c, w in g.inputs([h for h in g if h.index == root][0])
                           if c.index == mid][0] for g in part])
        q_mid += _query(lambda: sk.mass(Y, names[mid]) - w_mid, len(part))
    return {"stats": stats, "attr": np.array(q_attr), "mass root": np.array(q_root),
            "mass mid": np.array(q_mid), "blocks per column": {
                h: float(np.mean([len(bl) for i, hh in depth.items() if hh == h
                                  for _, _, bl in cols[i]])) for h in stats}}


def _query(f, n: int) -> List[float]:
    """``f()`` as a list, or NaNs where the query refuses (a column with no nonzero block at
    this ``q d / b``: the library raises rather than answer from nothing)."""
    try:
        return np.asarray(f(), dtype=np.float64).tolist()
    except ValueError as exc:
        if str(exc) not in _REFUSED:
            _REFUSED.add(str(exc))
            print(f"query not measured: {exc}", flush=True)
        return [math.nan] * n


_REFUSED: set = set()


def learn(d: int, q: float, S: int, ks: Sequence[int], seed: int) -> str:
    """``learn_network`` (per sample, and unmixed) on plain and sampled sketches of the same
    inputs: essential columns (>= 1 nonzero block) recovered with exactly the true blocks and
    signs, per depth (``found_columns`` of ``bench/varying_unmix.py``)."""
    from recsketch.network import learn_network
    from varying_unmix import found_columns

    d, b, q = rs.suggest_block_sparse(d, q)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101, dtype="float64")
    _, graphs = build_teacher("deep", S, seed)
    g0 = graphs[0]
    depth = {h.module: v for h, v in g0.depths().items()}
    dims = {h.module: len(g0.attributes(h)) for h in g0}
    X = {h.module: np.array([g.attributes([x for x in g if x.index == h.index][0])
                             for g in graphs]) for h in g0}
    want = {}
    for n, x in X.items():
        ess = [(1, int(j)) for j in np.flatnonzero(np.quantile(x, 0.9, axis=0) >= 0.2)]
        for kk, j in ess + [(2, 0)]:
            if sk.module_matrix(n, kk).column_block_counts()[j] >= 1:
                want[(n, kk, j)] = depth[n]
    W = words(sk, g0)
    order = sorted(W)
    words_all = np.concatenate([W[i] for i in order])
    lines = ["| d, q | S | sketch | method | depth 2 | depth 3 | depth 4 | s |",
             "|---|---|---|---|---|---|---|---|"]
    for k in [None] + list(ks):
        Y = np.empty((S, d), dtype=np.float32)
        for lo in range(0, S, 25):
            part = graphs[lo:lo + 25]
            C = [coefficients(g, draw(g, k, None if k is None else
                                      np.random.default_rng([seed, lo + t])))
                 for t, g in enumerate(part)]
            Y[lo:lo + len(part)] = batch(part, words_all, order, C)
        for method in ("sample", "unmix"):
            t0 = time.perf_counter()
            model = learn_network(None, Y, sketcher=sk, method=method)
            t = time.perf_counter() - t0
            found = found_columns(model, sk, dims)
            cells = []
            for h in (2, 3, 4):
                tot = [c for c, hh in want.items() if hh == h]
                cells.append(f"{sum(c in found for c in tot)}/{len(tot)}")
            label = "plain" if k is None else f"sampled, k={k}"
            lines.append(f"| {d}, {q:g} | {S} | {label} | {method} | " + " | ".join(cells)
                         + f" | {t:.0f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def run(d: int, q: float, S: int, S_plain: int, ks: Sequence[int], seed: int) -> List[dict]:
    d, b, q = rs.suggest_block_sparse(d, q)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101, dtype="float64")
    _, graphs = build_teacher("deep", S, seed)
    for h, v in graphs[0].depths().items():
        sk.register_module(h.module, v, len(graphs[0].attributes(h)))
    t0 = time.perf_counter()
    spikes: Dict[int, np.ndarray] = {}
    W = words(sk, graphs[0], spikes)
    t_words = time.perf_counter() - t0
    rows = []
    for k in [None] + list(ks):
        t0 = time.perf_counter()
        res = measure(sk, graphs[:S_plain] if k is None else graphs, W, spikes, k, seed)
        res.update({"d": d, "b": b, "q": q, "k": k, "seed": seed, "t_words": t_words,
                    "t": time.perf_counter() - t0,
                    "S": S_plain if k is None else S})
        rows.append(res)
        print(table([res]), flush=True)
    return rows


def table(rows: List[dict]) -> str:
    out = ["| d, q | seed | sketch | S | depth | held | r (median, 10-90%) | floor | "
           "blocks ok (held samples) | right block decodes per column per sample | "
           "blocks per column |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = "plain" if r["k"] is None else f"sampled, k={r['k']}"
        for h, st in sorted(r["stats"].items()):
            rr = np.asarray(st["r"])
            rq = (f"{np.median(rr):.2f} ({np.quantile(rr, .1):.2f}-{np.quantile(rr, .9):.2f})"
                  if len(rr) else "-")
            out.append(
                f"| {r['d']}, {r['q']:g} | {r['seed']} | {label} | {r['S']} | {h} | "
                f"{st['held'] / st['n']:.3f} | {rq} | "
                f"{2 ** (1.5 * (h - 1)) * math.sqrt(r['q']):.2f}"
                f" | {st['ok']}/{st['blocks']} ({st['ok'] / max(st['blocks'], 1):.2f}) | "
                f"{st['votes'] / st['cols']:.3f} | {r['blocks per column'][h]:.1f} |")
    out += ["", "| d, q | seed | sketch | S | root attr l-inf (median, 90%) | "
            "root mass err (median abs, 90%) | mid mass err (median abs, 90%) | s |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = "plain" if r["k"] is None else f"sampled, k={r['k']}"
        cells = []
        for v in (r["attr"], np.abs(r["mass root"]), np.abs(r["mass mid"])):
            cells.append(f"{np.median(v):.3f} ({np.quantile(v, .9):.3f})"
                         if len(v) and np.isfinite(v).all() else "- (column without a block)")
        out.append(f"| {r['d']}, {r['q']:g} | {r['seed']} | {label} | {r['S']} | "
                   + " | ".join(cells) + " | "
                   f"{r['t']:.0f} (words {r['t_words']:.0f}) |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify the word assembly against Sketcher.sketch and the recursion")
    ap.add_argument("--d", type=int, default=1048608)
    ap.add_argument("--q", type=float, default=2e-4)
    ap.add_argument("--samples", type=int, default=400, help="sampled sketches per k")
    ap.add_argument("--plain", type=int, default=100, help="plain sketches (the baseline)")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2], help="terms kept per tuple")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learn", action="store_true",
                    help="run learn_network (per sample and unmixed) on plain and sampled "
                         "sketches instead (--samples of each)")
    args = ap.parse_args()
    if args.check:
        check()
        return
    if args.learn:
        print(learn(args.d, args.q, args.samples, args.k, args.seed))
        return
    t0 = time.perf_counter()
    rows = run(args.d, args.q, args.samples, args.plain, args.k, args.seed)
    print("\nall\n" + table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
