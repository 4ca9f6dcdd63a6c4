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
   With ``method="unmix"``, a count cluster whose read breaks the bound but moves with the
   attribute cluster's ``|g x|_2`` (a leak-biased read) is the module's count matrix; the
   gain stays ``|g x_recovered|_2``.
4. The gain gives depth and path weight: ``g = w 2^-(4h-3)`` with ``w`` in
   ``(min_path_weight, 16 min_path_weight]`` pins ``h`` (Theorem 5's Sufficient Weight).
5. The tree: top-level modules hang from the output with weight ``w``; between recovered modules at
   depths ``h`` and ``h + 1`` an edge is kept where the child's attributes are needed to explain
   the parent's by least squares (Robust Module Learnability) and the weights are consistent.
   Tuple positions appear only in multi-matrix words and are not recovered (``position=None``):
   in a fixed tree a top-level object's position matrix and its module's wrapper ``R[M,0]``
   act on the same vectors with the same gain, so sketches cannot tell them apart.

Step 1 decodes one sample at a time, which reaches the top level only. ``method="unmix"``
replaces it, for a fixed tree, by decoding the blocks of an orthonormal basis of the row space
of all the sketches (:mod:`.unmix`), where every word has unit norm whatever its gain; steps 2-5
are unchanged. With ``sampled_sketches=`` (sketches of the same tree made with
``tuple_sampling=1``, one object each) the sketches are first split into one part per object
(:mod:`.separation`) and each part is unmixed on its own, so no read carries another object's
words. Measured in ``bench/teacher_unmix.py`` and ``docs/unmix.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .._checks import (as_finite_real_array, check_fraction, check_int, check_num_threads,
                       check_real)
from ..dictionary import DictionaryLearner, RecoveredMatrix
from ..sketcher import Sketcher
from .separation import separate_objects
from .unmixing import (RANK_FLOOR, Leak, UnmixResult, _check_block_size, _reads, _refine, _rescue_columns,
                       _screen_blocks, _word_blocks, _word_leak, unmix, word_vectors)

if TYPE_CHECKING:
    from .evaluate import NetworkScore, NetworkTruth

__all__ = ["learn_network", "infer_tree", "depth_from_gain", "NetworkModel", "RecoveredModule",
           "TreeEdge", "OUTPUT"]

OUTPUT = "output"  # the parent of the top-level modules in edges and truths
METHODS = ("sample", "unmix")


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
    ``|g x_recovered|_2``, divided by ``norm_share`` where that is set, and ``depth`` may be
    too deep by one; below the top level with ``method="unmix"`` the gain is the count read
    less its constant leak where the recovered columns hold the whole attribute norm or nearly,
    and ``|g x_recovered|_2`` where the count read falls below it while moving with it).
    ``columns`` are
    the recovered attribute coordinates, ``attributes`` the ``(n_samples, len(columns))``
    estimates of ``x`` on them (gain divided out, clipped at 0), ``gains`` the ``(n_samples,)``
    estimates of ``g = w 2^-(4h-3)``, ``path_weights`` of ``w``, ``clipped`` the fraction of
    the attribute coefficient reads that came out negative and were set to 0 (a sign of a
    leak-biased read), ``leak_corrected`` per column whether its coefficients were read with
    the shallower modules' words removed (None where the correction was not applied:
    ``method="sample"``, ``correct_leaks=False``, the top level). ``norm_share``: for a module
    without a count column whose recovered columns were found to hold only part of its unit
    attribute norm (``method="unmix"``: fitted from its parent's gain, which its siblings'
    gains sum to one level down), that share ``k`` (an estimate of ``|x_recovered|_2``,
    taken as constant over samples); the gains are then ``|g x_recovered|_2 / k`` and the
    attributes ``k`` times the unit direction of the reads, so ``|attributes|_2 = k`` and
    ``1 - k^2`` is the squared mass of the coordinates that were not recovered. None where it
    was not fitted (a module without a count column then has ``|attributes|_2 = 1``).
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
    clipped: float = 0.0
    leak_corrected: Optional[np.ndarray] = None
    norm_share: Optional[float] = None


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
        """Score against ground truth (true matrices from the Sketcher, true tree, attributes).

        Raises TypeError (not a :class:`NetworkTruth`) or ValueError (the truth of other
        sketches: another ``(d_sketch, block_size, density)`` or another sample count; a
        truth whose depths, attributes and path weights are not of the same modules, or
        whose attributes are not finite or path weights not ``(n_samples,)`` finite
        nonnegative), as :func:`~recsketch.network.evaluate.score`. The truth of sketches of
        another Sketcher seed with the same D(b, q, d) cannot be detected (the model does not
        store the seed)."""
        from .evaluate import score  # evaluation needs the model types defined here

        return score(self, truth)


