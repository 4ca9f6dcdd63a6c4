"""Learning a fixed-tree teacher network back from its overall sketches (paper Theorem 5).

The teacher: a fixed tree of modules, each producing one object per input. Leaves read the raw
input; every parent's attributes are a fixed random map of its children's attributes
(``normalise(softplus(W [x_child1; x_child2]))``, nonnegative and unit-norm as the paper assumes);
importance weights vary per input around 1/2. Two shapes:

* ``deep``: output <- root <- 2 mids <- 2 leaves each (depths 2, 3, 4; 7 modules);
* ``sink``: the root is the output module itself (the sink, whose attributes are not in the
  sketch): output <- 2 mids <- 2 leaves each (depths 2, 3; 6 modules).

For each (shape, d, q, S) the script sketches the inputs with :class:`recsketch.Sketcher`, runs
:func:`recsketch.network.learn_network` and scores it against the truth read off the graphs
(true matrices from the Sketcher). It also prints, per depth, the measured noise ratio
``r = rms(y - identity word) sqrt(d q) / (g max_j x_j)`` (a block decodes only if r is below
~0.3) and the fraction of a module's nonzero blocks shared with another identity-word column of
the same sample (the collision rate), and it runs the tree step on the *true* attributes
("oracle"), which isolates where the pipeline fails. Writes docs/teacher_network.png.

Usage: PYTHONPATH=python python bench/teacher_network.py [--quick] [--out docs/teacher_network.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

import recsketch as rs
from recsketch.network import NetworkTruth, infer_tree, learn_network

N_FEATURES = 8


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z)


def teacher_tree(shape: str) -> Tuple[Dict[str, List[str]], List[str], Dict[str, int]]:
    """(children of each module, top-level modules, attribute dims)."""
    if shape == "deep":
        children = {"root": ["midA", "midB"], "midA": ["leafA1", "leafA2"],
                    "midB": ["leafB1", "leafB2"]}
        top = ["root"]
    elif shape == "sink":
        children = {"midA": ["leafA1", "leafA2"], "midB": ["leafB1", "leafB2"]}
        top = ["midA", "midB"]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    names = top + [c for p in children for c in children[p]]
    dims = {n: (3 if n.startswith("leaf") else 4) for n in names}
    return children, top, dims


def build_teacher(shape: str, n_samples: int, seed: int = 0
                  ) -> Tuple[np.ndarray, List[rs.Graph]]:
    """(raw inputs (S, N_FEATURES), one communication graph per input)."""
    children, top, dims = teacher_tree(shape)
    rng = np.random.default_rng(seed)
    W = {n: rng.normal(0, 0.7, (dims[n], N_FEATURES if n not in children
                                    else sum(dims[c] for c in children[n])))
         for n in dims}
    V = {n: rng.normal(0, 1.0, N_FEATURES) for n in list(children) + ["output"]}
    inputs = rng.random((n_samples, N_FEATURES))
    graphs = []
    for u in inputs:
        g = rs.Graph()
        handles, x = {}, {}

        def make(name: str) -> rs.Handle:
            kids = children.get(name, [])
            hs = [make(c) for c in kids]
            src = u if not kids else np.concatenate([x[c] for c in kids])
            x[name] = _unit(_softplus(W[name] @ src))
            weights = _split(V[name] @ u, len(kids)) if kids else []
            handles[name] = g.add(name, x[name], list(zip(hs, weights)))
            return handles[name]

        tops = [make(t) for t in top]
        w_top = [1.0] if len(top) == 1 else _split(V["output"] @ u, len(top))
        g.set_output(list(zip(tops, w_top)))
        graphs.append(g)
    return inputs, graphs


def _split(z: float, k: int) -> List[float]:
    """Input-dependent importance weights summing to 1, each within 40% of 1/k."""
    a = 0.4 * np.tanh(z) / k
    base = np.full(k, 1.0 / k)
    base[0] += a
    base[1:] -= a / (k - 1)
    return [float(v) for v in base]


def truncated(g: rs.Graph, max_depth: int) -> rs.Graph:
    """The graph cut below ``max_depth``: its sketch is exactly the contribution of the objects
    at depths <= max_depth (the sketch is linear in s_attr and s_input separately)."""
    depth = {h.index: v for h, v in g.depths().items()}
    out, new = rs.Graph(), {}
    for h in g:
        if depth[h.index] <= max_depth:
            ins = [] if depth[h.index] == max_depth else \
                [(new[c.index], w) for c, w in g.inputs(h)]
            new[h.index] = out.add(h.module, g.attributes(h), ins)
    out.set_output([(new[c.index], w) for c, w in g.output])
    return out


def peeled_ratio(sk: rs.Sketcher, graphs: List[rs.Graph], Y: np.ndarray, truth: NetworkTruth
                 ) -> Dict[int, float]:
    """Noise ratio r at depth h >= 3 after an *oracle* peel: the exact contribution of every
    object above depth h (all its words, not only the identity word) is subtracted. This is
    the best any outer round could leave for the next one."""
    out = {}
    for h in sorted(set(truth.depths.values())):
        if h < 3:
            continue
        above = sk.sketch_many([truncated(g, h - 1) for g in graphs])
        out[h] = diagnostics(sk, (Y - above).astype(np.float64), truth)[h][0]
    return out


def diagnostics(sk: rs.Sketcher, Y: np.ndarray, truth: NetworkTruth
                ) -> Dict[int, Tuple[float, float, float]]:
    """Per depth: median noise ratio r and collision rate of the identity words (from truth),
    and the noise ratio r_A the first outer-first round (MATH.md §4.5, round A) would face.

    Round A reads the word ``g R_i (R[M,1] x + R[M,2] e_1)`` as position matrix ``R_i`` times a
    coefficient vector whose entries are at most ``1/sqrt(dq)`` (the count coordinate): its
    block entries are ``g / (d q)``, ``sqrt(d q)`` times smaller than the identity word's, in
    the same noise."""
    d, q, b = sk.d_sketch, sk.density, sk.block_size
    n = Y.shape[0]
    spikes = {}
    for name, h in truth.depths.items():
        g = truth.path_weights[name] * 2.0 ** -(4 * h - 3)
        att = sk.module_matrix(name, 1).apply_short(truth.attributes[name] * g[:, None])
        cnt = sk.module_matrix(name, 2).apply_short(g[:, None])
        spikes[name] = (att, cnt, g)
    support = {name: (np.abs(a) + np.abs(c)).reshape(n, -1, b).max(axis=2) > 0
               for name, (a, c, _) in spikes.items()}
    out: Dict[int, Tuple[List[float], List[float], List[float]]] = {}
    for name, h in truth.depths.items():
        att, cnt, g = spikes[name]
        rms = np.sqrt(np.mean((Y - att - cnt) ** 2, axis=1))
        x_max = truth.attributes[name].max(axis=1)
        r = float(np.median(rms * np.sqrt(d * q) / (g * x_max)))
        r_a = float(np.median(rms * d * q / g))
        others = np.zeros_like(support[name])
        for o in spikes:
            if o != name:
                others |= support[o]
        # within a module, columns of R[M,1] collide with each other too: count blocks holding
        # more than one of its own nonzero columns as collided
        R1 = sk.module_matrix(name, 1)
        k = truth.attributes[name].shape[1]
        own = (np.abs(R1.apply_short(np.eye(k))).reshape(k, -1, b).max(axis=2) > 0).sum(axis=0)
        mine = support[name]
        coll = others | (own[None, :] > 1)
        rate = float(np.sum(mine & coll) / max(np.sum(mine), 1))
        lists = out.setdefault(h, ([], [], []))
        lists[0].append(r)
        lists[1].append(rate)
        lists[2].append(r_a)
    return {h: (float(np.median(a)), float(np.median(c)), float(np.median(ra)))
            for h, (a, c, ra) in out.items()}


def oracle_edges(truth: NetworkTruth) -> Tuple[int, int, int]:
    """Tree step on the true attributes: (correct, wrong, true) edges below the top level."""
    edges = infer_tree(truth.attributes, truth.depths, truth.path_weights)
    true = {(e.parent, e.child) for e in truth.edges if e.parent != "output"}
    got = {(e.parent, e.child) for e in edges}
    return len(got & true), len(got - true), len(true)


def run(shape: str, d: int, q: float, sample_counts: List[int], seed: int = 0) -> List[dict]:
    b = rs.default_block_size(d)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
    inputs, graphs = build_teacher(shape, max(sample_counts), seed)
    t0 = time.perf_counter()
    Y_all = sk.sketch_many(graphs)
    t_sketch = time.perf_counter() - t0
    rows = []
    for S in sample_counts:
        Y = Y_all[:S]
        truth = NetworkTruth.from_graphs(sk, graphs[:S])
        t0 = time.perf_counter()
        model = learn_network(inputs[:S], Y, sketcher=sk)
        t_learn = time.perf_counter() - t0
        score = model.report(truth)
        diag = diagnostics(sk, Y, truth)
        peeled = peeled_ratio(sk, graphs[:S], Y, truth)
        rows.append({"shape": shape, "d": d, "b": b, "q": q, "S": S, "score": score,
                     "diag": diag, "peeled": peeled, "oracle": oracle_edges(truth), "garbage": len(model.garbage),
                     "t_sketch": t_sketch * S / len(graphs), "t_learn": t_learn})
    return rows


def _frac(a: int, b: int) -> str:
    return f"{a}/{b}"


def table(rows: List[dict]) -> str:
    out = ["| shape | d | q | S | depth | modules | matrices | columns ok+part/ess/all (wrong) "
           "| attr err med/max | gain err | depth ok | edges (wrong) | oracle edges | r | "
           "r peeled | r round A | collide | garbage |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for h, s in sorted(row["score"].levels.items()):
            r, coll, r_a = row["diag"][h]
            ok, wrong, n_true = row["oracle"]
            orc = _frac(ok, n_true) + f" ({wrong})" if h == 2 and n_true else "-"
            out.append(
                f"| {row['shape']} | {row['d']} | {row['q']:g} | {row['S']} | {h} | "
                + " | ".join(s.cells()) + f" | {orc} | {r:.2f} | "
                f"{_f(row['peeled'].get(h, np.nan))} | {_f(r_a) if h == 2 else '-'} | "
                f"{coll:.2f} | {row['garbage'] if h == 2 else ''} |")
    return "\n".join(out)


def _f(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.3f}"


def plot(rows: List[dict], path: Path) -> None:
    """Left: depth-2 essential columns recovered vs S. Right: the noise ratio r per depth (before
    and after the oracle peel) against the ~0.3 a block needs to decode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({(r["shape"], r["d"], r["q"]) for r in rows})
    for shape, d, q in keys:
        sub = sorted((r for r in rows if (r["shape"], r["d"], r["q"]) == (shape, d, q)),
                     key=lambda r: r["S"])
        label = f"{shape} d={d} q={q:g}"
        lv = [r["score"].levels[2] for r in sub]
        frac = [(s.columns_recovered + s.columns_partial) / max(s.columns_essential, 1) for s in lv]
        left.plot([r["S"] for r in sub], frac, marker="o", label=label)
        last = sub[-1]
        depths = sorted(last["diag"])
        line = right.semilogy(depths, [last["diag"][h][0] for h in depths], marker="o",
                              label=label)[0]
        peeled = sorted(last["peeled"])
        if peeled:
            right.semilogy(peeled, [last["peeled"][h] for h in peeled], marker="x", ls="--",
                           color=line.get_color())
        right.semilogy([2], [last["diag"][2][2]], marker="^", ls="none", color=line.get_color())
    left.set_title("depth 2: essential columns of R[M,1], R[M,2] recovered")
    left.set_xlabel("samples S")
    left.set_ylabel("recovered / essential")
    left.set_ylim(-0.05, 1.05)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.axhline(0.3, color="k", lw=0.8)
    right.set_title("noise ratio r per depth (x: after oracle peel; ^: outer round A)")
    right.set_xlabel("depth h")
    right.set_ylabel("r (decodes below ~0.3)")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small configuration (~10 s)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"
                                         / "teacher_network.png"))
    args = ap.parse_args()
    if args.quick:
        configs = [("sink", 48600, 0.0015, [60])]
    else:
        configs = [("sink", 48600, 0.0015, [30, 60, 120]),
                   ("sink", 97200, 0.0015, [30, 60, 120]),
                   ("sink", 97200, 0.003, [30, 60, 120]),
                   ("deep", 97200, 0.002, [60, 120])]
    rows: List[dict] = []
    t0 = time.perf_counter()
    for shape, d, q, counts in configs:
        rows += run(shape, d, q, counts)
    print(table(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    plot(rows, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
