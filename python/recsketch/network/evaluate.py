"""Scoring a learned network against the ground truth of a fixed-tree teacher: the truth read off
the sketched graphs (:class:`NetworkTruth`), per-depth recovery of the matrix columns, the tree and
the attributes (:class:`LevelScore`, :class:`NetworkScore`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..dictionary import RecoveredMatrix
from ..graph import Graph
from ..sketcher import Sketcher
from .learn import OUTPUT, NetworkModel, TreeEdge, _check_tree_input

__all__ = ["NetworkTruth", "NetworkScore", "LevelScore", "score"]


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
    def from_graphs(cls, sketcher: Sketcher, graphs: Iterable[Graph]) -> "NetworkTruth":
        """Read the truth off the graphs that were sketched.

        ``graphs``: any iterable of :class:`~recsketch.Graph` (a generator is read once).

        Raises TypeError (``sketcher`` not a Sketcher, ``graphs`` not an iterable of Graphs)
        or ValueError (no graphs; graphs that are not the same fixed tree: each module
        produces exactly one object, every object has one parent, and the (parent module,
        child module, position) triples agree across graphs; a module whose attribute
        length differs between graphs).
        """
        if not isinstance(sketcher, Sketcher):
            raise TypeError("sketcher must be a recsketch.Sketcher")
        if isinstance(graphs, (str, bytes, Graph)):
            raise TypeError(f"graphs must be an iterable of recsketch.Graph, got "
                            f"{type(graphs).__name__}")
        try:
            graphs = list(graphs)
        except TypeError:
            raise TypeError(f"graphs must be an iterable of recsketch.Graph, got "
                            f"{type(graphs).__name__}") from None
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
                x = np.asarray(g.attributes(h))
                first = attrs.setdefault(h.module, [])
                if first and first[0].shape != x.shape:
                    raise ValueError(f"graphs[{gi}]: module {h.module!r} has attributes of "
                                     f"shape {x.shape}, {first[0].shape} in the graphs before")
                first.append(x)
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


def score(model: NetworkModel, truth: NetworkTruth) -> NetworkScore:
    """Score ``model`` against ``truth`` per depth (:class:`NetworkScore`).

    Raises TypeError (``model`` not a :class:`NetworkModel`, ``truth`` not a
    :class:`NetworkTruth`, attributes or path weights not arrays of numbers) or ValueError
    (the truth of other sketches: another ``(d_sketch, block_size, density)`` or another
    sample count; ``depths``, ``attributes`` and ``path_weights`` not keyed by the same
    modules; depths not integers; attributes not ``(n_samples, dim)`` finite; path weights not ``(n_samples,)``
    finite nonnegative) before any work. Not detected: the truth of sketches made with
    another Sketcher seed but the same D(b, q, d) (the model does not store the seed); the
    scores then match nothing."""
    if not isinstance(model, NetworkModel):
        raise TypeError(f"model must be a NetworkModel, got {type(model).__name__}")
    if not isinstance(truth, NetworkTruth):
        raise TypeError("truth must be a NetworkTruth")
    _check_same_sketches(model, truth)
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


def _check_same_sketches(model: NetworkModel, truth: NetworkTruth) -> None:
    """ValueError unless ``truth`` describes the sketches ``model`` was learned from: the same
    D(b, q, d) and one row per sample (scoring compares the two sample by sample), with
    finite attributes and finite nonnegative path weights of every module (TypeError for
    what is not an array of numbers). Another Sketcher seed with the same D(b, q, d) cannot
    be told apart: the model does not store the seed."""
    sk = truth.sketcher
    mine = (model.d_sketch, model.block_size, model.density)
    theirs = (sk.d_sketch, sk.block_size, sk.density)
    if mine[:2] != theirs[:2] or not (theirs[2] is not None
                                      and math.isclose(mine[2], theirs[2], rel_tol=1e-9)):
        raise ValueError(f"truth's sketcher has (d_sketch, block_size, density) = {theirs} but "
                         f"the model was learned from sketches with {mine}")
    # the same checks as infer_tree's input, with the model's sample count
    _check_tree_input(truth.attributes, truth.depths, truth.path_weights,
                      n_samples=model.n_samples, prefix="truth.")


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