# -- argument checks ---------------------------------------------------------------------------
def _as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite non-empty 2-D array of real numbers in its own dtype (bools and
    strings beside numbers refused: one rule for what is an array of numbers)."""
    return as_finite_real_array(x, name, 2, to_float64=False)


def _check_r2_gain(value: object) -> float:
    """``min_r2_gain`` (of :func:`learn_network` and :func:`infer_tree`) as a float in
    [0, 1]: 0 accepts every child that adds any R^2."""
    out = check_real(value, "min_r2_gain")
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"min_r2_gain must be in [0, 1], got {value!r}")
    return out


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
    return _check_block_size(block_size, d), check_fraction(density, "density")


# -- the learner -------------------------------------------------------------------------------
def learn_network(inputs: Any, sketches: Any, *, sketcher: Optional[Sketcher] = None,
                  block_size: Optional[int] = None, density: Optional[float] = None,
                  tau: float = 0.7, min_votes: int = 2, min_path_weight: float = 2.0 ** -3.5,
                  max_attribute_dim: int = 256,
                  sign_purity: float = 0.9, min_r2_gain: float = 0.05,
                  method: str = "sample", rank: Optional[int] = None, refine: Optional[int] = None,
                  correct_leaks: Optional[bool] = None, sampled_sketches: Any = None,
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
        squares explanation of the parent's attributes; in [0, 1], as for :func:`infer_tree`.
    method : {"sample", "unmix"}
        ``"sample"`` (default): decode every sample's blocks on its own (the module docstring;
        top level only). ``"unmix"``: for sketches of a *fixed tree*, decode the blocks of the
        row space of all sketches instead (:mod:`recsketch.network.unmixing`): every word is
        whitened to unit norm whatever its gain, which reaches depth 3 where one sample cannot
        (``docs/unmix.md``). It needs more samples than words (``K`` = sum of attribute
        lengths + 1 per object).
    rank : int, optional
        ``method="unmix"`` only: the number of words ``K``; default: the singular values above
        the rounding floor (:func:`recsketch.network.unmixing.choose_rank`).
    refine : int, optional
        ``method="unmix"`` only: rounds (default 20) of a nonnegative least-squares
        refinement of the coefficients on each sample's decoded rows, started from the unmixed
        estimate (0: that estimate alone; at depth 3 the refinement measured 0.12 median
        attribute error against 0.40 without it, see ``docs/unmix.md``).
    correct_leaks : bool, optional
        ``method="unmix"`` only (default True): below the top level, read each attribute
        column's blocks with the share of every shallower module's words removed
        (:func:`recsketch.network.unmixing.leak_corrected_estimates`), the words taken from the
        shallower modules' coefficients (:func:`recsketch.network.unmixing.word_vectors`).
    sampled_sketches : array_like ``(n_sampled, d_sketch)``, optional
        ``method="unmix"`` only: sketches of the same fixed tree with the same Sketcher made
        with ``tuple_sampling=1`` (footnote 2; e.g. ``sketcher.sketch_many(graphs,
        tuple_sampling=1, sample_seed=range(len(graphs)))``, of the same or other inputs),
        each of which holds one object's words. With them the sketches are first split into
        one part per object (:func:`recsketch.network.separation.separate_objects`, default
        ``min_cosine``) and each part is unmixed on its own, so no module's reads carry
        another object's words (measured on the deep teacher at d = 524,262, 18 seeds: the
        worse depth-3 module's attribute l-inf 0.015-0.139, median 0.042, against
        0.047-0.377, median 0.13, unmixed whole; ``docs/unmix.md`` round 10). An object is
        separated only if more sampled sketches hold it than its attributes vary in
        dimensions (attribute length + 1 at most); it is held in about ``w 2^-m`` of them
        (path weight ``w``, ``m`` the objects with inputs on its path, itself included), so
        deep or light objects need more. What no object's cluster spans is unmixed together,
        as without them. Cost: one unmixing and one per-sample scan per part (8 for a tree of
        7 objects with some directions unassigned) and the memory of
        :func:`~recsketch.network.separation.separate_objects`, plus one ``(n_samples,
        d_sketch)`` part at a time.
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
        ``d_sketch`` not divisible by ``block_size``, conflicting or missing parameters,
        ``sampled_sketches`` of another ``d_sketch`` or with ``method="sample"`` or ``rank=``,
        options out of range (``min_r2_gain`` not in [0, 1], ``density``, ``sign_purity``
        and ``min_path_weight`` not in (0, 1]). With ``method="unmix"``, the errors of
        :func:`~recsketch.network.unmixing.unmix` found after the pass over the sketches
        that forms their Gram matrix (sketches too large or too small for float64, all zero);
        with ``sampled_sketches``, also those of
        :func:`~recsketch.network.separation.separate_objects` (sampled sketches that do not
        hold one object each, or not of these sketches' tree and Sketcher), and its
        RuntimeWarnings (nothing separated, clusters left unassigned).
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
    r2_gain = _check_r2_gain(min_r2_gain)
    check_num_threads(num_threads)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "sample" and (rank is not None or refine is not None
                               or correct_leaks is not None):
        raise ValueError("rank=, refine= and correct_leaks= apply to method='unmix' only")
    Ys = None
    if sampled_sketches is not None:
        if method != "unmix":
            raise ValueError("sampled_sketches= applies to method='unmix' only")
        if rank is not None:
            raise ValueError("rank= cannot be combined with sampled_sketches= (each object's "
                             "part has its own rank)")
        Ys = _as_matrix(sampled_sketches, "sampled_sketches")
        if Ys.dtype not in (np.float32, np.float64):
            Ys = Ys.astype(np.float64)
        if Ys.shape[1] != d:
            raise ValueError(f"sampled_sketches has d_sketch={Ys.shape[1]} but sketches has {d}")
    if correct_leaks is not None and not isinstance(correct_leaks, (bool, np.bool_)):
        raise TypeError(f"correct_leaks must be a bool, got {type(correct_leaks).__name__}")
    leaks = True if correct_leaks is None else bool(correct_leaks)
    # built here on every path: it validates b against d, tau and min_votes before any work
    learner = DictionaryLearner(d, b, q, tau=tau, min_votes=min_votes, num_threads=num_threads,
                                progress=progress)
    if method == "sample":
        learner.fit(Y)
        modules, garbage, _, _ = _modules(Y, _clusters(learner, learner.transform(Y)), purity,
                                          max_dim, w0, False)
    else:
        if rank is not None:
            check_int(rank, "rank", minimum=1, maximum=n)
        rounds = 20 if refine is None else check_int(refine, "refine", minimum=0)
        options = dict(tau=tau, min_votes=min_votes, num_threads=num_threads,
                       progress=progress, rounds=rounds, max_dim=max_dim, purity=purity, w0=w0,
                       leaks=leaks)
        if Ys is None:
            modules, garbage = _unmix_modules(Y, b, q, rank=rank, **options)
        else:
            modules, garbage = [], []
            separation = separate_objects(Y, Ys)
            norms = separation.part_norms
            for o in range(separation.n_parts):
                # a part at rounding level (the directions of an object the sketches do not
                # hold) would be unmixed at its own scale and decode its rounding noise
                if not norms[o] > RANK_FLOOR * np.linalg.norm(norms):
                    continue
                found, lost = _unmix_modules(separation.part(o, Y.dtype), b, q, rank=None,
                                             **options)
                modules += [dataclasses.replace(m, id=len(modules) + i)
                            for i, m in enumerate(found)]
                garbage += lost
        modules = _norm_shares(modules, _tree_edges(modules, r2_gain), w0)
    if X_in is not None:
        for m in modules:
            m.input_r2 = _r2(X_in, m.attributes)
    levels: Dict[int, List[int]] = {}
    for m in modules:
        levels.setdefault(m.depth, []).append(m.id)
    edges = _tree_edges(modules, r2_gain)
    return NetworkModel(modules, dict(sorted(levels.items())), edges, garbage, n, d, b, q)


def _modules(Y: np.ndarray, clusters: List[_Cluster], purity: float, max_dim: int, w0: float,
             unmixed: bool) -> Tuple[List[RecoveredModule], List[Tuple[RecoveredMatrix, str]],
                                     List[Tuple[int, Optional[int]]], Dict[int, int]]:
    """Steps 2-4 of the module docstring on the clusters of one set of sketches: (modules,
    garbage, the (attribute, count) cluster pairs, the biased count clusters by attribute
    cluster). ``unmixed``: the clusters come from unmixing ``Y``, which adds the reads of
    ``method="unmix"`` (count reads, two-block columns, top-level reads), not the leak
    correction and the steps after it."""
    kept, garbage = _split_garbage(clusters, purity, max_dim)
    pairs, unpaired, count_reads = _pair(clusters, kept, Y if unmixed else None)
    biased = _pair_biased_counts(clusters, unpaired) if unmixed else {}
    unpaired = [k for k in unpaired if k not in biased.values()]
    # A lone column-0 cluster is a count column without its attribute matrix (or the reverse);
    # a lone multi-column cluster can only be an attribute matrix.
    garbage += [(clusters[c][0], "no partner: a lone column-0 cluster")
                for c in unpaired if np.array_equal(clusters[c][0].columns, [0])]
    pairs += [(c, None) for c in unpaired if not np.array_equal(clusters[c][0].columns, [0])]
    pairs.sort(key=lambda p: p[0])
    if unmixed:
        for a, c in pairs:
            if c is not None:
                clusters[a] = _two_block_columns(Y, clusters[a], clusters[c][1][:, 0],
                                                 gain_reads=count_reads[c])
    modules = [_module(i, clusters[a], None if c is None else clusters[c], w0)
               for i, (a, c) in enumerate(pairs)]
    if unmixed:
        modules = [_top_level_reads(Y, m, w0) if m.depth == 2 else m for m in modules]
    return modules, garbage, pairs, biased


def _unmix_modules(Y: np.ndarray, b: int, q: float, *, rank: Optional[int], tau: float,
                   min_votes: int, num_threads: Optional[int], progress: bool, rounds: int,
                   max_dim: int, purity: float, w0: float, leaks: bool
                   ) -> Tuple[List[RecoveredModule], List[Tuple[RecoveredMatrix, str]]]:
    """``method="unmix"`` on one set of fixed-tree sketches, up to (not including) the norm
    shares, which need every module of the tree."""
    un = unmix(Y, b, q, rank=rank, min_votes=min_votes, refine=rounds,
               rescue_below=min(max_dim, Y.shape[1]), num_threads=num_threads)
    clusters = _split_atoms(un.matrices, un.atoms, un.coefficients)
    # Columns with a single nonzero block get one vote in the basis but one per sample in
    # the per-sample scan (measured: 2 vs 4 of 5 top-level columns on one seed), so the
    # per-sample clusters add the columns unmixing missed.
    learner = DictionaryLearner(Y.shape[1], b, q, tau=tau, min_votes=min_votes,
                                num_threads=num_threads, progress=progress)
    learner.fit(Y)
    clusters = _merge_clusters(clusters, _clusters(learner, learner.transform(Y)))
    modules, garbage, pairs, biased = _modules(Y, clusters, purity, max_dim, w0, True)
    if leaks:
        modules = _correct_leaks(Y, un.basis, un.projections, modules, rounds, w0)
    # A count column with a biased read joins its module after every read: the module's
    # gain stays |g x|_2, as without a count column (see _pair_biased_counts).
    modules = [dataclasses.replace(m, count_matrix=clusters[biased[a]][0]) if a in biased
               else m for m, (a, _) in zip(modules, pairs)]
    modules = [_complete_columns(un.basis, un.projections, m) for m in modules]
    return _complete_from_basis(un, modules, max_dim, min_votes), garbage


def _tree_edges(modules: Sequence[RecoveredModule], min_r2_gain: float) -> List[TreeEdge]:
    """The top-level modules' edges to :data:`OUTPUT` and :func:`infer_tree`'s edges."""
    edges = [TreeEdge(OUTPUT, m.id, float(np.median(m.path_weights)))
             for m in modules if m.depth == 2]
    edges += infer_tree({m.id: m.attributes for m in modules}, {m.id: m.depth for m in modules},
                        {m.id: m.path_weights for m in modules}, min_r2_gain=min_r2_gain)
    return edges


_Cluster = Tuple[RecoveredMatrix, np.ndarray]  # the matrix and its (n_samples, n_columns) coefficients


def _clusters(learner: DictionaryLearner, coef: np.ndarray) -> List[_Cluster]:
    return _split_atoms(learner.matrices_, learner.atoms_, coef)


def _split_atoms(matrices: List[RecoveredMatrix], atoms: np.ndarray, coef: np.ndarray
                 ) -> List[_Cluster]:
    return [(mat, coef[:, atoms[:, 0] == k]) for k, mat in enumerate(matrices)]


def _merge_clusters(primary: List[_Cluster], extra: List[_Cluster]) -> List[_Cluster]:
    """``primary`` with the columns of ``extra`` it lacks: joined to the primary cluster of
    the same matrix signature (with their coefficients), or as new clusters."""
    out = list(primary)
    for mat, coef in extra:
        k = next((i for i, (m, _) in enumerate(out)
                  if np.array_equal(m.signature, mat.signature)), None)
        if k is None:
            out.append((mat, coef))
            continue
        base, base_coef = out[k]
        new = [i for i, c in enumerate(mat.columns) if c not in set(base.columns.tolist())]
        if not new:
            continue
        joined = RecoveredMatrix(base.d_sketch, base.block_size, base.density, base.signature,
                                 np.concatenate([base.columns, mat.columns[new]]),
                                 list(base.blocks) + [mat.blocks[i] for i in new],
                                 list(base.patterns) + [mat.patterns[i] for i in new])
        out[k] = (joined, np.hstack([base_coef, coef[:, new]]))
    return out


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


def _live_samples(gains: np.ndarray) -> np.ndarray:
    """The samples whose gain is above a quarter of the largest (boolean mask): where a
    module's reads are large enough to compare (the rules below judge ratios and spreads on
    them only)."""
    return gains > 0.25 * np.max(gains, initial=0.0)


# The pair score's bound on the 90% quantile of |g x|_2 / g (the read gain); see _pair_score.
PAIR_RATIO_CAP = 1.2


def _pair_score(attr: np.ndarray, count: np.ndarray) -> Optional[float]:
    """Mean of |g x|_2 / g over samples, or None if the pair breaks |g x|_2 <= g.

    The right partner gives the recovered share of |x|_2 = 1 (close to 1); a count cluster
    with a smaller gain breaks the bound, one with a larger gain gives a smaller ratio."""
    g = count[:, 0]
    live = _live_samples(g)
    if not live.any():
        return None
    ratio = np.linalg.norm(attr[live], axis=1) / g[live]
    if np.quantile(ratio, 0.9) > PAIR_RATIO_CAP:
        return None
    return float(np.mean(ratio))


def _opposed(norm: np.ndarray, gains: np.ndarray, gain_reads: Optional[np.ndarray]) -> bool:
    """Whether an attribute cluster's ``|c|_2`` per sample (``norm``) and a count cluster's
    gain move against each other beyond chance: correlation below
    ``-OPPOSED_SE / sqrt(n)`` over the ``n`` live samples, while the gain varies
    (:func:`_gain_varies`, ``gain_reads`` its block reads): then they are not one module's
    ``g x`` and ``g``, which share ``g`` (the right partner's correlation is positive, or
    near 0 where ``|x_recovered|`` varies more than ``g``).

    Why: sibling modules' gains move against each other (importance weights sum to 1), and
    the pair score alone (``|g x|_2 <= g``) let two siblings' count columns pair as a module
    of their own (siblings' count reads correlate near -1, the right partners near +1). ``k``
    siblings whose weights sum to 1 correlate at about ``-1/(k-1)``, so a fixed cutoff such
    as -0.5 holds for two only; a cutoff at ``OPPOSED_SE`` standard errors of a zero
    correlation refuses them while ``1/(k-1)`` is beyond it, and refuses a right partner
    whose correlation is 0 about once in 160 (it is positive where ``|x_recovered|`` does not
    move against ``g``). A constant gain (the root's) gives no sign, so the test is not made
    there. Measurements: ``docs/unmix.md``, rounds 6 and 7."""
    if not _gain_varies(gains, gain_reads):
        return False
    live = _live_samples(gains)
    line = _line(norm[live], gains[live])
    return line is not None and line[2] < -OPPOSED_SE / math.sqrt(int(live.sum()))


# Standard errors of a zero correlation beyond which _opposed calls a pair's norm and gain
# opposed.
OPPOSED_SE = 2.5


def _line(x: np.ndarray, y: np.ndarray) -> Optional[Tuple[float, float, float]]:
    """The least-squares line of ``y`` on ``x`` (slope, intercept) and their correlation; None
    where either is constant (no line, no correlation)."""
    if np.std(x) == 0 or np.std(y) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), float(np.corrcoef(x, y)[0, 1])


def _count_reads(Y: np.ndarray, count: Optional[RecoveredMatrix]) -> Optional[np.ndarray]:
    """``(n_blocks, S)``: a count column's per-block reads, the blocks the coefficient read
    trusts (:func:`~recsketch.network.unmixing.screen_blocks`): what :func:`_gain_varies`
    measures the read noise on. None without a count column."""
    if count is None:
        return None
    est = _reads(Y, count, 0)
    return est[_screen_blocks(est)]  # Y is finite (learn_network checked it)


def _pair(clusters: List[_Cluster], kept: Sequence[int], Y: Optional[np.ndarray] = None
          ) -> Tuple[List[Tuple[int, Optional[int]]], List[int], Dict[int, np.ndarray]]:
    """Greedy one-to-one pairing of attribute and count clusters, best score first; with the
    sketches ``Y`` (``method="unmix"`` only, so the per-sample learner, the baseline of the
    depth-2 criterion, keeps its pairing) never an attribute cluster with a count that moves
    against it (:func:`_opposed`). Returns the pairs, the unpaired clusters and, with ``Y``,
    every count cluster's block reads (:func:`_count_reads`) by cluster index."""
    counts = [k for k in kept if np.array_equal(clusters[k][0].columns, [0])]
    norms = {a: np.linalg.norm(clusters[a][1], axis=1) for a in kept} if Y is not None else {}
    reads = {c: _count_reads(Y, clusters[c][0]) for c in counts} if Y is not None else {}
    cand = []
    for a in kept:
        for c in counts:
            if a == c or (Y is not None
                          and _opposed(norms[a], clusters[c][1][:, 0], reads[c])):
                continue
            s = _pair_score(clusters[a][1], clusters[c][1])
            if s is not None:
                cand.append((-s, a, c))
    used: set = set()
    pairs: List[Tuple[int, Optional[int]]] = []
    for _, a, c in sorted(cand):
        if a not in used and c not in used:
            pairs.append((a, c))
            used.update((a, c))
    return pairs, [k for k in kept if k not in used], reads


# A count column whose read breaks that bound is still its module's if the ratio stays below
# BIASED_RATIO_CAP (the geometric middle of the 16x gain step between depths, so never a
# deeper module's count) and the read moves with |g x|_2 (correlation at least BIASED_MIN_CORR);
# see _pair_biased_counts.
BIASED_RATIO_CAP = 4.0
BIASED_MIN_CORR = 0.9


def _pair_biased_counts(clusters: List[_Cluster], unpaired: Sequence[int]) -> Dict[int, int]:
    """``{attribute cluster: count cluster}`` among the clusters :func:`_pair` left unpaired:
    a count column whose read is *below* the attribute cluster's ``|g x|_2`` (90% quantile of
    the ratio above :data:`PAIR_RATIO_CAP`, at most :data:`BIASED_RATIO_CAP`) while the two
    move together over the live samples (correlation at least :data:`BIASED_MIN_CORR`);
    greedy, highest correlation first. Such a pair is one module whose count read carries a
    negative constant leak (a heavier word on one of the count column's few blocks): the
    count matrix is the module's, its read is not a gain, so the module keeps the gain
    ``|g x|_2`` of a module without a count column and holds the count matrix beside it.

    Why: refusing the pair loses a true column of the module (the count cluster becomes
    garbage), and taking the biased read as the gain biases every attribute by the same
    factor. The correlation separates the partner from the other counts in reach: siblings'
    gains move against each other (:func:`_opposed`), and a deeper module's count is 16x
    smaller (ratio about 16 or more, beyond the cap). Measured at d = 524,262, q = 4e-4
    (``docs/unmix.md``, round 8)."""
    counts = [c for c in unpaired if np.array_equal(clusters[c][0].columns, [0])]
    attrs = [a for a in unpaired if a not in counts]
    cand = []
    for a in attrs:
        norm = np.linalg.norm(clusters[a][1], axis=1)
        for c in counts:
            g = clusters[c][1][:, 0]
            live = _live_samples(g)
            if live.sum() < 3:
                continue
            q90 = float(np.quantile(norm[live] / g[live], 0.9))
            line = _line(norm[live], g[live])
            if (PAIR_RATIO_CAP < q90 <= BIASED_RATIO_CAP and line is not None
                    and line[2] >= BIASED_MIN_CORR):
                cand.append((-line[2], a, c))
    out: Dict[int, int] = {}
    for _, a, c in sorted(cand):
        if a not in out and c not in out.values():
            out[a] = c
    return out


def _top_level_reads(Y: np.ndarray, m: RecoveredModule, w0: float) -> RecoveredModule:
    """A top-level module (depth 2) with each attribute coefficient read as the mean of its
    decoded blocks' reads, every block kept (count column and gains unchanged).

    Why: the screening of :func:`~recsketch.network.unmixing.screen_blocks` and the two-block
    rule look for a *heavier* word's leak, a multiple of the coefficient; a top-level
    module's words are the heaviest, and what shifts its blocks are lighter words' and its
    own diffuse parts, small additive offsets that the ratio test reads as leaks where the
    coordinate is small: the screen can keep a biased minority of the blocks, whose mean is
    worse than the mean of all (``docs/unmix.md``, round 6)."""
    mat = m.attribute_matrix
    coef = np.stack([np.mean(_reads(Y, mat, c), axis=0) for c in range(mat.columns.size)],
                    axis=1)
    return _module(m.id, (mat, coef), None if m.count_matrix is None
                   else (m.count_matrix, m.gains[:, None]), w0)


# Relative spread (std / mean over the live samples) below which a module's gain counts as
# constant for the two-block rule; see _gain_varies.
GAIN_CV_MIN = 0.01
# How many times its read noise the gain's spread over samples must be to count as varying
# (both as standard deviations of a sample's gain); see _gain_varies.
GAIN_NOISE_RATIO = 2.0


def _gain_varies(gains: np.ndarray, reads: Optional[np.ndarray] = None) -> bool:
    """Whether the gain varies over the live samples (gain above a quarter of the largest):
    by a relative spread of at least :data:`GAIN_CV_MIN`, and, given its block reads
    ``reads`` (``(n_blocks, S)``, :func:`_count_reads`) on two or more blocks, by at least
    :data:`GAIN_NOISE_RATIO` times the read noise of a sample's mean over the blocks. That
    noise comes from the blocks' disagreement: the reads less each block's mean over the
    samples and each sample's mean over the blocks (a block's constant leak is not noise, the
    gain's variation moves every block alike). This is the condition under which
    :func:`_two_block_columns` can tell a leaky block from a clean one.

    Why: that rule sees a nearly constant leak as the extra variation of ``leak / g``, which
    is nil where ``g`` itself is constant (a top-level module under a fixed output weight: the
    deep teacher's root has path weight 1); it then keeps one of two blocks by their noise and
    throws away the average (the root's read gain varies by a few 1e-4, the depth-3 modules'
    by a few percent and more: ``docs/unmix.md``, round 6). A relative spread alone would
    also count a constant gain read with noise as varying (a relative noise of 0.3 per read is
    far above 0.01), hence the comparison with the noise."""
    g = np.asarray(gains, dtype=np.float64)
    live = _live_samples(g)
    if live.sum() < 3:
        return False
    mean = float(np.mean(g[live]))
    if not (mean > 0 and float(np.std(g[live])) >= GAIN_CV_MIN * mean):
        return False
    if reads is None or reads.shape[0] < 2:  # one block: no noise estimate
        return True
    R = np.asarray(reads, dtype=np.float64)[:, live]
    per_sample = R.mean(axis=0)
    resid = R - R.mean(axis=1, keepdims=True) - per_sample[None, :] + per_sample.mean()
    noise = float(np.sum(resid ** 2)) / ((R.shape[0] - 1) * (R.shape[1] - 1)) / R.shape[0]
    return float(np.var(per_sample, ddof=1)) >= GAIN_NOISE_RATIO ** 2 * noise


def _two_block_columns(Y: np.ndarray, attr: _Cluster, gains: np.ndarray,
                       leak: Optional[Leak] = None,
                       gain_reads: Optional[np.ndarray] = None) -> _Cluster:
    """For every attribute column whose coefficient rests on exactly two trusted blocks (as
    :func:`~recsketch.network.unmixing.screen_blocks` keeps them), the coefficient read off the
    one block whose ``estimate / g`` varies least over samples, where the gain varies
    (:func:`_gain_varies`, with ``gain_reads`` its block reads; otherwise ``attr`` as it is).
    ``leak``: the heavier words' share of the rows, removed before the blocks are read
    (``_correct_leaks``).

    Why: a heavy word's leak into a block is nearly constant over samples while ``g`` varies
    with the input, so on the leaky block ``estimate / g = x_j + leak / g`` carries the extra
    variation of ``1 / g``; two blocks that disagree cannot be told apart by their medians
    (measurements: ``docs/unmix.md``)."""
    mat, coef = attr
    if not _gain_varies(gains, gain_reads):
        return attr
    live = _live_samples(gains)
    coef = coef.copy()
    for c in range(mat.columns.size):
        est = _reads(Y, mat, c, leak)
        keep = _screen_blocks(est)
        if keep.sum() != 2:
            continue
        est = est[keep]
        spread = np.std(est[:, live] / gains[live], axis=1)
        coef[:, c] = est[int(np.argmin(spread))]
    return mat, coef


def _correct_leaks(Y: np.ndarray, V: np.ndarray, YV: np.ndarray,
                   modules: List[RecoveredModule], rounds: int, w0: float
                   ) -> List[RecoveredModule]:
    """The attributes of every module below the shallowest depth re-read with the words of all
    shallower modules removed from each block, level by level from the top (a depth-4 module
    sees the corrected depth-3 coefficients): the same rule as the uncorrected read (screened
    nonnegative least squares on the module's decoded rows, then the two-block rule), applied
    to the sketches minus the shallower words' share (``_word_leak``; per block
    :func:`~recsketch.network.unmixing.leak_corrected_estimates`). The shallower words are their
    attribute words and their count words; gains (count columns) are kept.

    Where the module has a count column, each column keeps the corrected read only if its
    ``x_j = c_j / g`` varies over samples no more than the uncorrected one (``_steadier``):
    the correction can also carry a common offset into every block of a column (the shallower
    words, taken from their coefficients, pick up a share of the column's own word, the
    shallower coefficients being 16-32x larger and estimated to ~1%), and such an offset is
    nearly constant while ``g`` varies, so it shows as extra variation of ``c_j / g``, as a
    leak does in the uncorrected read. Without a count column ``g`` is ``|c|_2`` itself and the
    criterion is void: the corrected read is kept. Where the count column exists but the
    corrected columns hold the module's whole attribute norm (``_whole_norm``), the corrected
    reads are kept and the gain is the count read less its constant leak, which would bias
    every column and the choice. Measurements per seed: ``docs/unmix.md``."""
    out = list(modules)
    depths = sorted({m.depth for m in modules})
    for h in depths[1:]:
        heavy = [m for m in out if m.depth < h]
        C = np.hstack([m.attributes * m.gains[:, None] for m in heavy]
                      + [m.gains[:, None] for m in heavy if m.count_matrix is not None])
        leak = _word_leak(V, word_vectors(YV, C), C)
        for i, m in enumerate(out):
            if m.depth == h:
                fixed = _reread(Y, m, leak, rounds, w0)
                if not np.any(fixed.gains > 0):
                    # The removed share took the module's whole read (every coefficient 0
                    # after the nonnegative fit: seen with fewer samples than words, where
                    # the word vectors are not separated): a module with no gain has no depth
                    # (_module gives it 0), so the uncorrected read is kept.
                    out[i] = dataclasses.replace(
                        m, leak_corrected=np.zeros(m.columns.size, bool))
                    continue
                whole = _whole_norm(m, fixed, w0, _count_reads(Y, m.count_matrix))
                out[i] = whole if whole is not None else _steadier(m, fixed)
    return out


# How close to 1 the slope of |c|_2 on the count read must be (either way, as a factor) for
# the recovered columns to count as holding the module's whole attribute norm; and the R^2
# the line needs. See _whole_norm.
WHOLE_NORM_SLOPE = 0.85
WHOLE_NORM_R2 = 0.5


def _whole_norm(plain: RecoveredModule, fixed: RecoveredModule, w0: float,
                gain_reads: Optional[np.ndarray] = None) -> Optional[RecoveredModule]:
    """``fixed`` (the leak-corrected module, every corrected read kept) with the gain taken as
    the count read less its constant leak ``kappa``, where the corrected columns hold the
    module's whole attribute norm or nearly; None where they do not (or there is no count
    column), for :func:`_steadier`.

    Why: attributes have unit norm, so over *all* of a module's coordinates ``|c|_2 = g`` in
    every sample, while a depth-3 count read is ``g + kappa``, ``kappa`` a nearly constant leak
    (the root's count coefficient is constant and sibling counts sum to a constant) that no
    read of the sketches removes (the constant's dual carries the mids' count words).
    Dividing by ``g + kappa`` biases every column of the module by the same factor, and the
    per-column steadiness choice of :func:`_steadier` is judged with that biased gain. Where
    the recovered columns hold a share ``r`` of the norm, ``|c|_2 = r (read - kappa)``: the
    least-squares line of ``|c|_2`` on the read meets 0 at ``read = kappa`` whatever ``r``,
    so the gain is the read less that ``kappa`` (``|c|_2`` itself would be ``r g``, every
    attribute too large by ``1 / r``). The line is trusted where it is one for one or nearly
    (a coordinate missing with a large or varying share of the norm makes ``r`` vary with the
    sample): slope within ``[WHOLE_NORM_SLOPE, 1 / WHOLE_NORM_SLOPE]`` and
    ``R^2 >= WHOLE_NORM_R2``. Depth and path weights follow the new gain; ``gain_reads``: the
    count column's block reads for :func:`_gain_varies`. Measurements: ``docs/unmix.md``,
    rounds 7 and 8."""
    if plain.count_matrix is None or not _gain_varies(plain.gains, gain_reads):
        return None  # a constant gain gives no slope
    g = plain.gains
    live = _live_samples(g)
    c = fixed.attributes * fixed.gains[:, None]
    norm = np.linalg.norm(c, axis=1)
    line = _line(g[live], norm[live])
    if line is None:
        return None
    slope, intercept, r = line
    if not (WHOLE_NORM_SLOPE <= slope <= 1.0 / WHOLE_NORM_SLOPE and r ** 2 >= WHOLE_NORM_R2):
        return None
    gain = g + intercept / slope  # the read less kappa, the read where the line meets 0
    m = _module(plain.id, (fixed.attribute_matrix, c), (plain.count_matrix, gain[:, None]), w0)
    return dataclasses.replace(m, clipped=fixed.clipped,
                               leak_corrected=np.ones(fixed.columns.size, bool))


def _steadier(plain: RecoveredModule, fixed: RecoveredModule) -> RecoveredModule:
    """``fixed`` (the leak-corrected module) with each column's attributes taken from
    ``plain`` where they vary less over the live samples (gain above a quarter of the
    largest); ``leak_corrected`` records the choice. Modules without a count column: ``fixed``.
    """
    if plain.count_matrix is None:
        return dataclasses.replace(fixed, leak_corrected=np.ones(fixed.columns.size, bool))
    live = _live_samples(plain.gains)
    if live.sum() < 3:
        return dataclasses.replace(fixed, leak_corrected=np.ones(fixed.columns.size, bool))
    keep = (np.std(fixed.attributes[live], axis=0)
            <= np.std(plain.attributes[live], axis=0))
    x = np.where(keep[None, :], fixed.attributes, plain.attributes)
    return dataclasses.replace(fixed, attributes=x, leak_corrected=keep)


# _norm_shares: a module without a count column takes its gain from the fitted share of its
# unit norm only below SHARE_MISSING; the fit is used only where every child's share has a
# standard error of at most SHARE_SE_MAX and lies below 1 / SHARE_BAND. See _norm_shares.
SHARE_MISSING = 0.9
SHARE_SE_MAX = 0.05
SHARE_BAND = 0.85


def _fit_norm_shares(parent_gains: np.ndarray, child_norms: np.ndarray
                    ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(shares, standard errors) ``(k,)`` of ``k`` sibling modules' unit attribute norms held
    by their recovered coefficient reads, from ``g_parent(s) / 16 = sum_c |c_c(s)|_2 / k_c``
    fitted by least squares (no intercept) over the samples where the parent's gain is above a
    quarter of its largest; None where it cannot be fitted (too few samples, a rank-deficient
    design, a share that is not positive, a value that is not finite).

    ``parent_gains`` ``(S,)``; ``child_norms`` ``(S, k)``, each child's ``|c(s)|_2`` over its
    recovered attribute columns. The relation: a child's path weight is its parent's times
    an importance weight, the weights sum to 1, and one level down the gain has a further
    factor ``2^-4`` (``g = w 2^-(4h-3)``), so ``sum_c g_c = g_parent / 16``; a child whose
    columns hold the share ``k_c = |x_recovered|_2`` of its unit norm has ``|c_c|_2 =
    k_c g_c``. The standard errors are the least-squares ones (residual variance times
    ``(N^T N)^-1``), carried to ``k = 1 / coefficient`` to first order."""
    G = np.asarray(parent_gains, dtype=np.float64) / 16.0
    N = np.asarray(child_norms, dtype=np.float64)
    live = _live_samples(G)
    G, N = G[live], N[live]
    n, k = N.shape
    if n <= k + 1 or not (np.isfinite(G).all() and np.isfinite(N).all()):
        return None
    coef, _, rank, _ = np.linalg.lstsq(N, G, rcond=None)
    if rank < k or not np.all(coef > 0):
        return None
    resid = G - N @ coef
    cov = float(resid @ resid) / (n - k) * np.linalg.inv(N.T @ N)
    return 1.0 / coef, np.sqrt(np.maximum(np.diag(cov), 0.0)) / coef ** 2


def _norm_shares(modules: List[RecoveredModule], edges: Sequence[TreeEdge], w0: float
                 ) -> List[RecoveredModule]:
    """The modules, where a module without a count column holds only part of its unit
    attribute norm, with the gain ``|c|_2 / k`` instead of ``|c|_2`` (``k`` its fitted share,
    :func:`_fit_norm_shares`, over all the children of its parent in ``edges``), the
    attributes ``k c / |c|_2``, depth and path weights from that gain and
    ``RecoveredModule.norm_share = k``.

    Why: such a module's gain is ``|c|_2`` over its recovered columns, ``k g`` with ``k =
    |x_recovered|_2 < 1`` where a coordinate was not recovered (its column has no nonzero
    block, or it did not decode), and dividing by it inflates every recovered coordinate by
    ``1 / k``. The siblings' path weights sum to their parent's, so the parent's gain fixes
    each child's share; the fit uses the children's read norms only (not a sibling's gain: a
    depth-3 count read carries a nearly constant leak), and keeps the per-sample ``|c|_2``,
    which divides out an error common to one sample's reads. ``k`` is taken as constant over
    samples: ``x`` varies by a few percent from sample to sample, and the reads' common bias
    (the shares of modules with every column recovered were 0.91-1.06) is part of ``k``,
    which is why a share is used only below :data:`SHARE_MISSING`, and only where the fit is
    determined (standard errors at most :data:`SHARE_SE_MAX`) and no child's share is above
    ``1 / SHARE_BAND`` (a share well above 1 means the relation does not hold, e.g. a child
    of the parent was not recovered, or a child's reads carry a leak). It assumes, as
    :func:`infer_tree`'s weight-sum step, that the parent's importance weights sum to 1 and
    that all its children were recovered: a missing child's weight would be taken as a
    share missing from the others. Modules with a count column keep their gain, and so does
    a module whose depth the new gain would change (its edge to the parent fixed it).
    Measurements: ``docs/unmix.md``, round 8."""
    pos = {m.id: i for i, m in enumerate(modules)}
    children: Dict[Hashable, List[int]] = {}
    for e in edges:
        if e.parent != OUTPUT and e.parent in pos and e.child in pos:
            children.setdefault(e.parent, []).append(pos[e.child])
    out = list(modules)
    # parents from the top: a parent's own gain may have been set from its share
    for p in sorted(children, key=lambda p: modules[pos[p]].depth):
        kids = children[p]
        if all(out[i].count_matrix is not None for i in kids):
            continue
        norms = np.stack([np.linalg.norm(out[i].attributes * out[i].gains[:, None], axis=1)
                          for i in kids], axis=1)
        fit = _fit_norm_shares(out[pos[p]].gains, norms)
        if fit is None:
            continue
        shares, se = fit
        if not (np.all(se <= SHARE_SE_MAX) and np.all(shares <= 1.0 / SHARE_BAND)):  # (NaN)
            continue
        for i, k in zip(kids, shares.tolist()):
            m = out[i]
            # a share of 0 (or one so small that the gains overflow) carries no gain: skipped
            if m.count_matrix is not None or not 0.0 < k < SHARE_MISSING:
                continue
            with np.errstate(over="ignore"):
                gains = m.gains / k
            live = gains > 0
            if not (live.any() and np.all(np.isfinite(gains))):
                continue
            if depth_from_gain(float(np.median(gains[live])), w0) != m.depth:
                continue  # the edge the share was fitted on fixed the depth
            out[i] = dataclasses.replace(m, attributes=m.attributes * k, gains=gains,
                                         path_weights=gains * 2.0 ** (4 * m.depth - 3),
                                         norm_share=k)
    return out


def _complete_columns(V: np.ndarray, YV: np.ndarray, m: RecoveredModule) -> RecoveredModule:
    """The module's attribute columns with the blocks their words show beyond the decoded ones
    (:func:`~recsketch.network.unmixing.word_blocks`; a block shared with another spike does not
    decode in the basis). A column gains blocks only if its word also shows every block it
    already has, with the same signs."""
    mat = m.attribute_matrix
    words = word_vectors(YV, m.attributes * m.gains[:, None])
    blocks, patterns = list(mat.blocks), list(mat.patterns)
    for k, j in enumerate(mat.columns):
        idx, pats = _word_blocks(V, words[:, k], int(j), mat.signature, mat.scale)
        found = dict(zip(idx.tolist(), pats))
        have = [int(x) for x in blocks[k]]
        if len(found) <= len(have) or not all(
                x in found and np.array_equal(found[x], p) for x, p in zip(have, patterns[k])):
            continue
        order = np.array(sorted(found), dtype=np.asarray(blocks[k]).dtype)
        blocks[k] = order
        patterns[k] = np.stack([found[int(x)] for x in order]).astype(patterns[k].dtype)
    if all(len(a) == len(b) for a, b in zip(blocks, mat.blocks)):
        return m
    full = RecoveredMatrix(mat.d_sketch, mat.block_size, mat.density, mat.signature,
                           mat.columns, blocks, patterns)
    return dataclasses.replace(m, attribute_matrix=full)


def _complete_from_basis(un: UnmixResult, modules: List[RecoveredModule], below: int,
                         min_votes: int) -> List[RecoveredModule]:
    """The modules' attribute and count columns with the blocks their words in the basis show
    beyond the held ones (:func:`~recsketch.network.unmixing.rescue_columns`, ``add=False``),
    after every coefficient read: a completed block is one that other words overlap, so it
    serves the recovered matrix, not the reads (``docs/unmix.md``, round 6). One call for all
    modules: each matrix is completed on its own, and the basis blocks are decoded once."""
    mats = [[m.attribute_matrix] + ([m.count_matrix] if m.count_matrix is not None else [])
            for m in modules]
    if not mats:
        return []
    density = modules[0].attribute_matrix.density
    done = iter(_rescue_columns(un.basis, un.block_left, un.block_right,
                                [x for ms in mats for x in ms], density, min_votes, below,
                                complete=True, add=False))
    out = []
    for m, ms in zip(modules, mats):
        attr = next(done)
        count = next(done) if len(ms) > 1 else None
        out.append(dataclasses.replace(m, attribute_matrix=attr, count_matrix=count))
    return out


def _reread(Y: np.ndarray, m: RecoveredModule, leak: Leak, rounds: int, w0: float
            ) -> RecoveredModule:
    """Module ``m`` with its attribute coefficients read again from ``Y`` minus ``leak``."""
    mat = m.attribute_matrix
    coef = _refine(Y, [mat], None, rounds, leak=leak)
    if m.count_matrix is not None:
        coef = _two_block_columns(Y, (mat, coef), m.gains, leak,
                                  _count_reads(Y, m.count_matrix))[1]
    return _module(m.id, (mat, coef), None if m.count_matrix is None
                   else (m.count_matrix, m.gains[:, None]), w0)


def _module(i: int, attr: _Cluster, count: Optional[_Cluster], w0: float) -> RecoveredModule:
    """The module of an attribute cluster and its count cluster (or None): gains from the
    count column (else the lower bound ``|g x|_2``), depth from the median gain, ``x = c / g``.
    Negative reads are set to 0 (identity-word coefficients are ``g x >= 0``) and counted
    (``RecoveredModule.clipped``; the nonnegative least squares never returns one, the
    two-block rule's single-block reads and the per-sample learner's can)."""
    c = np.asarray(attr[1], dtype=np.float64)
    clipped = float(np.mean(c < 0)) if c.size else 0.0
    c = np.maximum(c, 0.0)
    if count is not None:
        gains = np.maximum(count[1][:, 0], 0.0)
    else:  # |g x_recovered|_2 <= g: exact when every essential coordinate was recovered
        gains = np.linalg.norm(c, axis=1)
    safe = np.where(gains > 0, gains, 1.0)
    x = np.where(gains[:, None] > 0, c / safe[:, None], 0.0)
    g = float(np.median(gains[gains > 0])) if np.any(gains > 0) else 0.0
    depth = depth_from_gain(g, w0) if g > 0 else 0
    weights = gains * 2.0 ** (4 * depth - 3)  # g = w 2^-(4h-3)
    return RecoveredModule(i, attr[0], None if count is None else count[0],
                           attr[0].columns.copy(), x, gains, depth, weights, clipped=clipped)


def depth_from_gain(gain: float, min_path_weight: float = 2.0 ** -3.5) -> int:
    """The depth ``h`` with ``gain = w 2^-(4h-3)`` for a path weight ``w`` in
    ``(min_path_weight, 16 min_path_weight]`` (MATH.md §2.3), at least 2.

    Raises TypeError (not real numbers) or ValueError (``gain`` not positive and finite,
    ``min_path_weight`` not in (0, 1])."""
    g = check_real(gain, "gain")
    if not (g > 0 and math.isfinite(g)):
        raise ValueError(f"gain must be positive and finite, got {gain!r}")
    min_path_weight = check_fraction(min_path_weight, "min_path_weight")
    h = math.floor((3.0 - math.log2(g) + math.log2(16.0 * min_path_weight)) / 4.0)
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


def _weight_ratio(w_child: np.ndarray, w_parent: np.ndarray) -> float:
    """Median over samples of ``w_child / w_parent``."""
    return float(np.median(w_child / np.maximum(w_parent, 1e-300)))


def _weight_share(w_children: Sequence[np.ndarray], w_parent: np.ndarray) -> float:
    """Median over samples of ``sum_c w_c / w_parent`` (0 for no children)."""
    if not w_children:
        return 0.0
    return _weight_ratio(np.sum(w_children, axis=0), w_parent)


def _check_tree_input(attributes: Any, depths: Any, path_weights: Any, *,
                      n_samples: Optional[int] = None, prefix: str = ""
                      ) -> Tuple[Dict[Hashable, np.ndarray], Dict[Hashable, int],
                                 Dict[Hashable, np.ndarray]]:
    """:func:`infer_tree`'s three mappings (also a :class:`NetworkTruth`'s, for scoring) as
    dicts of float64 arrays and ints, checked (see :func:`infer_tree`'s Raises): every module
    with ``n_samples`` rows where that is given, else as many as the first module. ``prefix``
    goes before the argument names in the messages (``"truth."``)."""
    for name, arg in (("attributes", attributes), ("depths", depths),
                      ("path_weights", path_weights)):
        if not isinstance(arg, Mapping):
            raise TypeError(f"{prefix}{name} must be a mapping keyed by module, got "
                            f"{type(arg).__name__}")
    keys = set(attributes)
    if set(depths) != keys or set(path_weights) != keys:
        raise ValueError(f"{prefix}attributes, {prefix}depths and {prefix}path_weights must "
                         f"have the same keys (the same modules), got {sorted(map(str, keys))}, "
                         f"{sorted(map(str, depths))}, {sorted(map(str, path_weights))}")
    attrs, hs, weights = {}, {}, {}
    n = n_samples
    for k in attributes:
        hs[k] = check_int(depths[k], f"{prefix}depths[{k!r}]")
        x = _as_matrix_rows(attributes[k], f"{prefix}attributes[{k!r}]")
        w = _as_matrix_rows(path_weights[k], f"{prefix}path_weights[{k!r}]", ndim=1)
        if np.any(w < 0):
            raise ValueError(f"{prefix}path_weights[{k!r}] must be nonnegative")
        if n is None:
            n = x.shape[0]
        if x.shape[0] != n or w.shape[0] != n:
            whose = "the model's samples" if n_samples is not None else "the first module's"
            raise ValueError(f"{prefix}attributes[{k!r}] and {prefix}path_weights[{k!r}] must "
                             f"have {n} rows (samples), as {whose}, got {x.shape[0]} "
                             f"attributes and {w.shape[0]} path weights")
        attrs[k], weights[k] = x, w
    return attrs, hs, weights


def _as_matrix_rows(x: Any, name: str, ndim: int = 2) -> np.ndarray:
    """``x`` as a finite float64 array of ``ndim`` dimensions with at least one row (a
    2-D one may have no columns: a module without recovered coordinates)."""
    return as_finite_real_array(x, name, ndim, min_shape=(1, 0))


def infer_tree(attributes: Mapping[Hashable, np.ndarray], depths: Mapping[Hashable, int],
               path_weights: Mapping[Hashable, np.ndarray], *, min_r2_gain: float = 0.05,
               weight_slack: float = 1.1, weight_sum_tolerance: float = 0.15
               ) -> List[TreeEdge]:
    """Edges between modules at consecutive depths from their per-sample attributes.

    For every parent ``p`` at depth ``h`` and candidate child ``c`` at depth ``h + 1``, the
    gain in R^2 of the least-squares map (all candidates at ``h + 1``) -> ``x_p`` when ``c`` is
    added last. A fixed tree gives each child one parent: the one it explains most, if by at
    least ``min_r2_gain`` and if ``w_c <= weight_slack * w_p`` in the median (a child's path
    weight is its parent's times an importance weight <= 1). A child it explains by less is
    still attached to a parent ``p`` when (a) the median over samples of
    ``sum_c w_c / w_p`` over the children attached to ``p`` by their gain is *not* within
    ``weight_sum_tolerance`` of 1, (b) adding the child brings it within, and (c) exactly one
    parent satisfies (a) and (b) for that child; each weak child is tested on its own. The rule
    assumes that every child of ``p`` but this one was recovered and attached by its gain, and
    that ``p``'s importance weights sum to 1 (MATH.md §1). :class:`recsketch.Graph` accepts
    sums below 1 (MATH.md §3.3 relaxes the sum to at most one): where they sum to less, or a
    child of ``p`` is missing, the rule may not fire and the weak child stays unattached, and
    a parent whose weights sum to less than 1 by about the child's share can take it.
    Why: the R^2 gain measures how much of the parent's attributes the child alone
    explains, which can be below ``min_r2_gain`` for a true child even on the true attributes
    (0.037 on one seed of ``bench/teacher_unmix.py``'s teacher, ``docs/unmix.md`` round 5).
    ``attributes[k]`` is ``(n_samples, dim)``, ``path_weights[k]`` ``(n_samples,)``. Edges to
    :data:`OUTPUT` are not produced here. Positions are unknown (None).

    Raises TypeError/ValueError before any work: the three mappings not on the same keys,
    depths not integers, attributes not 2-D ``(n_samples, dim)`` or path weights not 1-D
    ``(n_samples,)`` real arrays of one sample count with finite (weights: nonnegative)
    values, ``min_r2_gain`` not in [0, 1], ``weight_sum_tolerance`` not in (0, 1],
    ``weight_slack`` not positive and finite.
    """
    tolerance = check_fraction(weight_sum_tolerance, "weight_sum_tolerance")
    min_r2_gain = _check_r2_gain(min_r2_gain)
    slack = check_real(weight_slack, "weight_slack")
    if not (slack > 0 and math.isfinite(slack)):
        raise ValueError(f"weight_slack must be positive and finite, got {weight_slack!r}")
    attributes, depths, path_weights = _check_tree_input(attributes, depths, path_weights)
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
        strong: Dict[Hashable, List[Hashable]] = {p: [] for p in parents}
        weak: List[Hashable] = []
        for j, c in enumerate(children):
            i = int(np.argmax(gain[:, j]))
            p = parents[i]
            ratio = _weight_ratio(path_weights[c], path_weights[p])
            if ratio > slack:
                continue
            if gain[i, j] >= min_r2_gain:
                edges.append(TreeEdge(p, c, min(ratio, 1.0)))
                strong[p].append(c)
            else:
                weak.append(c)
        # Each weak child on its own, against the strongly attached children only: attaching
        # weak children in groups, or to their best-R^2 parent whatever its share, lets a
        # parent whose children already carry its weight absorb another parent's child.
        for c in weak:
            fits = []
            for p in parents:
                ratio = _weight_ratio(path_weights[c], path_weights[p])
                if ratio > slack:
                    continue
                without = _weight_share([path_weights[k] for k in strong[p]], path_weights[p])
                with_c = _weight_share([path_weights[k] for k in strong[p]] + [path_weights[c]],
                                       path_weights[p])
                if abs(without - 1.0) > tolerance and abs(with_c - 1.0) <= tolerance:
                    fits.append((p, ratio))
            if len(fits) == 1:
                edges.append(TreeEdge(fits[0][0], c, min(fits[0][1], 1.0)))
    return edges
