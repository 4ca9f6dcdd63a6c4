"""Sketches of a fixed-tree teacher synthesised from its word vectors: ``Y = Z W``.

On a fixed tree the overall sketch (cpp/include/recsketch/sketch.hpp) is linear in each object's
``path weight * [x; 1]``: with ``P(R) = (I + R) / 2``,

    s_attr(M)   = R[M,1] x / 2 + R[M,2] e_1 / 2
    s_input(M)  = sum_c w_c P(R[pos c]) s_object(c)
    s_object(M) = P(R[M,0]) ( P(R[1]) s_attr(M) / 2 + P(R[2]) s_input(M) / 2 )
    overall     = sum_top w_top P(R[pos top]) s_object(top)

so ``overall = sum_M sum_j g_M [x_M; 1]_j W[M, j]`` where ``g_M`` is the product of the weights
from the output down to M and the word ``W[M, j]`` is the whole path of matrices applied to
``R[M,1] e_j / 2`` (``R[M,2] e_1 / 2`` for the count word). :func:`tree_words` computes the K
words bottom-up as batched products (every word below a module shares that module's matrices,
so each matrix is applied once to the batch of words that pass through it); :func:`synthesise`
mixes them with the coefficients read off the graphs (:class:`recsketch.network.NetworkTruth`).
This is the algebra of the sketch, not the Sketcher's code path, so it is checked against it:
:func:`agreement` sketches a few of the graphs with the Sketcher itself.

Usage (the held-out seeds of the deep teacher, written in bench/teacher_unmix.py's cache layout):
    PYTHONPATH=python python bench/tree_words.py --d 524262 --q 4e-4 --samples 200 \
        --seeds 4 5 --out deep-synth/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recsketch as rs  # noqa: E402
from recsketch.network import NetworkTruth  # noqa: E402
from recsketch.network.learn import OUTPUT  # noqa: E402

Label = Tuple[str, int]  # (module, j): j < attribute dim is R[M,1] e_j, j == dim the count word


def tree_words(sk: rs.Sketcher, truth: NetworkTruth, num_threads: Optional[int] = None
               ) -> Tuple[np.ndarray, List[Label]]:
    """(W, labels): the float64 words ``(K, d)`` of the tree in ``truth`` (edges with their
    positions, attribute lengths), one row per label, K = sum over modules of (dim + 1)."""
    children: Dict[str, List[Tuple[str, int]]] = {}
    for e in truth.edges:
        children.setdefault(str(e.parent), []).append((str(e.child), int(e.position)))
    P1, P2 = sk.position_matrix(1), sk.position_matrix(2)

    def words(name: str) -> Tuple[np.ndarray, List[Label]]:
        """The words of ``name``'s subtree, mapped to its object sketch."""
        dim = truth.attributes[name].shape[1]
        own = np.empty((dim + 1, sk.d_sketch))
        own[:dim] = sk.module_matrix(name, 1).apply_short(np.eye(dim) / 2,
                                                          num_threads=num_threads)
        own[dim] = sk.module_matrix(name, 2).apply_short(np.full((1, 1), 0.5),
                                                         num_threads=num_threads)[0]
        parts = [P1.half(own, num_threads=num_threads) / 2]
        labels = [(name, j) for j in range(dim + 1)]
        below = [_placed(sk, *words(c), pos, num_threads)
                 for c, pos in sorted(children.get(name, []), key=lambda cp: cp[1])]
        if below:
            inputs = np.concatenate([w for w, _ in below])
            parts.append(P2.half(inputs, num_threads=num_threads) / 2)
            labels += [lab for _, labs in below for lab in labs]
        return sk.module_matrix(name, 0).half(np.concatenate(parts),
                                              num_threads=num_threads), labels

    tops = sorted(children[OUTPUT], key=lambda cp: cp[1])
    placed = [_placed(sk, *words(t), pos, num_threads) for t, pos in tops]
    return (np.concatenate([w for w, _ in placed]),
            [lab for _, labs in placed for lab in labs])


def _placed(sk: rs.Sketcher, W: np.ndarray, labels: List[Label], position: int,
            num_threads: Optional[int]) -> Tuple[np.ndarray, List[Label]]:
    """Words of a child at tuple position ``position``: ``P(R[position]) W``."""
    return sk.position_matrix(position).half(W, num_threads=num_threads), labels


def coefficients(truth: NetworkTruth, labels: Sequence[Label]) -> np.ndarray:
    """``Z (S, K)``: each sample's coefficient of every word, ``g_M x_j`` or ``g_M`` (count)."""
    cols = []
    for name, j in labels:
        x = truth.attributes[name]
        g = truth.path_weights[name]
        cols.append(g * x[:, j] if j < x.shape[1] else g)
    return np.stack(cols, axis=1)


