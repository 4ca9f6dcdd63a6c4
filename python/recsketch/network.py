"""Learning a modular network back from its overall sketches (paper Section 4.1, Theorem 5).

Why the recursion starts from the inside (a deviation from MATH.md §4.5, measured in
``bench/teacher_network.py``): expanding every ``P(R) = (I + R) / 2`` of an object's path turns
its contribution to the overall sketch into ``2^(3(h-1))`` *words* of equal gain
``g = w 2^-(4h-3)`` (MATH.md §2.3). Exactly one of them, the all-identity word
``g (R[M,1] x + R[M,2] e_1)``, is a single block-sparse matrix applied to a sparse vector, so it
is a Theorem-4 sample with coefficients ``g x`` and ``g``. Every other word is a product of two
or more random matrices, spread over all coordinates: it is the l1-bounded noise z_1. The
outer-first rounds of MATH.md §4.5 need the coefficient vector ``s_object(child)``, whose ~``(k+1) q d``
spiky coordinates make ~``(k+1) q^2 d`` columns collide in every block, and whose spikes are
``sqrt(q d)`` times weaker than the identity word's. So round 1 here is inner-first:

1. ``DictionaryLearner`` on the overall sketches recovers the columns of ``R[M,1]`` (one per
   attribute coordinate) and column 0 of ``R[M,2]`` of every module whose identity word rises
   above the diffuse words of the objects around it (in practice: depth 2).
2. Garbage is separated structurally. At small q a two-matrix word ``R_a R[M,k] x`` is itself
   spiky: it shows ``R_a``'s columns at the *rows* of the spike ``R[M,k] x``, scattered over
   ``[0, d)``, with coefficients ``+-g x_j / sqrt(d q)`` of mixed signs. An identity word's
   columns are attribute coordinates (small indices, zero padding) with coefficients
   ``g x >= 0``. So a cluster with a column ``>= max_attribute_dim`` or with coefficients of
   both signs is garbage.
3. A count cluster (``R[M,2]``: column 0 only) is paired with the attribute cluster of the same
   module through ``|g x|_2 = g |x|_2 <= g`` in every sample (attributes are unit-norm). An
   attribute cluster left without a partner (its ``R[M,2]`` column has no nonzero block, or it
   did not decode) is kept as a module whose gain is the lower bound ``|g x_recovered|_2``.
4. The gain gives depth and path weight: ``g = w 2^-(4h-3)`` with ``w`` in
   ``(min_path_weight, 16 min_path_weight]`` pins ``h`` (Theorem 5's Sufficient Weight).
5. The tree: top-level modules hang from the output with weight ``w``; between recovered modules at
   depths ``h`` and ``h + 1`` an edge is kept where the child's attributes are needed to explain
   the parent's by least squares (Robust Module Learnability) and the weights are consistent.
   Tuple positions appear only in multi-matrix words and are not recovered (``position=None``):
   in a fixed tree a top-level object's position matrix and its module's wrapper ``R[M,0]``
   act on the same vectors with the same gain, so sketches cannot tell them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._checks import check_fraction, check_int, check_num_threads
from .dictionary import DictionaryLearner, RecoveredMatrix
from .graph import Graph
from .sketcher import Sketcher

__all__ = ["learn_network", "infer_tree", "NetworkModel", "RecoveredModule", "TreeEdge",
           "NetworkTruth", "NetworkScore", "LevelScore"]

OUTPUT = "output"  # the parent of the top-level modules in edges and truths


@dataclass(frozen=True)
class TreeEdge:
    """``parent -> child`` of the communication tree. ``parent`` is a module id (or name in a
    truth) or :data:`OUTPUT`; ``weight`` the median importance weight of the edge;
    ``position`` the tuple position, None where it cannot be recovered."""

    parent: Hashable
    child: Hashable
    weight: float
    position: Optional[int] = None


@dataclass
class RecoveredModule:
    """A module learned back from the sketches (anonymous: ``id`` is its index).

    ``attribute_matrix`` holds the recovered columns of ``R[M,1]``, ``count_matrix`` column 0 of
    ``R[M,2]`` (None if it was not recovered: then ``gains`` is the lower bound
    ``|g x_recovered|_2`` and ``depth`` may be too deep by one). ``columns`` are the recovered attribute coordinates, ``attributes`` the
    ``(n_samples, len(columns))`` estimates of ``x`` on them (gain divided out, clipped at 0),
    ``gains`` the ``(n_samples,)`` estimates of ``g = w 2^-(4h-3)``, ``path_weights`` of ``w``.
    """

    id: int
    attribute_matrix: RecoveredMatrix
    count_matrix: Optional[RecoveredMatrix]
    columns: np.ndarray
    attributes: np.ndarray
    gains: np.ndarray
    depth: int
    path_weights: np.ndarray
    input_r2: Optional[float] = None


@dataclass
class NetworkModel:
    """What :func:`learn_network` recovered.

    ``modules`` (by id), ``levels[h]`` the ids at depth ``h``, ``edges`` the recovered tree
    (parents are module ids or :data:`OUTPUT`), ``garbage`` the matrix clusters that were set
    aside with the reason, and the D(b, q, d) parameters used.
    """

    modules: List[RecoveredModule]
    levels: Dict[int, List[int]]
    edges: List[TreeEdge]
    garbage: List[Tuple[RecoveredMatrix, str]]
    n_samples: int
    d_sketch: int
    block_size: int
    density: float

    def report(self, truth: "NetworkTruth") -> "NetworkScore":
        """Score against ground truth (true matrices from the Sketcher, true tree, attributes)."""
        return _score(self, truth)


# -- argument checks ---------------------------------------------------------------------------
def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = x if isinstance(x, np.ndarray) else None
    if arr is None:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a 2-D array of numbers ({exc})") from exc
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, ...), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _block_params(d: int, sketcher: Optional[Sketcher], block_size: Optional[int],
                  density: Optional[float]) -> Tuple[int, float]:
    if sketcher is not None:
        if not isinstance(sketcher, Sketcher):
            raise TypeError(f"sketcher must be a recsketch.Sketcher, got {type(sketcher).__name__}")
        if block_size is not None or density is not None:
            raise ValueError("pass either sketcher or (block_size, density), not both")
        if sketcher.family != "block_sparse":
            raise ValueError("learning needs the block_sparse family (paper Section 4.3)")
        if sketcher.d_sketch != d:
            raise ValueError(f"sketches have d_sketch={d} but the sketcher has "
                             f"d_sketch={sketcher.d_sketch}")
        return int(sketcher.block_size), float(sketcher.density)  # type: ignore[arg-type]
    if block_size is None or density is None:
        raise ValueError("pass sketcher=, or both block_size= and density=")
    b = check_int(block_size, "block_size", minimum=3)
    if b % 3 or d % b:
        raise ValueError(f"block_size must be a multiple of 3 dividing d_sketch "
                         f"(d_sketch={d}, block_size={b})")
    return b, check_fraction(density, "density")


# -- the learner -------------------------------------------------------------------------------
def learn_network(inputs: Any, sketches: Any, *, sketcher: Optional[Sketcher] = None,
                  block_size: Optional[int] = None, density: Optional[float] = None,
                  tau: float = 0.7, min_votes: int = 2, min_path_weight: float = 2.0 ** -3.5,
                  max_attribute_dim: int = 256,
                  sign_purity: float = 0.9, min_r2_gain: float = 0.05,
                  num_threads: Optional[int] = None, progress: bool = False) -> NetworkModel:
    """Learn the modules and the communication tree of a network from its overall sketches.

    Parameters
    ----------
    inputs : array_like ``(n_samples, n_features)`` or None
        The raw network input of each sample (not an object, so not in the sketch). Used only to
        measure how well each recovered module's attributes are a least-squares function of the
        input (``RecoveredModule.input_r2``, the module-learnability diagnostic of Theorem 5);
        pass None to skip it. Rows must match ``sketches``.
    sketches : array_like ``(n_samples, d_sketch)``
        Overall sketches (``Sketcher.sketch_many``), float32 or float64, finite.
    sketcher : Sketcher, optional
        Only its ``block_size`` and ``density`` are read (never its matrices). Alternatively
        pass ``block_size`` and ``density`` of the D(b, q, d) the sketches were made with.
    tau, min_votes : passed to :class:`DictionaryLearner` (block test and votes over samples).
    min_path_weight : float
        Sufficient-Weight floor ``w0``: every recovered module's path weight is assumed to lie in
        ``(w0, 16 w0]``, which makes depth a function of the gain. Default ``2^-3.5`` (~0.088)
        covers ``w`` up to ``sqrt 2``, so ``w = 1`` is not at an interval edge.
    max_attribute_dim : int
        Attribute vectors are zero-padded, so a module matrix's essential columns are below the
        longest attribute length; a cluster with a column at or above this is garbage.
    sign_purity : float
        Minimum fraction of a cluster's significant coefficients that are positive for it to be
        taken as a module matrix (identity-word coefficients ``g x`` are nonnegative).
    min_r2_gain : float
        An edge ``parent <- child`` needs the child to add at least this much R^2 to the least-
        squares explanation of the parent's attributes.
    num_threads : threads of the block scan (None: all). progress : tqdm bar while scanning.

    Returns
    -------
    NetworkModel

    Notes
    -----
    What sketches cannot tell apart is not guessed: with 1-dimensional attributes (always
    ``x = 1``) a module's ``R[M,1]`` and ``R[M,2]`` carry identical coefficients, so which of
    the two recovered clusters is the attribute matrix is arbitrary; and tuple positions are
    left None (see the module docstring).

    Raises
    ------
    TypeError, ValueError
        Before any work: non-numeric or non-2-D arrays, NaN/inf, mismatched sample counts,
        ``d_sketch`` not divisible by ``block_size``, conflicting or missing parameters.
    """
    Y = _as_matrix(sketches, "sketches")
    if Y.dtype not in (np.float32, np.float64):
        Y = Y.astype(np.float64)
    n, d = Y.shape
    X_in = None if inputs is None else _as_matrix(inputs, "inputs").astype(np.float64)
    if X_in is not None and X_in.shape[0] != n:
        raise ValueError(f"inputs has {X_in.shape[0]} rows but sketches has {n}")
    b, q = _block_params(d, sketcher, block_size, density)
    w0 = check_fraction(min_path_weight, "min_path_weight")
    purity = check_fraction(sign_purity, "sign_purity")
    max_dim = check_int(max_attribute_dim, "max_attribute_dim", minimum=1)
    r2_gain = check_fraction(min_r2_gain, "min_r2_gain")
    check_num_threads(num_threads)
    learner = DictionaryLearner(d, b, q, tau=tau, min_votes=min_votes, num_threads=num_threads,
                                progress=progress)  # validates b against d, tau, min_votes

    learner.fit(Y)
    coef = learner.transform(Y)
    clusters = _clusters(learner, coef)
    kept, garbage = _split_garbage(clusters, purity, max_dim)
    pairs, unpaired = _pair(clusters, kept)
    # A lone column-0 cluster is a count column without its attribute matrix (or the reverse);
    # a lone multi-column cluster can only be an attribute matrix.
    garbage += [(clusters[c][0], "no partner: a lone column-0 cluster")
                for c in unpaired if np.array_equal(clusters[c][0].columns, [0])]
    pairs += [(c, None) for c in unpaired if not np.array_equal(clusters[c][0].columns, [0])]
    pairs.sort(key=lambda p: p[0])
    modules = [_module(i, clusters[a], None if c is None else clusters[c], w0)
               for i, (a, c) in enumerate(pairs)]
    if X_in is not None:
        for m in modules:
            m.input_r2 = _r2(X_in, m.attributes)
    levels: Dict[int, List[int]] = {}
    for m in modules:
        levels.setdefault(m.depth, []).append(m.id)
    edges = [TreeEdge(OUTPUT, m.id, float(np.median(m.path_weights)))
             for m in modules if m.depth == 2]
    edges += infer_tree({m.id: m.attributes for m in modules}, {m.id: m.depth for m in modules},
                        {m.id: m.path_weights for m in modules}, min_r2_gain=r2_gain)
    return NetworkModel(modules, dict(sorted(levels.items())), edges, garbage, n, d, b, q)


_Cluster = Tuple[RecoveredMatrix, np.ndarray]  # the matrix and its (n_samples, n_columns) coefficients


def _clusters(learner: DictionaryLearner, coef: np.ndarray) -> List[_Cluster]:
    atoms = learner.atoms_
    return [(mat, coef[:, atoms[:, 0] == k]) for k, mat in enumerate(learner.matrices_)]


def _split_garbage(clusters: List[_Cluster], purity: float, max_dim: int
                   ) -> Tuple[List[int], List[Tuple[RecoveredMatrix, str]]]:
    """Keep clusters on attribute coordinates whose significant coefficients are positive."""
    kept, garbage = [], []
    for k, (mat, c) in enumerate(clusters):
        if mat.columns.size and int(mat.columns.max()) >= max_dim:
            garbage.append((mat, f"column {int(mat.columns.max())} >= max_attribute_dim: the "
                                 "rows of a spike under a product word"))
            continue
        big = np.abs(c) > 0.25 * np.max(np.abs(c), initial=0.0)
        pos = float(np.mean(c[big] > 0)) if big.any() else 0.0
        if pos >= purity:
            kept.append(k)
        else:
            garbage.append((mat, f"signed coefficients ({pos:.0%} positive): a multi-matrix "
                                 "word, not an identity word"))
    return kept, garbage


def _pair_score(attr: np.ndarray, count: np.ndarray) -> Optional[float]:
    """Mean of |g x|_2 / g over samples, or None if the pair breaks |g x|_2 <= g.

    The right partner gives the recovered share of |x|_2 = 1 (close to 1); a count cluster
    with a smaller gain breaks the bound, one with a larger gain gives a smaller ratio."""
    g = count[:, 0]
    live = g > 0.25 * np.max(g, initial=0.0)
    if not live.any():
        return None
    ratio = np.linalg.norm(attr[live], axis=1) / g[live]
    if np.quantile(ratio, 0.9) > 1.2:
        return None
    return float(np.mean(ratio))


def _pair(clusters: List[_Cluster], kept: Sequence[int]
          ) -> Tuple[List[Tuple[int, Optional[int]]], List[int]]:
    """Greedy one-to-one pairing of attribute and count clusters, best score first."""
    counts = [k for k in kept if np.array_equal(clusters[k][0].columns, [0])]
    cand = []
    for a in kept:
        for c in counts:
            if a != c:
                s = _pair_score(clusters[a][1], clusters[c][1])
                if s is not None:
                    cand.append((-s, a, c))
    used: set = set()
    pairs: List[Tuple[int, Optional[int]]] = []
    for _, a, c in sorted(cand):
        if a not in used and c not in used:
            pairs.append((a, c))
            used.update((a, c))
    return pairs, [k for k in kept if k not in used]


def _module(i: int, attr: _Cluster, count: Optional[_Cluster], w0: float) -> RecoveredModule:
    if count is not None:
        gains = np.maximum(count[1][:, 0], 0.0)
    else:  # |g x_recovered|_2 <= g: exact when every essential coordinate was recovered
        gains = np.linalg.norm(np.maximum(attr[1], 0.0), axis=1)
    safe = np.where(gains > 0, gains, 1.0)
    x = np.where(gains[:, None] > 0, np.maximum(attr[1], 0.0) / safe[:, None], 0.0)
    g = float(np.median(gains[gains > 0])) if np.any(gains > 0) else 0.0
    depth = depth_from_gain(g, w0) if g > 0 else 0
    weights = gains * 2.0 ** (4 * depth - 3)
    return RecoveredModule(i, attr[0], None if count is None else count[0],
                           attr[0].columns.copy(), x, gains, depth, weights)


def depth_from_gain(gain: float, min_path_weight: float = 2.0 ** -3.5) -> int:
    """The depth ``h`` with ``gain = w 2^-(4h-3)`` for a path weight ``w`` in
    ``(min_path_weight, 16 min_path_weight]`` (MATH.md §2.3), at least 2."""
    if not gain > 0:
        raise ValueError(f"gain must be positive, got {gain!r}")
    h = math.floor((3.0 - math.log2(gain) + math.log2(16.0 * min_path_weight)) / 4.0)
    return max(2, h)


def _r2(X: np.ndarray, T: np.ndarray) -> float:
    """In-sample R^2 of the least-squares map [1, X] -> T (all target columns pooled)."""
    if T.size == 0:
        return 0.0
    A = np.hstack([np.ones((X.shape[0], 1)), X])
    coef, *_ = np.linalg.lstsq(A, T, rcond=None)
    resid = float(np.sum((T - A @ coef) ** 2))
    total = float(np.sum((T - T.mean(axis=0)) ** 2))
    return 1.0 - resid / total if total > 0 else 0.0


def infer_tree(attributes: Mapping[Hashable, np.ndarray], depths: Mapping[Hashable, int],
               path_weights: Mapping[Hashable, np.ndarray], *, min_r2_gain: float = 0.05,
               weight_slack: float = 1.1) -> List[TreeEdge]:
    """Edges between modules at consecutive depths from their per-sample attributes.

    For every parent ``p`` at depth ``h`` and candidate child ``c`` at depth ``h + 1``, the
    gain in R^2 of the least-squares map (all candidates at ``h + 1``) -> ``x_p`` when ``c`` is
    added last. A fixed tree gives each child one parent: the one it explains most, if by at
    least ``min_r2_gain`` and if ``w_c <= weight_slack * w_p`` in the median (a child's path
    weight is its parent's times an importance weight <= 1). ``attributes[k]`` is
    ``(n_samples, dim)``, ``path_weights[k]`` ``(n_samples,)``. Edges to :data:`OUTPUT` are not
    produced here. Positions are unknown (None).
    """
    by_depth: Dict[int, List[Hashable]] = {}
    for k, h in depths.items():
        by_depth.setdefault(int(h), []).append(k)
    edges: List[TreeEdge] = []
    for h in sorted(by_depth):
        parents, children = by_depth[h], by_depth.get(h + 1, [])
        if not children:
            continue
        gain = np.full((len(parents), len(children)), -np.inf)
        for i, p in enumerate(parents):
            full = np.hstack([attributes[c] for c in children])
            base = _r2(full, attributes[p])
            for j, c in enumerate(children):
                rest = [attributes[o] for o in children if o != c]
                without = _r2(np.hstack(rest), attributes[p]) if rest else 0.0
                gain[i, j] = base - without
        for j, c in enumerate(children):
            i = int(np.argmax(gain[:, j]))
            p = parents[i]
            ratio = float(np.median(path_weights[c] / np.maximum(path_weights[p], 1e-300)))
            if gain[i, j] >= min_r2_gain and ratio <= weight_slack:
                edges.append(TreeEdge(p, c, min(ratio, 1.0)))
    return edges


# -- ground truth and scoring ------------------------------------------------------------------
@dataclass
class NetworkTruth:
    """Ground truth of a fixed-tree teacher: the Sketcher (true matrices), each module's depth,
    per-sample attributes ``(n_samples, dim)`` and path weights ``(n_samples,)``, and the tree
    edges by module name (parent :data:`OUTPUT` for top-level modules) with their tuple position.
    """

    sketcher: Sketcher
    depths: Dict[str, int]
    attributes: Dict[str, np.ndarray]
    path_weights: Dict[str, np.ndarray]
    edges: List[TreeEdge]

    @classmethod
    def from_graphs(cls, sketcher: Sketcher, graphs: Sequence[Graph]) -> "NetworkTruth":
        """Read the truth off the graphs that were sketched.

        Raises ValueError unless every graph is the same fixed tree: each module produces
        exactly one object, every object has one parent, and the (parent module, child module,
        position) triples agree across graphs.
        """
        if not isinstance(sketcher, Sketcher):
            raise TypeError("sketcher must be a recsketch.Sketcher")
        if len(graphs) == 0:
            raise ValueError("graphs must not be empty")
        attrs: Dict[str, List[np.ndarray]] = {}
        weights: Dict[str, List[float]] = {}
        depths: Dict[str, int] = {}
        tree: Optional[set] = None
        edge_w: Dict[Tuple[str, str, int], List[float]] = {}
        for gi, g in enumerate(graphs):
            if not isinstance(g, Graph):
                raise TypeError(f"graphs[{gi}] is not a recsketch.Graph")
            names = g.modules
            if len(set(names)) != len(names) or g.output is None:
                raise ValueError(f"graphs[{gi}]: a fixed tree needs one object per module and "
                                 "an output")
            w = np.zeros(len(names))
            parent: Dict[int, Tuple[str, int, float]] = {}
            for pos, (h, wt) in enumerate(g.output, start=1):
                parent[h.index] = (OUTPUT, pos, wt)
            for h in g:
                for pos, (c, wt) in enumerate(g.inputs(h), start=1):
                    if c.index in parent:
                        raise ValueError(f"graphs[{gi}]: object {c.index} has two parents")
                    parent[c.index] = (h.module, pos, wt)
            order = sorted(g.depths().items(), key=lambda kv: kv[1])
            for h, depth in order:  # parents before children
                p_name, pos, wt = parent[h.index]
                w[h.index] = wt if p_name == OUTPUT else wt * w[names.index(p_name)]
                attrs.setdefault(h.module, []).append(np.asarray(g.attributes(h)))
                weights.setdefault(h.module, []).append(float(w[h.index]))
                depths[h.module] = depth
                edge_w.setdefault((p_name, h.module, pos), []).append(wt)
            here = {(p, c, pos) for (p, c, pos) in
                    ((parent[h.index][0], h.module, parent[h.index][1]) for h in g)}
            if tree is not None and here != tree:
                raise ValueError(f"graphs[{gi}] is not the same tree as graphs[0]")
            tree = here
        edges = [TreeEdge(p, c, float(np.median(edge_w[(p, c, pos)])), pos)
                 for p, c, pos in sorted(tree or ())]
        return cls(sketcher, depths, {k: np.stack(v) for k, v in attrs.items()},
                   {k: np.asarray(v) for k, v in weights.items()}, edges)


@dataclass
class LevelScore:
    """Recovery at one depth, against the truth. Errors are NaN where nothing was recovered.

    ``columns`` counts every attribute column of ``R[M,1]`` plus column 0 of ``R[M,2]``;
    ``columns_essential`` those a learner could recover (coordinate >= 0.2 in >= 10% of samples
    and at least one nonzero block). A recovered column is ``columns_recovered`` when within
    Hamming distance 0.2 q d of the true column (sign and support), ``columns_partial`` when its
    recovered entries are right but blocks are missing, ``columns_wrong`` when > 5% of its
    recovered entries have the wrong sign."""

    modules: int = 0
    modules_identified: int = 0
    matrices: int = 0          # R[M,1] and R[M,2] of every module
    matrices_matched: int = 0
    columns: int = 0
    columns_essential: int = 0
    columns_recovered: int = 0
    columns_partial: int = 0
    columns_wrong: int = 0
    attribute_error_median: float = float("nan")
    attribute_error_max: float = float("nan")
    gain_relative_error: float = float("nan")
    depth_correct: int = 0
    edges: int = 0             # true edges into this level
    edges_recovered: int = 0
    edges_wrong: int = 0

    def cells(self) -> List[str]:
        """The table cells: modules, matrices, columns ok+partial/essential/all (wrong),
        attribute error median/max, gain relative error, depth ok, edges (wrong)."""
        return [f"{self.modules_identified}/{self.modules}",
                f"{self.matrices_matched}/{self.matrices}",
                f"{self.columns_recovered}+{self.columns_partial}/{self.columns_essential}/"
                f"{self.columns} ({self.columns_wrong})",
                f"{_fmt(self.attribute_error_median)}/{_fmt(self.attribute_error_max)}",
                _fmt(self.gain_relative_error),
                f"{self.depth_correct}/{self.modules}",
                f"{self.edges_recovered}/{self.edges} ({self.edges_wrong})"]


@dataclass
class NetworkScore:
    """``levels[h]`` per true depth; ``spurious_modules`` recovered modules that match no true
    module; ``garbage_roles`` the true role (or None) of every garbage cluster; ``names`` the
    true module of every recovered module id (None if not identified)."""

    levels: Dict[int, LevelScore]
    spurious_modules: int
    garbage_roles: List[Optional[Tuple[Any, ...]]]
    names: Dict[int, Optional[str]] = field(default_factory=dict)

    def table(self) -> str:
        """A markdown table, one row per depth."""
        rows = ["| depth | modules | matrices | columns ok+partial/essential/all (wrong) | "
                "attr err med/max | gain rel err | depth ok | edges (wrong) |",
                "|---|---|---|---|---|---|---|---|"]
        for h, s in sorted(self.levels.items()):
            rows.append(f"| {h} | " + " | ".join(s.cells()) + " |")
        return "\n".join(rows)


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3f}"


def _recovered_columns(mat: RecoveredMatrix, idx: Sequence[int]) -> np.ndarray:
    """Rows: the recovered columns ``mat.columns[idx]`` as dense d-vectors."""
    out = np.zeros((len(idx), mat.d_sketch))
    b = mat.block_size
    for r, c in enumerate(idx):
        rows = (mat.blocks[c][:, None] * b + np.arange(b)[None, :]).ravel()
        out[r, rows] = mat.patterns[c].ravel() * mat.scale
    return out


def _compare(mat: RecoveredMatrix, true: Any, idx: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """For recovered columns ``idx`` against a true RandomMatrix: (sign/support Hamming
    distance over all d entries, fraction of the recovered nonzero entries with a wrong sign)."""
    E = np.zeros((len(idx), mat.d_sketch))
    E[np.arange(len(idx)), mat.columns[list(idx)]] = 1.0
    t = np.sign(np.round(true.matvec(E), 12))
    got = np.sign(_recovered_columns(mat, idx))
    on = got != 0
    wrong = np.sum(on & (got != t), axis=1) / np.maximum(np.sum(on, axis=1), 1)
    return np.sum(got != t, axis=1), wrong


def _roles(truth: NetworkTruth) -> Dict[Tuple[Any, ...], Any]:
    sk = truth.sketcher
    roles: Dict[Tuple[Any, ...], Any] = {(name, k): sk.module_matrix(name, k)
                                         for name in sorted(truth.depths) for k in range(3)}
    fan_in = max([e.position or 0 for e in truth.edges] + [2])  # R[1], R[2] are also slots
    roles.update({("position", i): sk.position_matrix(i) for i in range(1, fan_in + 1)})
    return roles


def _match(mat: RecoveredMatrix, roles: Dict[Tuple[Any, ...], Any]
           ) -> Tuple[Optional[Tuple[Any, ...]], np.ndarray, np.ndarray]:
    """The true role whose columns agree in sign on the recovered entries (<= 5% wrong) for
    most of the cluster's first 16 columns; then the Hamming distances and wrong-sign fractions
    of all its columns against that role. Role None (and empty arrays) if no role fits.

    Agreement on the recovered entries, not the 0.2 q d Hamming radius, decides the role: at
    q d / b ~ 1 a single missing block of b entries exceeds that radius."""
    probe = list(range(min(16, mat.columns.size)))
    best, best_hits = None, 0
    for role, R in roles.items():
        hits = int(np.sum(_compare(mat, R, probe)[1] <= 0.05))
        if hits > best_hits:
            best, best_hits = role, hits
    if best is None or 2 * best_hits < len(probe):
        return None, np.zeros(0), np.zeros(0)
    ham, wrong = _compare(mat, roles[best], list(range(mat.columns.size)))
    return best, ham, wrong


def _essential(truth: NetworkTruth, name: str, threshold: float) -> Dict[int, np.ndarray]:
    """Columns of R[M,1] / R[M,2] that a learner could recover: attribute coordinates reaching
    ``threshold`` in at least 10% of samples (column 0 of R[M,2] always), with >= 1 nonzero block."""
    x = truth.attributes[name]
    big = np.flatnonzero(np.quantile(x, 0.9, axis=0) >= threshold)
    out = {}
    for k, cols in ((1, big), (2, np.array([0]))):
        counts = truth.sketcher.module_matrix(name, k).column_block_counts()
        out[k] = cols[counts[cols] > 0]
    return out


def _score(model: NetworkModel, truth: NetworkTruth) -> NetworkScore:
    if not isinstance(truth, NetworkTruth):
        raise TypeError("truth must be a NetworkTruth")
    limit = 0.2 * model.density * model.d_sketch
    roles = _roles(truth)
    levels = {h: LevelScore() for h in sorted(set(truth.depths.values()))}
    essential = {name: _essential(truth, name, 0.2) for name in truth.depths}
    for name, h in truth.depths.items():
        s = levels[h]
        s.modules += 1
        s.matrices += 2
        s.columns += truth.attributes[name].shape[1] + 1
        s.columns_essential += sum(c.size for c in essential[name].values())
    for e in truth.edges:
        levels[truth.depths[str(e.child)]].edges += 1
    names: Dict[int, Optional[str]] = {}
    attr_err: Dict[int, List[np.ndarray]] = {h: [] for h in levels}
    gain_err: Dict[int, List[float]] = {h: [] for h in levels}
    seen: set = set()
    for m in model.modules:
        a_role = _score_matrix(m.attribute_matrix, roles, levels, truth, seen, limit)
        c_role = (None if m.count_matrix is None
                  else _score_matrix(m.count_matrix, roles, levels, truth, seen, limit))
        ok = (a_role is not None and a_role[1] == 1
              and (c_role is None if m.count_matrix is None else c_role == (a_role[0], 2)))
        name = str(a_role[0]) if ok and a_role is not None else None
        names[m.id] = name
        if name is None:
            continue
        h = truth.depths[name]
        s = levels[h]
        s.modules_identified += 1
        s.depth_correct += int(m.depth == h)
        # Samples where the object's path weight is 0 do not show it in the sketch: not scored.
        g_true = truth.path_weights[name] * 2.0 ** -(4 * h - 3)
        seen_in = g_true > 0
        if not seen_in.any():
            continue
        x_true = truth.attributes[name][seen_in]
        cols = m.columns < x_true.shape[1]
        if cols.any():
            attr_err[h].append(np.abs(m.attributes[seen_in][:, cols]
                                      - x_true[:, m.columns[cols]]).ravel())
        gain_err[h].append(float(np.median(np.abs(m.gains[seen_in] - g_true[seen_in])
                                           / g_true[seen_in])))
    for h, s in levels.items():
        if attr_err[h]:
            err = np.concatenate(attr_err[h])
            s.attribute_error_median, s.attribute_error_max = float(np.median(err)), float(err.max())
        if gain_err[h]:
            s.gain_relative_error = float(np.median(gain_err[h]))
    true_edges = {(e.parent, e.child) for e in truth.edges}
    for e in model.edges:
        parent = OUTPUT if e.parent == OUTPUT else names.get(int(e.parent))  # type: ignore[arg-type]
        child = names.get(int(e.child))  # type: ignore[arg-type]
        if child is None:
            continue
        s = levels[truth.depths[child]]
        if (parent, child) in true_edges:
            s.edges_recovered += 1
        else:
            s.edges_wrong += 1
    garbage_roles = [_match(mat, roles)[0] for mat, _ in model.garbage]
    spurious = sum(1 for v in names.values() if v is None)
    return NetworkScore(levels, spurious, garbage_roles, names)


def _score_matrix(mat: RecoveredMatrix, roles: Dict[Tuple[Any, ...], Any],
                  levels: Dict[int, LevelScore], truth: NetworkTruth, seen: set, limit: float
                  ) -> Optional[Tuple[Any, ...]]:
    """Match one module cluster to its true role and add its columns to the level's counts."""
    role, ham, wrong = _match(mat, roles)
    if role is None or role[0] == "position" or role[1] == 0:
        return role  # a wrapper or position matrix is garbage, not a module matrix
    name, k = role
    if role in seen:
        return role
    seen.add(role)
    s = levels[truth.depths[name]]
    s.matrices_matched += 1
    valid = mat.columns < truth.attributes[name].shape[1] if k == 1 else mat.columns == 0
    bad = wrong > 0.05
    s.columns_wrong += int(np.sum(bad | ~valid))
    good = valid & ~bad
    s.columns_recovered += int(np.sum(good & (ham <= limit)))
    s.columns_partial += int(np.sum(good & (ham > limit)))
    return role
