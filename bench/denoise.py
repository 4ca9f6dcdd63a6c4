"""Denoising across a batch of stored sketches (recsketch.denoise): paper / matched / joint
read-outs with and without the batch's principal subspace, on the same sketches.

    python bench/denoise.py [n_seeds] [sizes] [sections] [families]
        n_seeds   matrix draws (Sketcher seeds) per setting, default 3
        sizes     comma-separated d, default 4096,16384 (block_sparse uses 4095,16371)
        sections  comma-separated among fixed,crowded,varying (default all)
        families  comma-separated among orthogonal,block_sparse (default both)

Sections (both families; every figure beside its baseline from the same sketches):

  fixed    the README's room, one layout (walls at [1], [2], a cat at [3] with edges at
           [3, 1], [3, 2]; K = 85 unknowns, rank 84: the edges' weights sum to the cat's),
           attributes and weights redrawn per sketch, and a registered module "lamp" absent
           from every sketch (truth 0); a batch of 200 sketches, the subspace fitted on it;
           32 of them read. Conditions: clean (rule rtol; also the least-squares coefficients
           in the basis, "+LS"); float16 storage (rule noise_std = the rounding's size);
           Gaussian noise of 1% and 10% of the sketch's rms per coordinate (rule
           noise_std, the noise's known size); erased to a 1/4 and a 1/16 prefix (32 other
           sketches of the layout, completed from the subspace of the 200 full ones, against
           graceful erasure's rescaled read and the projection of the rescaled sketch).
  crowded  one random DAG (30-50 objects, depth 2-4, shared children) fixed per seed,
           attributes and weights redrawn per sketch: K is in the hundreds to thousands, the
           batch of 200 cannot span it. Clean and 10% noise; in-batch and held-out reads;
           held-out sketches erased to a 1/4 prefix and completed.
  varying  a new random DAG per sketch (5-50 objects, depth 2-4; the registry is shared):
           in-batch reads with rule rtol (full rank) and energy = 0.99, and held-out reads
           (32 sketches not in the batch), also erased to a 1/4 prefix and completed.

Every section also reads with recsketch.guided.GuidedReader (the joint fit on the paths whose
words the subspace spans; same fan_in as joint), printed as the "guided" rows (its "plain"
column repeats joint's for the ratio), with its coverage and unknowns.

Errors: l-inf of summed weighted attributes (case (i) `weight=1`), of case (ii) attributes at a
path (weighted), and absolute error of masses; median [25%, 75%] over the sketches read and
the seeds. joint uses fan_in = 3 on the room and 5 on random DAGs.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import recsketch as rs
from recsketch.denoise import SubspaceFitter
from recsketch.guided import GuidedReader

sys.path.insert(0, os.path.dirname(__file__))
from joint_accuracy import all_paths, random_scene, sketcher, unit  # noqa: E402

N_FIT, N_READ = 200, 32
METHODS = ("paper", "matched", "joint", "guided")


def bs_size(family, d):
    return {4096: 4095, 16384: 16371, 1024: 1008}.get(d, d) if family == "block_sparse" else d


# -- scenes -----------------------------------------------------------------------------------------
def room_sample(rng):
    """The room with redrawn attributes and weights; truths of the queries read."""
    g = rs.Graph()
    e = rng.uniform(0.3, 0.7)
    wc = rng.uniform(0.4, 0.6)
    u = rng.uniform(0.3, 0.7)
    w1, w2 = (1 - wc) * u, (1 - wc) * (1 - u)
    edges = [g.add("edge", unit(rng, 16)) for _ in range(2)]
    walls = [g.add("wall", unit(rng, 8)) for _ in range(2)]
    cat = g.add("cat", unit(rng, 32), [(edges[0], e), (edges[1], 1 - e)])
    g.set_output([(walls[0], w1), (walls[1], w2), (cat, wc)])
    truth = {"cat (i) w x": wc * g.attributes(cat),
             "wall (ii) [2]": w2 * g.attributes(walls[1]),
             "edge (ii) [3,2]": wc * (1 - e) * g.attributes(edges[1]),
             "wall mass": np.array([w1 + w2]),
             "lamp mass (absent)": np.array([0.0]),
             "edge mass (d3)": np.array([wc])}
    return g, truth


def room_read(sk, s, method, reader=None):
    if method == "guided":
        return {"cat (i) w x": reader.attributes(s, "cat"),
                "wall (ii) [2]": reader.attributes(s, "wall", [2]),
                "edge (ii) [3,2]": reader.attributes(s, "edge", [3, 2]),
                "wall mass": np.atleast_1d(reader.mass(s, "wall"))[:, None],
                "lamp mass (absent)": np.atleast_1d(reader.mass(s, "lamp"))[:, None],
                "edge mass (d3)": np.atleast_1d(reader.mass(s, "edge"))[:, None]}
    kw = {"fan_in": 3} if method == "joint" else {}
    return {"cat (i) w x": sk.attributes(s, "cat", weight=1.0, method=method, **kw),
            "wall (ii) [2]": sk.attributes(s, "wall", path=[2], weight=1.0, method=method, **kw),
            "edge (ii) [3,2]": sk.attributes(s, "edge", path=[3, 2], weight=1.0, method=method,
                                             **kw),
            "wall mass": sk.mass(s, "wall", method=method, **kw)[:, None],
            "lamp mass (absent)": sk.mass(s, "lamp", method=method, **kw)[:, None],
            "edge mass (d3)": sk.mass(s, "edge", method=method, **kw)[:, None]}


def dag_truth(g, modules):
    """Mass and summed weighted attributes of each module, from every path."""
    out = {}
    for m in modules:
        mine = [(h, w) for h, _, w in all_paths(g) if h.module == m]
        if mine:
            out[m] = (sum(w for _, w in mine), sum(w * g.attributes(h) for h, w in mine))
    return out


def redraw(g, rng):
    """The same layout as ``g`` (modules, positions, fan-ins), new attributes and weights."""
    new = rs.Graph()
    of = {}
    for h in g:
        ins = [(of[c.index], w * rng.uniform(0.7, 1.0)) for c, w in g.inputs(h)]
        of[h.index] = new.add(h.module, unit(rng, g.attributes(h).size), ins)
    w = rng.dirichlet(np.ones(len(g.output)))
    new.set_output([(of[h.index], float(x)) for (h, _), x in zip(g.output, w)])
    return new


def dag_queries(sk, graphs):
    """Masses of the depth-2 and depth-3 modules and summed attributes of the depth-2 ones,
    restricted to modules present in every graph read (absent ones read 0 by truth and are
    reported separately by the mass rows)."""
    return [m for m, i in sorted(sk.modules.items()) if i.depth in (2, 3)]


def dag_read(sk, s, method, modules, reader=None):
    kw = {"fan_in": 5} if method == "joint" else {}
    out = {}
    for m in modules:
        info = sk.modules[m]
        if method == "guided":
            out[f"mass {m}"] = np.atleast_1d(reader.mass(s, m))[:, None]
            if info.depth == 2:
                out[f"summed attr {m}"] = reader.summed_attributes(s, m)
            continue
        out[f"mass {m}"] = sk.mass(s, m, method=method, **kw)[:, None]
        if info.depth == 2:
            out[f"summed attr {m}"] = sk.summed_attributes(s, m, 1.0, method=method, **kw)
    return out


def dag_truths(graphs, sk, modules):
    rows = {}
    for g in graphs:
        t = dag_truth(g, modules)
        for m in modules:
            dim = sk.modules[m].attribute_dim
            mass, summ = t.get(m, (0.0, np.zeros(dim)))
            rows.setdefault(f"mass {m}", []).append(np.array([mass]))
            if sk.modules[m].depth == 2:
                rows.setdefault(f"summed attr {m}", []).append(summ)
    return {k: np.array(v) for k, v in rows.items()}


# -- measurement -------------------------------------------------------------------------------------
def errors(est, truth):
    return {q: np.max(np.abs(np.atleast_2d(est[q]) - truth[q]), axis=1) for q in truth}


def record(res, cond, est_fn, truth, variants, reader=None, guided_input=None):
    """``variants``: {label: input}; reads paper / matched / joint on each input, and the
    subspace-guided joint fit (``reader``) on ``guided_input`` (recorded as "guided +D": it
    uses the subspace; "guided" alone is the plain joint read, for the table's baseline)."""
    if reader is not None:
        for q, e in errors(est_fn(guided_input, "guided", reader), truth).items():
            res.setdefault((cond, q), {}).setdefault("guided +D", []).extend(e.tolist())
            res[cond, q].setdefault("guided", [])
        res.setdefault(("coverage", cond), []).append(reader.coverage)
        res.setdefault(("unknowns", cond), []).append(reader.unknowns)
    for label, s in variants.items():
        for m in METHODS[:3]:
            try:
                est = est_fn(s, m)
            except ValueError:   # joint refuses a plan over its budget (few kept coordinates)
                continue
            for q, e in errors(est, truth).items():
                res.setdefault((cond, q), {}).setdefault(f"{m}{label}", []).extend(e.tolist())


def noisy(rng, S, eps):
    sigma = eps * float(np.sqrt(np.mean(S.astype(np.float64) ** 2)))
    return S + rng.normal(0.0, sigma, S.shape), sigma


def fit(S, **rule):
    f = SubspaceFitter(S.shape[1])
    f.add(S)
    return f.subspace(**rule)


def guided(sk, sub, fan_in):
    return GuidedReader(sk, sub, fan_in=fan_in)


def section_fixed(sk, seed, res, ranks):
    # a module registered (depth 2, as the walls) that no sketch of the layout holds: its
    # probe words are outside the batch's span
    sk.register_module("lamp", 2, 8)
    rng = np.random.default_rng(1000 + seed)
    samples = [room_sample(rng) for _ in range(N_FIT + N_READ)]
    S = sk.sketch_many([g for g, _ in samples])
    truth = {q: np.array([t[q] for _, t in samples]) for q in samples[0][1]}
    read = slice(0, N_READ)
    held = slice(N_FIT, N_FIT + N_READ)
    tr = {q: v[read] for q, v in truth.items()}
    th = {q: v[held] for q, v in truth.items()}
    est = lambda s, m, r=None: room_read(sk, s, m, r)  # noqa: E731
    sub = fit(S[:N_FIT])
    ranks.setdefault(("fixed", "clean"), []).append(sub.rank)
    # the coefficients' least squares in the basis, then the basis back: for full sketches
    # the same linear map as the projection, measured to show it
    ls = np.linalg.lstsq(sub.basis.T, S[read].T.astype(np.float64), rcond=None)[0].T @ sub.basis
    record(res, "clean", est, tr, {"": S[read], " +D": sub.project(S[read]), " +LS": ls},
           guided(sk, sub, 3), S[read])
    S16 = S[:N_FIT].astype(np.float16).astype(np.float64)
    # float16 rounding: about 2^-11 / sqrt(3) of each value, as independent noise
    sigma16 = float(np.sqrt(np.mean(S16 ** 2))) * 2.0 ** -11 / np.sqrt(3.0)
    sub = fit(S16, noise_std=sigma16)
    ranks.setdefault(("fixed", "float16"), []).append(sub.rank)
    record(res, "float16 storage", est, tr, {"": S16[read], " +D": sub.project(S16[read])},
           guided(sk, sub, 3), S16[read])
    for eps in (0.01, 0.1):
        Sn, sigma = noisy(rng, S[:N_FIT].astype(np.float64), eps)
        sub = fit(Sn, noise_std=sigma)
        ranks.setdefault(("fixed", f"noise {eps:g}"), []).append(sub.rank)
        record(res, f"noise {eps:g}", est, tr, {"": Sn[read], " +D": sub.project(Sn[read])},
               guided(sk, sub, 3), Sn[read])
    sub = fit(S[:N_FIT])
    reader = guided(sk, sub, 3)
    for keep in (0.25, 1 / 16):
        e = rs.erase(S[held], keep)
        ranks.setdefault(("fixed", f"erased {keep:g}"), []).append(sub.rank)
        variants = {"": e, " +P(rescaled)": sub.project(e.rescaled())}
        if e.d_kept >= sub.rank:   # completion needs at least rank coordinates
            variants[" +D"] = sub.project(e)
        record(res, f"erased to {keep:g}", est, th, variants,
               reader if e.d_kept >= reader.unknowns else None, e)


def section_crowded(sk, seed, res, ranks):
    rng = np.random.default_rng(2000 + seed)
    while True:
        shape = random_scene(rng, 5)
        if len(shape) >= 30:
            break
    graphs = [redraw(shape, rng) for _ in range(N_FIT + N_READ)]
    S = sk.sketch_many(graphs)
    modules = dag_queries(sk, graphs)
    truth = dag_truths(graphs, sk, modules)
    K = sum(sk.modules[h.module].attribute_dim + 1 for h, _, _ in all_paths(shape))
    ranks.setdefault(("crowded", "layout K"), []).append(K)
    est = lambda s, m, r=None: dag_read(sk, s, m, modules, r)  # noqa: E731
    read, held = slice(0, N_READ), slice(N_FIT, N_FIT + N_READ)
    tr = {q: v[read] for q, v in truth.items()}
    th = {q: v[held] for q, v in truth.items()}
    sub = fit(S[:N_FIT])
    ranks.setdefault(("crowded", "clean"), []).append(sub.rank)
    ranks.setdefault(("crowded", "held-out residual (median)"), []).append(
        round(float(np.median(sub.residual(S[held]))), 4))
    reader = guided(sk, sub, 5)
    record(res, "crowded, in batch", est, tr, {"": S[read], " +D": sub.project(S[read])},
           reader, S[read])
    record(res, "crowded, held out", est, th, {"": S[held], " +D": sub.project(S[held])},
           reader, S[held])
    e = rs.erase(S[held], 0.25)
    record(res, "crowded, held out, erased to 0.25", est, th, {"": e, " +D": sub.project(e)},
           reader, e)
    Sn, sigma = noisy(rng, S.astype(np.float64), 0.1)
    sub = fit(Sn[:N_FIT], noise_std=sigma)
    ranks.setdefault(("crowded", "noise 0.1"), []).append(sub.rank)
    record(res, "crowded, noise 0.1, in batch", est, tr,
           {"": Sn[read], " +D": sub.project(Sn[read])}, guided(sk, sub, 5), Sn[read])


def section_varying(sk, seed, res, ranks):
    rng = np.random.default_rng(3000 + seed)
    graphs = [random_scene(rng, 5) for _ in range(N_FIT + N_READ)]
    S = sk.sketch_many(graphs)
    modules = dag_queries(sk, graphs)
    truth = dag_truths(graphs, sk, modules)
    est = lambda s, m, r=None: dag_read(sk, s, m, modules, r)  # noqa: E731
    read, held = slice(0, N_READ), slice(N_FIT, N_FIT + N_READ)
    tr = {q: v[read] for q, v in truth.items()}
    th = {q: v[held] for q, v in truth.items()}
    full = fit(S[:N_FIT])
    top = fit(S[:N_FIT], energy=0.99)
    ranks.setdefault(("varying", "rtol"), []).append(full.rank)
    ranks.setdefault(("varying", "energy 0.99"), []).append(top.rank)
    reader = guided(sk, full, 5)
    record(res, "varying, in batch", est, tr,
           {"": S[read], " +D": full.project(S[read]), " +D(0.99)": top.project(S[read])},
           reader, S[read])
    record(res, "varying, held out", est, th, {"": S[held], " +D": full.project(S[held])},
           reader, S[held])
    e = rs.erase(S[held], 0.25)
    record(res, "varying, held out, erased to 0.25", est, th, {"": e, " +D": full.project(e)})
    # how much of a held-out sketch the batch's span misses
    ranks.setdefault(("varying", "held-out residual (median)"), []).append(
        round(float(np.median(full.residual(S[held]))), 4))


SECTIONS = {"fixed": section_fixed, "crowded": section_crowded, "varying": section_varying}


def quart(v):
    a, b, c = np.percentile(v, [25, 50, 75])
    return f"{b:.3g} [{a:.2g}, {c:.2g}]"


def main(n_seeds=3, sizes=(4096, 16384), sections=("fixed", "crowded", "varying"),
         families=("orthogonal", "block_sparse")):
    import warnings
    warnings.simplefilter("ignore", RuntimeWarning)   # path-free joint plans: reported below
    for family in families:
        for d0 in sizes:
            d = bs_size(family, d0)
            t0 = time.time()
            res, ranks = {}, {}
            for seed in range(n_seeds):
                for name in sections:
                    sk = sketcher(family, d, seed)
                    SECTIONS[name](sk, seed, res, ranks)
                print(f"  {family} d={d} seed {seed} ({time.time() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
            print(f"\n### {family}, d = {d} ({n_seeds} seeds, {N_READ} sketches read per seed; "
                  f"{time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})\n")
            print("ranks: " + "; ".join(f"{a} {b}: {sorted(v)}" for (a, b), v in ranks.items()))
            print()
            for key in [k for k in res if k[0] in ("coverage", "unknowns")]:
                print(f"guided {key[0]} ({key[1]}): {sorted(round(x, 6) for x in res[key])}")
            print()
            print("| condition | query | method | plain | denoised (+D; guided: the guided fit) "
                  "| ratio plain/+D (medians) | other |")
            print("|---|---|---|---|---|---|---|")
            for (cond, q), r in res.items():
                if cond in ("coverage", "unknowns"):
                    continue
                for m in METHODS:
                    if m == "guided" and "guided +D" in r:
                        r = dict(r, guided=r.get("joint", [np.nan]))   # baseline: plain joint
                    if m not in r:
                        print(f"| {cond} | {q} | {m} | refused (over budget) | | | |")
                        continue
                    plain = np.array(r[m])
                    den = np.array(r.get(m + " +D", [np.nan]))
                    extra = "; ".join(f"{k[len(m):].strip()}: {quart(v)}" for k, v in r.items()
                                      if k.startswith(m) and k not in (m, m + " +D"))
                    ratio = (np.median(plain) / np.median(den) if np.median(den) > 0
                             else np.inf)
                    dcell = quart(den) if m + " +D" in r else "- (d_kept < rank)"
                    print(f"| {cond} | {q} | {m} | {quart(plain)} | {dcell} | "
                          f"{ratio:.3g} | {extra} |")
            sys.stdout.flush()


if __name__ == "__main__":
    args = sys.argv[1:]
    n = int(args[0]) if args else 3
    sizes = tuple(int(x) for x in args[1].split(",")) if len(args) > 1 else (4096, 16384)
    secs = tuple(args[2].split(",")) if len(args) > 2 else tuple(SECTIONS)
    fams = tuple(args[3].split(",")) if len(args) > 3 else ("orthogonal", "block_sparse")
    main(n, sizes, secs, fams)