def synthesise(W: np.ndarray, Z: np.ndarray, dtype=np.float32, chunk: int = 1 << 16
               ) -> np.ndarray:
    """``Z W`` in ``dtype``, column chunk by chunk (the float64 product is never held whole)."""
    out = np.empty((Z.shape[0], W.shape[1]), dtype)
    for lo in range(0, W.shape[1], chunk):
        out[:, lo:lo + chunk] = Z @ W[:, lo:lo + chunk]
    return out


def agreement(sk: rs.Sketcher, graphs: Sequence[rs.Graph], W: np.ndarray, Z: np.ndarray,
              rows: Sequence[int]) -> Dict[str, float]:
    """Synthesis against the Sketcher on ``rows``: max |difference| / max |sketch| per row,
    the worst row, against a float64 Sketcher (same matrices; the algebra alone) and against
    ``sk``'s own dtype (its recursion rounds every object sketch to that dtype), and the
    fraction of the entries of the ``sk``-dtype synthesis bit-identical to the sketch."""
    sk64 = rs.Sketcher(sk.d_sketch, block_size=sk.block_size, density=sk.density,
                       seed=sk.seed, dtype="float64")
    rows = list(rows)
    synth = Z[rows] @ W
    out = {}
    for label, s in (("float64", sk64), (sk.dtype.name, sk)):
        real = s.sketch_many([graphs[i] for i in rows])
        rel = np.abs(real - synth).max(axis=1) / np.abs(real).max(axis=1)
        out[f"rel {label}"] = float(rel.max())
        if s is sk:
            out["bit-identical"] = float(np.mean(real == synth.astype(sk.dtype)))
    return out


def word_cosines(W: np.ndarray, labels: Sequence[Label], truth: NetworkTruth) -> str:
    """Median and max ``|cos|`` of the depth-2 words with the words of each deeper depth (zero
    words left out): the non-orthogonality that the duals of the heavy coefficients turn into
    a leak error (docs/unmix.md, round 6)."""
    norms = np.linalg.norm(W, axis=1)
    live = norms > 0
    unit = np.where(live[:, None], W / np.where(live, norms, 1.0)[:, None], 0.0)
    depth = np.array([truth.depths[n] for n, _ in labels])
    out = []
    for h in sorted(set(depth.tolist()) - {2}):
        cos = np.abs(unit[(depth == 2) & live] @ unit[(depth == h) & live].T)
        out.append(f"|cos| depth 2 vs {h}: median {np.median(cos):.4f}, max {cos.max():.4f}")
    return "; ".join(out)


def _main() -> None:
    from teacher_network import build_teacher
    from teacher_unmix import cache_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=524262)
    ap.add_argument("--q", type=float, default=4e-4)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[4, 5])
    ap.add_argument("--check", type=int, nargs="+", default=[0, 99, 199],
                    help="samples also sketched by the Sketcher to check the synthesis")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cosines", action="store_true",
                    help="also print |cos| of the depth-2 words with the deeper words")
    args = ap.parse_args()
    d, b, q = rs.suggest_block_sparse(args.d, args.q)
    for seed in args.seeds:
        sk = rs.Sketcher(d, block_size=b, density=q, seed=seed + 101)
        graphs = build_teacher("deep", args.samples, seed)[1]
        truth = NetworkTruth.from_graphs(sk, graphs)
        t0 = time.perf_counter()
        W, labels = tree_words(sk, truth)
        t_words = time.perf_counter() - t0
        if args.cosines:
            print(f"seed {seed}: " + word_cosines(W, labels, truth), flush=True)
        Z = coefficients(truth, labels)
        t0 = time.perf_counter()
        Y = synthesise(W, Z)
        t_synth = time.perf_counter() - t0
        path = cache_path(args.out, d, b, q, args.samples, seed)
        args.out.mkdir(parents=True, exist_ok=True)
        np.save(path, Y)
        t0 = time.perf_counter()
        agree = agreement(sk, graphs, W, Z, [i for i in args.check if i < args.samples])
        t_check = time.perf_counter() - t0
        print(f"seed {seed}: {path.name}  K = {len(labels)}, words {t_words:.1f} s, "
              f"synthesis {t_synth:.1f} s, check {t_check:.1f} s on samples {args.check}: "
              + ", ".join(f"{k} {v:.3g}" for k, v in agree.items()), flush=True)


if __name__ == "__main__":
    _main()
