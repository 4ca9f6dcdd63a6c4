"""Unmixing across samples: learning below the top level of a fixed tree (Theorem 5, issue 13).

Why decoding one sample at a time stops at depth 2: an object at depth ``h`` contributes
``2^(3(h-1))`` words of equal gain; only its all-identity word is block-sparse, and in one sketch
it competes with the diffuse words of every object, including the heavier ones above it. On a
*fixed* tree the sketches are exactly ``Y = C A^T``: ``K`` fixed vectors ``A_k`` (the whole path
of ``(I + R) / 2`` factors applied to one column ``R[M,1] e_j`` or ``R[M,2] e_1`` of an object),
mixed by per-sample coefficients ``C`` (``g x_j`` and ``g``). The row space of ``Y`` contains every
``A_k`` at unit scale whatever its gain, so:

1. :func:`sketch_basis` -- an orthonormal basis ``V`` (``d x K``) of the row space, from the
   ``S x S`` Gram matrix accumulated over column chunks (no ``d x d`` object; one pass over ``Y``
   per chunk). The rank is the number of singular values above the rounding floor of the
   Gram route and of float32 (:func:`choose_rank`).
2. :func:`block_directions` -- in every block ``l`` of ``b`` rows, the top singular vector of
   ``V[l]`` (``b x K``): the unit vector of the span most concentrated on that block. Where one
   word's spike ``R[M,k] e_j`` owns the block, it is that spike plus the word's own diffuse part
   (the floor ``~2^(3(h-1)/2) sqrt(q)`` of the issue), so its signs are the column's signs.
3. The signs are decoded with the Enc decoder of the block scan and voted on exactly as
   :class:`~recsketch.DictionaryLearner` does for samples (a key needs ``min_votes`` blocks):
   the "samples" handed to it are one row holding every block's rounded top singular vector.
   Each column that decoded somewhere is then followed through its word ``V sum_l r_l``
   (:func:`rescue_columns`): a block shared with other words' spikes decodes to neither in the
   basis, but the word holds only its own spike there; keys with fewer than ``min_votes``
   blocks become columns where the word shows enough (here), and ``learn_network`` completes
   its modules' columns with the blocks their words show once every read is done.
4. :func:`unmix_coefficients` -- per-sample coefficients of every recovered column: with
   ``V = A M``, ``C = (Y V) M^T``, and a word's row ``m_k`` of ``M`` is read off its own decoded
   blocks (direction: their top right singular vectors; norm: their top singular values
   against the known spike height ``1/sqrt(dq)``); with ``refine > 0`` (the default) each
   column's decoded blocks are screened for a heavy word's leak (:func:`screen_blocks`) and
   the coefficients come from nonnegative least squares on the kept rows of every sample
   (``refine`` rounds; measured in :func:`unmix_coefficients`).
5. :func:`word_vectors`, :func:`leak_corrected_estimates` -- below the top level a block's read
   is shifted by the heavier words that overlap it through products of matrices; with the
   heavier words' coefficients known, their vectors come from the basis (the dual rows of
   ``Y V``, distinct words being nearly orthogonal), and their share of each block's read is
   removed (``learn_network(..., correct_leaks=True)``, attribute columns only).

The clusters and coefficients this returns have the same form as the per-sample learner's, so
:func:`~recsketch.network.learn_network` (``method="unmix"``) applies the same garbage rules,
pairing, depth-from-gain and tree steps to them. Wrappers ``R[M,0]`` and position matrices also
decode where one of their columns owns a block of some word; they land in ``garbage`` (their
columns are the rows of spikes, beyond ``max_attribute_dim``) and are scored there.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np

from .._checks import (all_finite, as_finite_real_array, check_flag, check_fraction, check_int,
                       check_num_threads, check_real)
from .._forksafe import fork_safe_rlock
from ..block_sparse import decode_blocks, min_block_size
from ..dictionary import DictionaryLearner, RecoveredMatrix

__all__ = ["UnmixResult", "sketch_basis", "choose_rank", "block_directions",
           "unmix_coefficients", "unmix", "block_estimates", "screen_blocks", "word_vectors",
           "leak_corrected_estimates", "word_blocks", "rescue_columns", "RANK_FLOOR"]


@dataclass
class UnmixResult:
    """What :func:`unmix` recovered.

    ``singular_values`` of the sketches (all of them, descending), ``rank`` the chosen ``K``,
    ``basis`` the ``(d, K)`` orthonormal row-space basis, ``block_strength`` the top singular
    value of every block of the basis (``(d / b,)``; larger where one word's spike owns the
    block than where only diffuse parts overlap),
    ``matrices`` the recovered matrices (voted keys clustered by matrix signature, as
    :attr:`DictionaryLearner.matrices_`), ``atoms`` ``(n_atoms, 2)`` (matrix, column),
    ``coefficients`` ``(n_samples, n_atoms)`` the per-sample coefficients of every atom and
    ``projections`` ``Y V`` (``(n_samples, K)``), the sketches in the basis; ``block_left``,
    ``block_right`` the blocks' top left and right singular vectors (:func:`block_directions`).
    """

    singular_values: np.ndarray
    rank: int
    basis: np.ndarray
    block_strength: np.ndarray
    matrices: List[RecoveredMatrix]
    atoms: np.ndarray
    coefficients: np.ndarray
    projections: np.ndarray
    block_left: Optional[np.ndarray] = None
    block_right: Optional[np.ndarray] = None


def _gram(Y: np.ndarray, chunk: int, factor: float = 1.0) -> np.ndarray:
    """``(factor Y) (factor Y)^T`` in float64, accumulated over column chunks (float32 ``Y`` is
    never copied whole). ``factor`` is a power of 2 (exact) or 1 (no multiplication)."""
    n, d = Y.shape
    G = np.zeros((n, n))
    # an overflow is reported once, as a ValueError, by the caller (_basis)
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, d, chunk):
            part = np.asarray(Y[:, lo:lo + chunk], dtype=np.float64)
            if factor != 1.0:
                part = part * factor
            G += part @ part.T
    return G


def _max_abs(Y: np.ndarray, chunk: int) -> float:
    """``max |Y|`` over column chunks: no temporary of the size of ``Y`` (a memory map of
    gigabytes). Only for error messages: ``Y`` is finite here or the answer is inf/NaN."""
    out = 0.0
    for lo in range(0, Y.shape[1], chunk):
        out = max(out, float(np.max(np.abs(Y[:, lo:lo + chunk]))))
    return out


# Largest diagonal of the Gram matrix that the eigensolver is handed unscaled: [GRAM_LOW,
# GRAM_HIGH]. Above GRAM_HIGH the sum of the eigenvalues (the trace, at most S times the largest
# diagonal) and LAPACK's intermediate sums of squares come within reach of overflow (measured:
# sketches times 1e155 gave a finite G whose eigensolve overflowed). Below GRAM_LOW the
# eigenvalues the rank floor must resolve, RANK_FLOOR^2 = 1.4e-14 of the largest, fall below
# the smallest normal float64 (2.2e-308) and lose bits as subnormals. Sketches of unit-weight
# graphs have Gram diagonals near 1, far inside, and are never rescaled (bit-identical results).
GRAM_HIGH = 1e300
GRAM_LOW = 1e-290


# Relative floor of the singular values: float32 rounding of the sketches leaves noise singular
# values near eps32 / (3.5 sqrt S) of the largest, and the float64 Gram route resolves singular
# values down to ~sqrt(eps64) = 1.5e-8 of the largest; 2^-23 is above both.
RANK_FLOOR = 2.0 ** -23


def choose_rank(singular_values: np.ndarray, floor: float = RANK_FLOOR) -> int:
    """The number ``K`` of words: the singular values above ``floor * s_1``.

    A fixed tree gives an exact rank, so the spectrum drops from the weakest word straight to
    rounding noise: on the teacher of ``bench/teacher_unmix.py`` the weakest words sit at
    5e-5-2.5e-4 of ``s_1`` and float32 noise at 3e-9-1e-8, two decades on either side of the
    floor. (The largest ratio ``s_k / s_{k+1}`` was tried first and rejected: the dominant
    first value, the mean sketch, gives ratios of 10^2-10^3 that can beat the noise gap
    once the latter is capped at the floor.) Without a fixed tree every value may be above the
    floor: then ``K = S`` and nothing is low-rank. 0 for an all-zero input.

    Raises TypeError (not an array of real numbers, ``floor`` not a real number) or ValueError
    (not 1-D, NaN/inf or negative values, values not in non-increasing order -- the floor is
    relative to the first --, ``floor`` not in [0, 1))."""
    s = _as_real_vector(singular_values, "singular_values")
    if np.any(s < 0):
        raise ValueError("singular_values must be nonnegative")
    if np.any(np.diff(s) > 0):
        raise ValueError("singular_values must be in non-increasing order (largest first)")
    f = check_real(floor, "floor")
    if not 0.0 <= f < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor!r}")
    return _choose_rank(s, f)


def _choose_rank(s: np.ndarray, floor: float = RANK_FLOOR) -> int:
    """:func:`choose_rank` without the checks (``s`` from an eigensolve of a Gram matrix)."""
    if s.size == 0 or not s[0] > 0:
        return 0
    return int(np.sum(s > floor * s[0]))


def sketch_basis(Y: np.ndarray, rank: Optional[int] = None, *, chunk: int = 1 << 16
                 ) -> Tuple[np.ndarray, np.ndarray, int]:
    """(singular values, ``(d, K)`` orthonormal basis of the row space of ``Y``, ``K``).

    Memory beyond ``Y``: ``S x S`` for the Gram matrix and ``d x K`` float64 for the basis.
    Sketches whose Gram matrix has its largest diagonal outside ``[GRAM_LOW, GRAM_HIGH]`` are
    handled scaled by a power of 2 (results scaled back; ordinary sketches are not touched).

    Raises TypeError/ValueError before any work: ``Y`` not a 2-D non-empty float32/float64
    array, ``rank`` not an integer in ``[1, S]``, ``chunk`` not a positive integer. ValueError
    after the pass over ``Y`` that forms the Gram matrix (``Y`` is not scanned separately: it
    can be a memory map of gigabytes): NaN/inf in ``Y``, sketches too large (the Gram matrix
    or its eigensolve overflows float64) or too small (the Gram matrix underflows to 0) for
    float64, all-zero sketches, ``rank`` above the numerical rank."""
    _check_sketches(Y)  # NaN/inf: from the Gram matrix (_basis), no pass over Y
    if rank is not None:
        check_int(rank, "rank", minimum=1, maximum=Y.shape[0])
    chunk = check_int(chunk, "chunk", minimum=1)
    s, V, K, _ = _basis(Y, rank, chunk)
    return s, V, K


def _basis(Y: np.ndarray, rank: Optional[int], chunk: int
           ) -> Tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """:func:`sketch_basis` and ``Y V`` (``(S, K)``), which costs no further pass over ``Y``:
    ``V = Y^T U T`` gives ``Y V = G U T`` with ``G`` the Gram matrix."""
    n, d = Y.shape
    G = _gram(Y, chunk)
    if not np.all(np.isfinite(G)):
        # NaN/inf in Y always reach the diagonal of G: Y is scanned (in chunks) only to name
        # the cause
        if not all_finite(Y):
            raise ValueError("Y contains NaN or infinity")
        # finite sketches above ~1e154 square to infinity: the eigensolver would return NaN
        # and the rank rule would call the sketches all zero
        raise ValueError(f"Y is too large to unmix: its Gram matrix Y Y^T overflows float64 "
                         f"(largest |Y| = {_max_abs(Y, chunk):.3g}); rescale the sketches")
    # Outside [GRAM_LOW, GRAM_HIGH] the sketches are handled as factor * Y, factor a power of
    # 2 (exact) bringing the largest diagonal near 1: G itself is scaled where it is too large,
    # recomputed from the scaled sketches where it is too small (its subnormal entries have
    # lost bits already). Singular values and Y V are scaled back at the end; V is the same.
    factor = 1.0
    top = float(np.max(np.diagonal(G)))
    if top > GRAM_HIGH:
        factor = 2.0 ** -math.ceil(math.log2(top) / 2)
        G = G * (factor * factor)
    elif 0.0 < top < GRAM_LOW:
        factor = 2.0 ** -math.floor(math.log2(top) / 2)
        G = _gram(Y, chunk, factor)
    with _serial_lapack(), np.errstate(over="ignore", invalid="ignore"):
        evals, evecs = np.linalg.eigh(G)
    if not (np.all(np.isfinite(evals)) and np.all(np.isfinite(evecs))):
        raise ValueError(f"Y is too large to unmix: the eigensolve of its Gram matrix Y Y^T "
                         f"overflows float64 (largest |Y| = {_max_abs(Y, chunk):.3g}); rescale "
                         "the sketches")
    order = np.argsort(evals)[::-1]
    evals, evecs = np.maximum(evals[order], 0.0), evecs[:, order]
    s = np.sqrt(evals)
    K = _choose_rank(s) if rank is None else int(rank)
    if _choose_rank(s) < 1:
        big = _max_abs(Y, chunk)
        if big > 0:  # sketches below ~1e-162 square to 0
            raise ValueError(f"Y is too small to unmix: its Gram matrix Y Y^T underflows float64 "
                             f"(largest |Y| = {big:.3g}); rescale the sketches")
        raise ValueError("the sketches are all zero: nothing to unmix")
    if K > n:
        raise ValueError(f"rank {K} exceeds the number of samples {n}")
    if rank is not None and K > _choose_rank(s):
        # directions below the rounding floor have no scale to divide by: the basis would be
        # NaN or far from orthonormal, silently
        raise ValueError(f"rank {K} exceeds the numerical rank of the sketches, "
                         f"{_choose_rank(s)} (singular values above {RANK_FLOOR:.3g} of the "
                         "largest)")
    if rank is None and K == n:
        warnings.warn(f"all {n} singular values are above the rounding floor: the sketches are "
                      "not low-rank (not a fixed tree, or no more samples than words), so "
                      "unmixing has nothing to separate", RuntimeWarning, stacklevel=3)
    U = evecs[:, :K] / s[:K]
    V = np.empty((d, K))
    for lo in range(0, d, chunk):
        part = np.asarray(Y[:, lo:lo + chunk], dtype=np.float64)
        V[lo:lo + chunk] = (part if factor == 1.0 else part * factor).T @ U
    # One Cholesky re-orthonormalisation (V <- V T, T = L^-T with V^T V = L L^T) removes the
    # loss of orthogonality of the Gram route at the price of one K x K GEMM, far cheaper than
    # a Householder QR of the tall d x K basis.
    T = np.eye(K)
    with _serial_lapack():
        L = np.linalg.cholesky(V.T @ V)
        T = np.linalg.solve(L, T).T  # L^-T
    V = V @ T
    if factor == 1.0:
        return s, V, K, G @ U @ T
    return s / factor, V, K, (G @ U @ T) / factor


# The BLAS thread count is a process-wide setting, but the thread that sets the limit must be
# the one that restores it: an OpenMP BLAS keeps the count in the calling thread's ICVs, and
# threadpoolctl >= 3.8 ignores limits set on a pthreads OpenBLAS by any thread but the one that
# controls it. A shared limit set by the first caller and restored by the last left the process
# at one BLAS thread for good when those were different threads. Each section therefore holds
# one process-wide lock from entry to exit (the sections are short eigensolves, so the
# serialisation costs little) and only the outermost section of a thread sets and restores it.
_SERIAL_LOCK = fork_safe_rlock()
_SERIAL_DEPTH = threading.local()
# The open section's limiter and its thread: a forked child whose other thread had a section
# open restores the BLAS thread count that section found (no thread of the child will leave it).
_SERIAL_OPEN: List[Any] = []


def _restore_blas_in_child() -> None:
    if _SERIAL_OPEN and _SERIAL_OPEN[0][1] != threading.get_ident():
        limiter = _SERIAL_OPEN.pop()[0]
        limiter.restore_original_limits()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restore_blas_in_child)


@contextlib.contextmanager
def _serial_lapack() -> Iterator[None]:
    """One BLAS/LAPACK thread for the many small per-block eigenproblems: on a busy machine a
    threaded BLAS spends far longer waking its threads than solving them (docs/unmix.md, round
    3); the large GEMMs stay threaded.

    Thread-safe: sections of different Python threads run one at a time (a process-wide lock is
    held for the whole section) and the thread that lowers the limit restores it, so the BLAS
    thread count is back to its value on entry when the section ends. While a section is open,
    BLAS calls of *other* threads of the process also run on one thread (the setting is
    process-wide). A ``threadpool_limits`` that another thread sets while a section is open is
    overwritten when the section restores the count it found on entry (with threadpoolctl >=
    3.8 and a pthreads OpenBLAS it is ignored instead: only the thread in control may change
    the count). The other way round, with that threadpoolctl, a ``threadpool_limits`` context
    of another thread open at entry keeps the control of OpenBLAS, and the section runs with
    that thread's count (only slower). Without ``threadpoolctl`` (it comes with scikit-learn)
    BLAS keeps its own thread count."""
    try:  # imported here so that `import recsketch` works without it (the sanitizer job's
        # environment has numpy and scipy only)
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with _SERIAL_LOCK:
        depth = getattr(_SERIAL_DEPTH, "depth", 0)
        if depth > 0:  # nested in this thread: the outer section holds the limit
            _SERIAL_DEPTH.depth = depth + 1
            try:
                yield
            finally:
                _SERIAL_DEPTH.depth = depth
            return
        # As a context manager, not a call: threadpoolctl >= 3.8 lets one thread at a time
        # control a pthreads OpenBLAS and releases that control only on ``__exit__``; a limiter
        # kept and restored by hand would keep the control, and other threads' limits would
        # then do nothing.
        _SERIAL_DEPTH.depth = 1
        try:
            with threadpool_limits(limits=1, user_api="blas") as limiter:
                _SERIAL_OPEN[:] = [(limiter, threading.get_ident())]
                try:
                    yield
                finally:
                    _SERIAL_OPEN.clear()
        finally:
            _SERIAL_DEPTH.depth = 0


def block_directions(V: np.ndarray, block_size: int, *, chunk_blocks: int = 2048
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of the basis: (top singular value ``(L,)``, top left singular vector
    ``(L, b)`` -- the signs to decode -- and top right singular vector ``(L, K)`` -- the
    direction in the span). ``L = d / b``.

    Raises TypeError/ValueError before any work: ``V`` not a 2-D non-empty real array or
    holding NaN/inf, ``block_size`` not a multiple of 3 dividing ``d``, ``chunk_blocks`` not
    a positive integer."""
    V = _real_array(V, "V", 2)
    b = _check_block_size(block_size, V.shape[0])
    return _block_directions(V, b, check_int(chunk_blocks, "chunk_blocks", minimum=1))


def _check_block_size(block_size: object, d: int, name: str = "block_size", *,
                      decoded: bool = False) -> int:
    """``block_size`` as an int: a multiple of 3, at least 3, dividing ``d``; with
    ``decoded`` (blocks handed to the Enc decoder) also at least Enc's minimum for ``d``
    (:func:`~recsketch.block_sparse.min_block_size`). The one rule, also for
    ``learn_network``, the recovered matrices' ``block_size`` and :func:`word_blocks`'
    ``3 * signature.size``."""
    b = check_int(block_size, name, minimum=3)
    if b % 3 or d % b:
        raise ValueError(f"{name} must be a multiple of 3 dividing d={d}, got {b}")
    need = min_block_size(d) if decoded else 3
    if b < need:
        raise ValueError(f"{name} must be at least 3 (ceil(log2 d) + 3) = {need} for d={d} "
                         f"(Enc needs room for the column index and the parity bits), got {b}")
    return b


def _block_directions(V: np.ndarray, block_size: int, chunk_blocks: int = 2048
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`block_directions` without the checks (``V`` from :func:`unmix`)."""
    d, K = V.shape
    b = block_size
    L = d // b
    strength, left, right = np.empty(L), np.empty((L, b)), np.empty((L, K))
    blocks = V.reshape(L, b, K)
    for lo in range(0, L, chunk_blocks):
        part = blocks[lo:lo + chunk_blocks]
        G = np.matmul(part.transpose(0, 2, 1), part)  # K x K per block: cheaper than b x K SVDs
        with _serial_lapack():
            w, vec = np.linalg.eigh(G)
        top = vec[:, :, -1]
        sv = np.sqrt(np.maximum(w[:, -1], 0.0))
        u = np.einsum("lbk,lk->lb", part, top) / np.where(sv > 0, sv, 1.0)[:, None]
        strength[lo:lo + part.shape[0]] = sv
        left[lo:lo + part.shape[0]] = u
        right[lo:lo + part.shape[0]] = top
    return strength, left, right


def _directions(mat: RecoveredMatrix, strength: np.ndarray, left: np.ndarray,
                right: np.ndarray) -> List[Tuple[np.ndarray, float]]:
    """For every recovered column: (its unit direction ``w`` in the span, the norm ``|m_k|``).

    With ``A`` the words (``d x K``, word ``k`` scaled so that its identity part is the column
    ``R e_j`` itself) and ``V = A M`` the orthonormal basis, a block owned by word ``k`` gives
    ``V_l = (A_k)_l m_k^T``: its top right singular vector is ``m_k / |m_k|`` and its top
    singular value ``|(A_k)_l| |m_k|``, where the spike part of ``(A_k)_l`` has entries
    ``+-1/sqrt(dq)``. So ``|m_k| = sigma_l (u_l . p) sqrt(dq) / b`` with ``u_l`` the top left
    singular vector and ``p`` the column's signs on the block (the projection on ``p`` leaves
    the word's own diffuse part out). Both are averaged over the column's decoded blocks, each
    block's sign fixed by ``u_l . p > 0``."""
    b = mat.block_size
    root = math.sqrt(mat.d_sketch * mat.density)
    out = []
    for blks, pats in zip(mat.blocks, mat.patterns):
        acc = np.zeros(right.shape[1])
        norms = []
        for blk, pat in zip(blks, pats):
            dot = float(np.dot(left[blk], pat))
            acc += (1.0 if dot >= 0 else -1.0) * right[blk]
            norms.append(strength[blk] * abs(dot) * root / b)
        out.append((acc / max(np.linalg.norm(acc), 1e-300), float(np.mean(norms))))
    return out


def unmix_coefficients(Y: np.ndarray, V: np.ndarray, matrices: List[RecoveredMatrix],
                       strength: np.ndarray, left: np.ndarray, right: np.ndarray, *,
                       refine: int = 20, chunk: int = 1 << 16,
                       YV: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-sample coefficients ``(S, n_atoms)`` of the recovered columns ``R e_j`` (atoms in
    the order of ``matrices`` and their ``columns``).

    ``Y = C A^T`` and ``V = A M`` give ``C = (Y V) M^T``: the coefficient of word ``k`` is
    ``(Y V) m_k``, one column at a time, whether or not the other words were recovered
    (:func:`_directions` gives ``m_k`` from the word's own blocks). ``refine > 0`` replaces it
    by that many rounds of nonnegative least squares of every sample's rows in each column's
    trusted blocks (:func:`screen_blocks`) on the recovered columns, started from the mean of
    the trusted blocks' own estimates. ``YV``: ``Y V`` when the caller has it (one pass over
    ``Y`` less). Why the refinement: the top right singular vector of a block also picks up
    the other words' diffuse parts, and a heavy word leaks through them; least squares on
    the blocks a word's spike owns removes most of it (figures per setting: ``docs/unmix.md``,
    rounds 1-3).

    Raises TypeError/ValueError before any work: ``Y``, ``V`` as for
    :func:`leak_corrected_estimates`, ``matrices`` not a list of well-formed
    :class:`RecoveredMatrix` of this ``d``, one block size and one density, ``strength``,
    ``left``, ``right`` not ``(d / b,)``, ``(d / b, b)``, ``(d / b, K)`` finite (also for
    an empty ``matrices``: then ``b`` is ``left``'s second dimension), ``YV`` not ``(S, K)``
    finite, ``refine`` < 0, ``chunk`` < 1. ValueError for NaN/inf in ``Y`` after it is read
    (the screening would drop a block read as NaN and answer from the others, silently):
    ``Y`` is not scanned whole (it can be a memory map of gigabytes); ``Y V`` (when computed
    here) and the rows the refinement reads are checked."""
    V = _check_sketches_and_basis(Y, V)
    n, d = Y.shape
    K = V.shape[1]
    b = _check_matrices(matrices, d)
    left_shape = _real_array(left, "left", 2).shape
    # with no matrices, b is the blocks' of left (the shapes must still agree)
    b = left_shape[1] if b is None else b
    if _real_array(strength, "strength", 1).shape != (d // b,):
        raise ValueError(f"strength must be (d / b,) = {(d // b,)}, got {np.shape(strength)}")
    if left_shape != (d // b, b) or d % b:
        raise ValueError(f"left must be (d / b, b) = {(d // b, b)}, got {np.shape(left)}")
    if _real_array(right, "right", 2).shape != (d // b, K):
        raise ValueError(f"right must be (d / b, K) = {(d // b, K)}, got {np.shape(right)}")
    refine = check_int(refine, "refine", minimum=0)
    chunk = check_int(chunk, "chunk", minimum=1)
    if YV is not None and _real_array(YV, "YV", 2).shape != (n, K):
        raise ValueError(f"YV must be (n_samples, K) = {(n, K)}, got {np.shape(YV)}")
    return _unmix_coefficients(Y, V, matrices, strength, left, right, refine, chunk, YV)


def _unmix_coefficients(Y: np.ndarray, V: np.ndarray, matrices: List[RecoveredMatrix],
                        strength: np.ndarray, left: np.ndarray, right: np.ndarray,
                        refine: int = 20, chunk: int = 1 << 16,
                        YV: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`unmix_coefficients` without the checks (arguments from :func:`unmix`)."""
    n = Y.shape[0]
    m = sum(mat.columns.size for mat in matrices)
    if m == 0:
        return np.zeros((n, 0))
    dirs = [wd for mat in matrices for wd in _directions(mat, strength, left, right)]
    Mt = np.stack([w * norm for w, norm in dirs], axis=1)  # (K, m): the m_k
    if YV is None:
        YV = np.zeros((n, V.shape[1]))
        for lo in range(0, V.shape[0], chunk):
            YV += np.asarray(Y[:, lo:lo + chunk], dtype=np.float64) @ V[lo:lo + chunk]
        if not np.all(np.isfinite(YV)):  # NaN/inf anywhere in Y reach Y V
            raise ValueError("Y contains NaN or infinity")
    C = YV @ Mt
    if refine > 0:
        C = _refine(Y, matrices, C, refine)
    return C


def block_estimates(Y: np.ndarray, mat: RecoveredMatrix, c: int) -> np.ndarray:
    """``(n_blocks, S)``: every sample's coefficient of column ``mat.columns[c]`` read off each
    of its decoded blocks alone, ``Y[:, rows] . p / (b / sqrt(dq))``.

    Raises TypeError/ValueError before any work: ``Y`` not a 2-D non-empty float32/float64
    array, ``mat`` not a well-formed :class:`RecoveredMatrix` of ``Y``'s ``d_sketch``, ``c``
    not an index of its columns; NaN/inf on the column's blocks (read after the checks)."""
    _check_sketches(Y)
    c = _check_column(mat, c, Y.shape[1])
    est = _reads(Y, mat, c)
    if not np.all(np.isfinite(est)):
        raise ValueError("Y contains NaN or infinity on the column's blocks")
    return est


def _check_column(mat: object, c: object, d: int) -> int:
    """``c`` as an int: the index of a column of ``mat``, a well-formed recovered matrix of
    sketches of ``d`` coordinates."""
    if not isinstance(mat, RecoveredMatrix):
        raise TypeError(f"mat must be a RecoveredMatrix, got {type(mat).__name__}")
    if mat.d_sketch != d:
        raise ValueError(f"mat has d_sketch={mat.d_sketch} but the sketches have {d}")
    _check_recovered(mat, "mat", d, sorted_columns=False)
    if mat.columns.size == 0:
        raise ValueError("mat has no recovered columns: there is no column c to estimate")
    return check_int(c, "c", minimum=0, maximum=mat.columns.size - 1)


def _check_matrices(matrices: object, d: int, block_size: Optional[int] = None,
                    sorted_columns: bool = False) -> Optional[int]:
    """The block size of ``matrices`` (``block_size`` where given; else the first matrix's,
    None for an empty list): a list of well-formed recovered matrices of sketches of ``d``
    coordinates, all of that block size and of one density (the refinement reads every
    column with the first matrix's spike height ``1 / sqrt(d q)``)."""
    if not isinstance(matrices, list) or not all(isinstance(m, RecoveredMatrix)
                                                 for m in matrices):
        raise TypeError("matrices must be a list of RecoveredMatrix")
    if not matrices:
        return block_size
    b = matrices[0].block_size if block_size is None else block_size
    for i, m in enumerate(matrices):
        if m.d_sketch != d:
            raise ValueError(f"every matrix must have d_sketch={d}, matrices[{i}] has "
                             f"{m.d_sketch}")
        _check_recovered(m, f"matrices[{i}]", d, sorted_columns)
        if m.block_size != b:
            raise ValueError(f"every matrix must have block_size={b}, matrices[{i}] has "
                             f"{m.block_size}")
    densities = sorted({float(m.density) for m in matrices})
    if len(densities) > 1:
        raise ValueError(f"every matrix must have one density, got {densities}")
    return b


# What the heavier words put on given rows of the sketches: rows -> (S, len(rows)).
Leak = Callable[[np.ndarray], np.ndarray]


def _reads(Y: np.ndarray, mat: RecoveredMatrix, c: int, leak: Optional[Leak] = None
           ) -> np.ndarray:
    """:func:`block_estimates`, of ``Y`` minus ``leak`` on the rows read when it is given."""
    b = mat.block_size
    out = np.empty((len(mat.blocks[c]), Y.shape[0]))
    for i, (blk, pat) in enumerate(zip(mat.blocks[c], mat.patterns[c])):
        rows = int(blk) * b + np.arange(b)
        part = np.asarray(Y[:, rows], dtype=np.float64)
        if leak is not None:
            part = part - leak(rows)
        out[i] = part @ pat.astype(np.float64)
    return out / (b * mat.scale)


def _word_leak(V: np.ndarray, words: np.ndarray, coefficients: np.ndarray) -> Leak:
    """The share ``coefficients @ (V[rows] @ words)^T`` of the given words on any rows of the
    sketches (``words`` ``(K, m)`` from :func:`word_vectors`, ``coefficients`` ``(S, m)``)."""
    return lambda rows: coefficients @ (V[rows] @ words).T


def screen_blocks(est: np.ndarray, agree: float = 1.5) -> np.ndarray:
    """Which blocks of one column to trust (boolean ``(n_blocks,)``), from their per-sample
    estimates ``est`` (:func:`block_estimates`).

    Why: below the top level a block's estimate is off by an almost constant multiple of a
    heavy word's coefficient wherever that word's diffuse (or product-spiky) part overlaps the
    block. Measured at d = 524,262, q = 4e-4 (``docs/unmix.md``): about 1 in 3 depth-3 blocks
    reads 0.05-0.4x or 1.9-4.6x the true median coefficient, or a negative one, with a
    sample-to-sample spread no larger than a clean block's, so nothing within one block tells
    it apart. Across blocks: those with a negative median are dropped (identity-word
    coefficients are >= 0); with three or more left, those whose median is within ``agree``
    times the median of the blocks' medians are kept; with one or two, all of them (two
    blocks that disagree cannot be told apart by their medians; ``learn_network`` picks one
    of two by how steady its read is against the module's gain, ``learn._two_block_columns``).

    Raises TypeError (not a real array, ``agree`` not a real number) or ValueError (``est``
    not 2-D with at least one block and one sample, NaN/inf, ``agree`` below 1 or not
    finite) before any work."""
    est = _real_array(est, "est", 2)
    a = check_real(agree, "agree")
    if not (math.isfinite(a) and a >= 1.0):
        raise ValueError(f"agree must be a finite ratio >= 1, got {agree!r}")
    return _screen_blocks(est, a)


def _screen_blocks(est: np.ndarray, agree: float = 1.5) -> np.ndarray:
    """:func:`screen_blocks` without the checks (``est`` from :func:`_reads`)."""
    med = np.median(est, axis=1)
    keep = med > 0
    if keep.sum() < 3:
        return keep if keep.any() else np.ones(est.shape[0], dtype=bool)
    mid = float(np.median(med[keep]))
    band = keep & (med <= agree * mid) & (med >= mid / agree)
    if band.any():
        return band
    # an even number of blocks spread wider than `agree` around their median (e.g. medians
    # 1, 10, 100, 1000): none is in the band, and an empty selection would make the column's
    # coefficients NaN (and, through the joint refinement, every column's); keep the block
    # nearest the median in ratio
    ratio = np.where(keep, np.abs(np.log(np.where(keep, med, 1.0) / mid)), np.inf)
    return ratio == ratio.min()


def _real_array(x: object, name: str, ndim: int) -> np.ndarray:
    """``x`` as a finite float64 array of ``ndim`` dimensions, non-empty; TypeError for a non-array
    or a non-real dtype (bools included), ValueError for the wrong dimensions or NaN/inf."""
    return as_finite_real_array(x, name, ndim, arrays_only=True)


def _check_sketches(Y: object) -> None:
    """TypeError unless ``Y`` is a float32/float64 ndarray, ValueError unless it is 2-D
    ``(n_samples, d_sketch)`` and non-empty. ``Y`` is not scanned for NaN here (it can be a
    memory map of gigabytes): the Gram matrix, ``Y V`` or the rows a caller reads are checked."""
    if not isinstance(Y, np.ndarray) or Y.dtype not in (np.float32, np.float64):
        raise TypeError("Y must be a float32 or float64 numpy array")
    if Y.ndim != 2 or 0 in Y.shape:
        raise ValueError(f"Y must be 2-D (n_samples, d_sketch) and non-empty, got {Y.shape}")


def _as_real_vector(x: object, name: str) -> np.ndarray:
    """``x`` (any array-like of real numbers) as a finite 1-D float64 array (may be empty)."""
    return as_finite_real_array(x, name, 1, min_shape=(0,))


def _check_sketches_and_basis(Y: object, V: object) -> np.ndarray:
    """Shapes and dtypes of the sketches ``Y`` ``(S, d)`` and the basis ``V`` ``(d, K)``;
    returns ``V`` as float64. ``Y`` is not scanned for NaN here (it can be a memory map of
    gigabytes): the rows a caller reads are checked after the read."""
    _check_sketches(Y)
    V = _real_array(V, "V", 2)
    if V.shape[0] != Y.shape[1]:
        raise ValueError(f"V has {V.shape[0]} rows but the sketches have d_sketch={Y.shape[1]}")
    return V


def word_vectors(YV: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``(K, m)``: the words whose per-sample coefficients are ``coefficients`` (``(S, m)``),
    in the coordinates of the basis ``V`` (``YV = Y V``): word ``k`` of the sketches is
    ``V n_k``.

    Why this works without the words' matrices: ``Y V = C N^T`` with ``N`` the words in the
    basis, so the dual row ``m_k`` with ``(Y V) m_k = c_k`` is the least-squares solution, exact
    when ``c_k`` is exact; distinct words are nearly orthogonal (products of independent random
    matrices: ``|<A_j, A_k>| ~ sqrt(b / d)`` of their norms), so ``N^T N`` is diagonal and
    ``n_k = m_k / |m_k|^2``. Where coefficients are linearly dependent (importance weights that
    sum to a constant make the count coefficients of siblings and their parent dependent), the
    dual of the dependent combination is what is returned; ``leak_corrected_estimates`` is
    therefore applied to attribute columns only. (For the root's constant count coefficient the
    returned word holds ``share / 16`` of each child's count word, ``share`` about
    ``|A_sibling|^2 / (|A_childA|^2 + |A_childB|^2)``, so a child's count read corrected with it
    is ``g - (g_root / 16) share``: ``tests/test_unmix_dependent_duals.py``, ``docs/unmix.md``
    round 6.)

    Raises TypeError (not numpy arrays of real numbers: float or integer dtypes) or ValueError
    (not 2-D, empty, rows differ, NaN/inf) first."""
    YV = _real_array(YV, "YV", 2)
    coefficients = _real_array(coefficients, "coefficients", 2)
    if coefficients.shape[0] != YV.shape[0]:
        raise ValueError(f"coefficients has {coefficients.shape[0]} rows (samples) but YV has "
                         f"{YV.shape[0]}")
    M = np.linalg.lstsq(YV, coefficients, rcond=None)[0]
    return M / np.maximum(np.sum(M * M, axis=0), 1e-300)


def leak_corrected_estimates(Y: np.ndarray, V: np.ndarray, mat: RecoveredMatrix, c: int,
                             words: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """:func:`block_estimates` of column ``mat.columns[c]`` minus what the given (heavier) words
    put on each block's read: ``words`` ``(K, m)`` from :func:`word_vectors`, their per-sample
    ``coefficients`` ``(S, m)``.

    Why: a block's read ``Y[:, rows] . p / (b / sqrt(dq))`` of a depth-3 column is off by an
    almost constant amount wherever a heavier word (the parent's count word, coefficient
    2^-5, or its attribute words) overlaps the block through a product of matrices; the read
    of the heavier word ``V n_k`` on the same rows is exactly that share, per unit coefficient
    (measurements, including a seed where it does harm: ``docs/unmix.md``).

    Raises TypeError/ValueError before any work: arrays of the wrong type, dimensions or
    shapes (``V`` ``(d, K)``, ``words`` ``(K, m)``, ``coefficients`` ``(S, m)``), NaN/inf, a
    matrix of another ``d_sketch``, a matrix with no columns, ``c`` out of range."""
    V = _check_sketches_and_basis(Y, V)
    c = _check_column(mat, c, Y.shape[1])
    words = _real_array(words, "words", 2)
    coefficients = _real_array(coefficients, "coefficients", 2)
    if words.shape[0] != V.shape[1]:
        raise ValueError(f"words has {words.shape[0]} rows but the basis has K={V.shape[1]}")
    if coefficients.shape != (Y.shape[0], words.shape[1]):
        raise ValueError(f"coefficients must be (n_samples, n_words) = "
                         f"{(Y.shape[0], words.shape[1])}, got {coefficients.shape}")
    est = _reads(Y, mat, c, _word_leak(V, words, coefficients))
    if not np.all(np.isfinite(est)):
        raise ValueError("Y contains NaN or infinity on the column's blocks")
    return est


def word_blocks(V: np.ndarray, word: np.ndarray, column: int, signature: np.ndarray,
                scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """(blocks, ``(n, b)`` +-1 patterns) where the word ``V word`` (a column of
    :func:`word_vectors`) shows the spike of ``column`` of the matrix with ``signature``: the
    block's signs decode to that column, carry the matrix signature in their last third, and
    the word's mean absolute entry there is at least half the spike height ``scale``.

    Why: a block that two spikes share decodes to neither in the basis (its top singular
    vector mixes them), so a column can miss a block (how often: ``docs/unmix.md``); the word
    itself holds only its own spike there.

    Raises TypeError/ValueError before any work: ``V`` not ``(d, K)`` real, ``word`` not
    ``(K,)``, NaN/inf, a ``signature`` that is not a 1-D array of +-1 whose block size
    ``3 * signature.size`` is a valid block size of ``d`` (divides it, at least Enc's
    minimum), ``column`` not an integer in ``[0, d)``, ``scale`` not a real number
    (:func:`~recsketch._checks.check_real`: a ``Fraction`` is one) positive and finite."""
    V = _real_array(V, "V", 2)
    word = _real_array(word, "word", 1)
    if word.shape[0] != V.shape[1]:
        raise ValueError(f"word has {word.shape[0]} entries but the basis has K={V.shape[1]}")
    # a column index is below d: a larger one would silently find nothing
    column = check_int(column, "column", minimum=0, maximum=V.shape[0] - 1)
    signature = _real_array(signature, "signature", 1)
    if not np.all(np.abs(signature) == 1):
        raise ValueError("signature must hold +-1 entries")
    _check_block_size(3 * signature.size, V.shape[0], "the block size 3 * signature.size",
                      decoded=True)
    scale_f = check_real(scale, "scale")
    if not (math.isfinite(scale_f) and scale_f > 0):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    return _word_blocks(V, word, column, signature, scale_f)


def _word_blocks(V: np.ndarray, word: np.ndarray, column: int, signature: np.ndarray,
                 scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`word_blocks` without the checks (for callers whose arguments come from
    :func:`unmix`; the check of ``V`` for NaN is a pass over ``d x K``)."""
    b = 3 * signature.size
    A = (V @ word).reshape(-1, b)
    S = np.where(A >= 0, 1, -1).astype(np.int8)
    dec = decode_blocks(S, V.shape[0])
    height = np.sum(A * S, axis=1) / b
    sig = np.abs(S[:, 2 * b // 3:].astype(np.int64) @ signature.astype(np.int64))
    ok = ((dec.status == 0) & (dec.column == column) & (height >= 0.5 * scale)
          & (sig == signature.size))
    idx = np.flatnonzero(ok)
    return idx, S[idx]


# Sign errors in the string part (first third) of a block that rescue_columns corrects to the
# column's most common string: one weak entry flipped by noise (measured: 1, at d = 98,280).
STRING_ERRORS = 2


def rescue_columns(V: np.ndarray, left: np.ndarray, right: np.ndarray,
                   matrices: List[RecoveredMatrix], density: float, *, min_votes: int = 2,
                   below: int = 256, complete: bool = True, add: bool = True
                   ) -> List[RecoveredMatrix]:
    """``matrices`` completed through the words of the basis: for every column (below
    ``below``) that decoded in some block of the basis, the word ``V sum_l r_l`` over the
    blocks ``l`` that decoded to it or that ``matrices`` holds for it (``r_l`` a block's top
    right singular vector, :func:`block_directions`) is rounded to signs and decoded block by
    block (:func:`_word_column`: same column, signature and coefficient sign, at least half
    the seeds' height, the string part within :data:`STRING_ERRORS` signs of the column's,
    corrected to it). A column that ``matrices`` holds gains the blocks its word shows beyond
    its own (none is removed; only if the word also shows one of its blocks); a column it
    does not hold (fewer than ``min_votes`` blocks under one key) is added where its word
    shows it in at least ``min_votes`` blocks, to the matrix of its signature (columns kept
    sorted) or as a new matrix at the end, unless its signature is a near variant of another
    (:func:`_signature_variant`). Patterns have the coefficient's sign divided out, as the
    block scan stores them. ``complete=False`` / ``add=False`` skip the first / second part:
    :func:`unmix` adds columns before the coefficients are read and ``learn_network``
    completes the modules' columns after every read, because a block the basis did not
    decode is one that other words overlap, so its read carries their leak (``docs/unmix.md``,
    round 6).

    Why: a block that one word's spike owns gives that word's direction in the span, and the
    word holds only its own spike on its other blocks, even where a heavier word's product
    term (a two-matrix word, spiky at small q) or the diffuse parts of many words also sit
    and the block's top singular vector mixes them (it then decodes to neither, to the
    other, or to the column with a sign error in the string part, which splits the block
    scan's key). This is what loses the columns of few blocks, count columns above all (a
    block carries a small share of its word, and many other words put some of theirs on
    it); their words show the lost blocks (``docs/unmix.md``, rounds 6-7). ``below`` keeps
    the rescue to attribute coordinates: most single keys the basis decodes are product
    terms (columns anywhere in ``[0, d)``), and following them costs far more than it finds
    (only garbage beyond the true columns, ``docs/unmix.md`` round 6).

    Raises TypeError/ValueError before any work: ``V`` not ``(d, K)`` real, ``left`` not
    ``(d / b, b)``, ``right`` not ``(d / b, K)``, NaN/inf, ``matrices`` not a list of
    :class:`RecoveredMatrix` of this ``d`` and block size or not well formed
    (:func:`_check_recovered`; columns sorted where ``add``), ``density`` not in (0, 1],
    ``min_votes`` < 1, ``below`` < 0 or > ``d``."""
    V = _real_array(V, "V", 2)
    left = _real_array(left, "left", 2)
    right = _real_array(right, "right", 2)
    d, K = V.shape
    b = left.shape[1]
    if b < 3 or b % 3 or d % b or left.shape[0] != d // b:
        raise ValueError(f"left must be (d / b, b) with b a multiple of 3 dividing d={d}, got "
                         f"{left.shape}")
    if right.shape != (d // b, K):
        raise ValueError(f"right must be (d / b, K) = {(d // b, K)}, got {right.shape}")
    add = check_flag(add, "add")
    _check_matrices(matrices, d, b, sorted_columns=add)  # an added column is inserted in order
    density = check_fraction(density, "density")
    votes = check_int(min_votes, "min_votes", minimum=1)
    # a column index is below d: a larger bound is a mistake, not "every column"
    below = check_int(below, "below", minimum=0, maximum=d)
    return _rescue_columns(V, left, right, matrices, density, votes, below,
                           check_flag(complete, "complete"), add)


def _check_recovered(m: RecoveredMatrix, name: str, d: int,
                     sorted_columns: bool = True) -> None:
    """TypeError/ValueError naming ``name`` unless ``m`` is a well-formed recovered matrix of
    sketches of ``d`` coordinates: ``block_size`` ``b`` an integer multiple of 3 dividing
    ``d`` (:func:`_check_block_size`), ``density`` in (0, 1], numpy arrays for the
    ``signature`` (``b / 3`` signs) and ``columns`` (distinct nonnegative integers; sorted,
    with ``sorted_columns``: where columns are inserted in order), a list of one numpy array
    of ``blocks`` (non-empty, block indices in ``[0, d / b)``) and of ``patterns`` (``(n, b)``
    +-1) per column (:class:`~recsketch.DictionaryLearner` makes them so; a hand-built one may
    not be, and the rescue indexes with all of them). ``learn_network``'s modules may hold
    unsorted columns: the per-sample learner's columns are appended to the unmixed ones."""
    b = _check_block_size(m.block_size, d, f"{name}.block_size")
    check_fraction(m.density, f"{name}.density")
    for field in ("signature", "columns"):
        if not isinstance(getattr(m, field), np.ndarray):
            raise TypeError(f"{name}.{field} must be a numpy array, got "
                            f"{type(getattr(m, field)).__name__}")
    for field in ("blocks", "patterns"):
        if not isinstance(getattr(m, field), (list, tuple)):
            raise TypeError(f"{name}.{field} must be a list of numpy arrays, got "
                            f"{type(getattr(m, field)).__name__}")
    n_blocks = d // b
    sig = m.signature
    if sig.ndim != 1 or sig.size != b // 3 or not np.all(np.abs(sig) == 1):
        raise ValueError(f"{name}.signature must hold {b // 3} signs +-1")
    cols = m.columns
    if (cols.ndim != 1 or cols.dtype.kind not in "iu" or np.unique(cols).size != cols.size
            or (cols.size and cols.min() < 0)):
        raise ValueError(f"{name}.columns must be distinct nonnegative integers")
    if sorted_columns and np.any(np.diff(cols) <= 0):
        raise ValueError(f"{name}.columns must be sorted")
    if len(m.blocks) != cols.size or len(m.patterns) != cols.size:
        raise ValueError(f"{name} must hold one entry of blocks and patterns per column "
                         f"({cols.size}), got {len(m.blocks)} and {len(m.patterns)}")
    for c, (blk, pat) in enumerate(zip(m.blocks, m.patterns)):
        for field, arr in (("blocks", blk), ("patterns", pat)):
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{name}.{field}[{c}] must be a numpy array, got "
                                f"{type(arr).__name__}")
        if (blk.ndim != 1 or blk.size == 0 or blk.dtype.kind not in "iu"
                or blk.min() < 0 or blk.max() >= n_blocks):
            raise ValueError(f"{name}.blocks[{c}] must be a non-empty list of block indices "
                             f"in [0, {n_blocks})")
        if pat.shape != (blk.size, b) or not np.all(np.abs(pat) == 1):
            raise ValueError(f"{name}.patterns[{c}] must be ({blk.size}, {b}) signs +-1, got "
                             f"shape {pat.shape}")


def _rescue_columns(V: np.ndarray, left: np.ndarray, right: np.ndarray,
                    matrices: List[RecoveredMatrix], density: float, min_votes: int,
                    below: int, complete: bool = True, add: bool = True
                    ) -> List[RecoveredMatrix]:
    """:func:`rescue_columns` without the checks (arguments from :func:`unmix`)."""
    d = V.shape[0]
    b = left.shape[1]
    third = b // 3
    S = np.where(left >= 0, 1, -1).astype(np.int8)
    dec = decode_blocks(S, d)
    decoded: dict = {}  # (signature, column) -> the basis blocks that decode to it
    for l in np.flatnonzero((dec.status == 0) & (dec.column >= 0) & (dec.column < below)):
        pat = S[l] * dec.sign[l]
        sig = (pat[2 * third:] * pat[2 * third]).astype(np.int8)
        decoded.setdefault((sig.tobytes(), int(dec.column[l])), []).append(int(l))
    out = list(matrices)
    for k, m in enumerate(matrices if complete else []):  # held partly: blocks added
        blocks, patterns = list(m.blocks), list(m.patterns)
        for c, col in enumerate(m.columns):
            if col >= below:
                continue
            have = np.asarray(blocks[c], dtype=np.int64)
            # as int64 also when no basis block decoded to the column (an empty list would
            # make the union float64, useless as indices)
            seeds = np.union1d(have, np.asarray(
                decoded.get((m.signature.tobytes(), int(col)), ()), dtype=np.int64))
            hit = _word_column(V, right, seeds, m.signature, int(col),
                               _held_string(patterns[c], third), third)
            if hit is None or not np.isin(hit[0], have).any():
                continue
            new = ~np.isin(hit[0], have)
            if new.any():
                order = np.argsort(np.concatenate([have, hit[0][new]]), kind="stable")
                blocks[c] = np.concatenate([have, hit[0][new]])[order].astype(
                    np.asarray(m.blocks[c]).dtype)
                patterns[c] = np.concatenate([patterns[c], hit[1][new]])[order].astype(
                    np.asarray(m.patterns[c]).dtype)
        out[k] = RecoveredMatrix(m.d_sketch, b, m.density, m.signature, m.columns, blocks,
                                 patterns)
    held = {(m.signature.tobytes(), int(c)) for m in matrices for c in m.columns}
    missing = {k: v for k, v in decoded.items() if k not in held} if add else {}
    for (key, col), seeds in missing.items():  # columns missing: min_votes blocks needed
        sig = np.frombuffer(key, dtype=np.int8)
        if _signature_variant(sig, col, len(seeds), matrices, missing, third):
            continue
        hit = _word_column(V, right, np.asarray(seeds), sig, col, None, third)
        if hit is None or not np.isin(hit[0], seeds).any() or hit[0].size < min_votes:
            continue
        blks, pats = hit
        k = next((i for i, m in enumerate(out) if np.array_equal(m.signature, sig)), None)
        if k is None:
            out.append(RecoveredMatrix(d, b, density, sig.copy(), np.array([col], np.int64),
                                       [blks], [pats]))
            continue
        m = out[k]
        at = int(np.searchsorted(m.columns, col))
        out[k] = RecoveredMatrix(m.d_sketch, b, m.density, m.signature,
                                 np.insert(m.columns, at, col),
                                 list(m.blocks[:at]) + [blks] + list(m.blocks[at:]),
                                 list(m.patterns[:at]) + [pats] + list(m.patterns[at:]))
    return out


def _held_string(patterns: np.ndarray, third: int) -> Optional[np.ndarray]:
    """The string part (first third, up to its flip) of a held column, entry by entry the
    majority of its blocks' (``patterns`` ``(n, b)``, each string flipped to agree with the
    first block's), so that one block with a sign error there does not carry it into the
    blocks a completion adds; None where an entry is tied (then :func:`_word_column` takes the
    most common string of the word's blocks)."""
    strings = patterns[:, :third].astype(np.int64)
    strings *= np.where(strings @ strings[0] >= 0, 1, -1)[:, None]
    total = strings.sum(axis=0)
    if np.any(total == 0):
        return None
    return np.where(total > 0, 1, -1).astype(np.int64)


def _signature_variant(sig: np.ndarray, col: int, n_seeds: int,
                       matrices: List[RecoveredMatrix], missing: dict, third: int) -> bool:
    """Whether signature ``sig`` is within :data:`STRING_ERRORS` signs (but not equal) of a
    held matrix's, or of another missing key of the same column with at least ``n_seeds``
    blocks: then its blocks are a mixture that carries sign errors into the signature part
    (two independent signatures are rarely that close, see below), not
    another matrix (``docs/unmix.md`` round 7: a count column's blocks split into two keys
    whose signatures differ in two signs).

    The price: two independent signatures (``t = b / 3`` signs, the first +1) are within 1-2
    signs with probability ``(C(t-1, 1) + C(t-1, 2)) / 2^(t-1)`` per pair: 6.0e-5 at b = 69,
    2.1e-3 at b = 51 (``tests/test_network_unmix.py`` checks the formula on random pairs).
    A false match only keeps a column of a distinct matrix from being added (a miss, never a
    wrong block): with the 7-8 held matrices of the d = 524,262 runs, about 5e-4 of such
    columns at b = 69 and 1.7e-2 at b = 51."""
    s = sig.astype(np.int64)
    others = [m.signature for m in matrices]
    others += [np.frombuffer(k, dtype=np.int8) for (k, c), v in missing.items()
               if c == col and len(v) >= n_seeds]
    for o in others:
        dist = (third - int(s @ o.astype(np.int64))) // 2
        if 0 < dist <= STRING_ERRORS:
            return True
    return False


def _word_column(V: np.ndarray, right: np.ndarray, seeds: np.ndarray, signature: np.ndarray,
                 column: int, string: Optional[np.ndarray], third: int
                 ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(blocks, patterns) where the word ``V sum_l r_l`` over the ``seeds`` blocks (directions'
    signs aligned with the first: ``V`` is orthonormal, so the words' inner products are the
    directions') shows ``column`` of the matrix with ``signature``: decoded to it, with the
    coefficient sign of the seeds, at least half the seeds' largest mean absolute entry, and
    the string part (the first third, up to its flip) within :data:`STRING_ERRORS` signs of
    ``string`` (None: the most common string among those blocks, seen at least twice),
    corrected to it. None where no block qualifies.

    A block of that height that does not decode is tried again with each of its
    :data:`REPAIR_ENTRIES` weakest entries flipped in turn (:func:`_repair_weak_entries`):
    where other words' residue cancels the word's spike on one entry, its sign is noise, and
    one wrong sign in the parity or column part loses the block (``docs/unmix.md`` round 7:
    a count column's block failed on one sign whose entry was a fiftieth of the block's mean
    absolute entry)."""
    b = 3 * third
    r = right[seeds]
    r = r * np.where(r @ r[0] >= 0, 1.0, -1.0)[:, None]
    A = (V @ r.sum(axis=0)).reshape(-1, b)
    Sw = np.where(A >= 0, 1, -1).astype(np.int8)
    dw = decode_blocks(Sw, V.shape[0])
    status, cols, signs = dw.status.copy(), dw.column.copy(), dw.sign.copy()
    height = np.mean(np.abs(A), axis=1)
    strong = height >= 0.5 * np.max(height[seeds])
    _repair_weak_entries(A, Sw, np.flatnonzero(strong & (status != 0)), column,
                         status, cols, signs)
    pats = Sw * signs[:, None]
    sign = 1 if np.sum(signs[seeds]) >= 0 else -1
    ok = ((status == 0) & (cols == column) & (signs == sign)
          & (np.abs(pats[:, 2 * third:].astype(np.int64) @ signature.astype(np.int64))
             == third)
          & strong)
    blks = np.flatnonzero(ok)
    if blks.size == 0:
        return None
    if string is None:
        strings = pats[blks, :third] * pats[blks, :1]
        uniq, n_of = np.unique(strings, axis=0, return_counts=True)
        if n_of.max() < 2:
            return None
        string = uniq[int(np.argmax(n_of))].astype(np.int64)
    dot = pats[blks, :third].astype(np.int64) @ string
    near = (third - np.abs(dot)) // 2 <= STRING_ERRORS
    blks, flip = blks[near], np.where(dot[near] >= 0, 1, -1)
    if blks.size == 0:
        return None
    fixed = pats[blks].astype(np.int8)
    fixed[:, :third] = flip[:, None] * string[None, :]
    return blks, fixed


# Weakest entries of an undecodable block that _word_column flips, one at a time.
REPAIR_ENTRIES = 3


def _repair_weak_entries(A: np.ndarray, S: np.ndarray, blocks: np.ndarray, column: int,
                         status: np.ndarray, cols: np.ndarray, signs: np.ndarray) -> None:
    """For each of ``blocks`` (rows of the word ``A`` whose signs ``S`` did not decode), the
    first of its :data:`REPAIR_ENTRIES` weakest entries whose flip makes the signs decode to
    ``column``: ``S``, ``status``, ``cols`` and ``signs`` are updated in place. The caller's
    checks (coefficient sign, matrix signature, string part) still apply to the result, so a
    flip cannot make another matrix's block pass."""
    if blocks.size == 0:
        return
    weak = np.argsort(np.abs(A[blocks]), axis=1)[:, :REPAIR_ENTRIES]
    trials = np.repeat(S[blocks], weak.shape[1], axis=0)
    trials[np.arange(trials.shape[0]), weak.ravel()] *= -1
    dt = decode_blocks(trials, A.size)
    good = ((dt.status == 0) & (dt.column == column)).reshape(blocks.size, -1)
    for i, l in enumerate(blocks):
        hit = np.flatnonzero(good[i])
        if hit.size:
            k = i * weak.shape[1] + int(hit[0])
            S[l], status[l], cols[l], signs[l] = trials[k], 0, column, dt.sign[k]


def _atoms(matrices: List[RecoveredMatrix]) -> np.ndarray:
    """``(n_atoms, 2)`` (matrix, column) in the order of ``matrices`` and their columns."""
    rows = [(k, int(c)) for k, m in enumerate(matrices) for c in m.columns]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _refine(Y: np.ndarray, matrices: List[RecoveredMatrix], C: Optional[np.ndarray],
            rounds: int, screen: bool = True, leak: Optional[Leak] = None) -> np.ndarray:
    """Nonnegative least squares of every sample's decoded rows on the recovered columns, by
    projected gradient. With ``screen`` only each column's trusted blocks (:func:`screen_blocks`)
    enter, and the start is the per-sample mean of their estimates; otherwise every decoded
    block enters and the start is ``C`` (the unmixed estimate). ``leak``: the heavier words'
    share of the rows (:func:`_word_leak`), removed from the rows before anything is read."""
    b = matrices[0].block_size
    scale = matrices[0].scale
    rows_all, col_of, vals, start = [], [], [], []
    a = 0
    for mat in matrices:
        for c, (blks, pats) in enumerate(zip(mat.blocks, mat.patterns)):
            if screen:
                est = _reads(Y, mat, c, leak)
                if not np.all(np.isfinite(est)):  # the screening would drop it silently
                    raise ValueError("Y contains NaN or infinity on the column's blocks")
                keep = _screen_blocks(est)
                blks, pats = blks[keep], pats[keep]
                start.append(np.mean(est[keep], axis=0))
            rows = (blks[:, None] * b + np.arange(b)[None, :]).ravel()
            rows_all.append(rows)
            col_of.append(np.full(rows.size, a))
            vals.append(pats.ravel().astype(np.float64) * scale)
            a += 1
    rows = np.concatenate(rows_all)
    uniq, inv = np.unique(rows, return_inverse=True)
    R = np.zeros((uniq.size, a))
    np.add.at(R, (inv, np.concatenate(col_of)), np.concatenate(vals))
    target = np.asarray(Y[:, uniq], dtype=np.float64)  # (S, rows)
    if not np.all(np.isfinite(target)):
        raise ValueError("Y contains NaN or infinity on the columns' blocks")
    if leak is not None:
        target -= leak(uniq)
    gram = R.T @ R
    with _serial_lapack():
        lip = float(np.linalg.eigvalsh(gram)[-1]) if a else 1.0
    rhs = target @ R
    X = np.maximum(np.stack(start, axis=1) if screen else C, 0.0)
    for _ in range(rounds):
        X = np.maximum(X - (X @ gram - rhs) / lip, 0.0)
    return X


def unmix(Y: np.ndarray, block_size: int, density: float, *, rank: Optional[int] = None,
          min_votes: int = 2, refine: int = 20, rescue_below: int = 256,
          num_threads: Optional[int] = None) -> UnmixResult:
    """Recover the block-sparse columns and their per-sample coefficients from sketches of a
    fixed tree by unmixing across samples (module docstring). ``Y`` is ``(S, d)`` float32 or
    float64, finite; ``rank`` overrides :func:`choose_rank`; ``min_votes`` decoded blocks make a
    column (as :class:`DictionaryLearner`); ``refine`` rounds of the nonnegative coefficient
    refinement (0: the unmixed start only); ``rescue_below``: keys of columns below this index
    that decoded in fewer than ``min_votes`` blocks are followed through their word
    (:func:`rescue_columns`; 0 turns it off, at most ``d``; ``learn_network`` passes
    ``max_attribute_dim``).

    Raises TypeError/ValueError before any work: ``Y`` not a 2-D non-empty float32/float64
    array, ``block_size``, ``density`` not a block size and density of ``d`` (as
    :class:`~recsketch.DictionaryLearner`), ``min_votes`` < 1, ``refine`` < 0,
    ``rescue_below`` not in ``[0, d]``, ``num_threads`` invalid, ``rank`` not in ``[1, S]``.
    ValueError after the pass over ``Y`` that forms the Gram matrix, as
    :func:`sketch_basis`: NaN/inf in ``Y``, sketches too large or too small for float64,
    all-zero sketches, ``rank`` above the numerical rank."""
    _check_sketches(Y)  # NaN/inf: from the Gram matrix (_basis), no pass over Y
    n, d = Y.shape
    b = check_int(block_size, "block_size", minimum=3)
    votes = check_int(min_votes, "min_votes", minimum=1)
    rounds = check_int(refine, "refine", minimum=0)
    below = check_int(rescue_below, "rescue_below", minimum=0, maximum=d)
    check_num_threads(num_threads)
    if rank is not None:
        check_int(rank, "rank", minimum=1, maximum=n)
    learner = DictionaryLearner(d, b, density, tau=0.99, min_votes=votes,
                                num_threads=num_threads)  # validates b, q against d
    s, V, K, YV = _basis(Y, rank, 1 << 16)
    strength, left, right = _block_directions(V, b)
    # Rounded to signs: the hypercube test has nothing left to reject, so Enc's padding, the
    # parity check and the votes are the filters (a false key needs two blocks to agree on
    # ~b random bits).
    row = np.where(left >= 0, 1.0, -1.0).reshape(1, d)
    learner.fit(row)
    matrices, atoms = learner.matrices_, learner.atoms_
    if below > 0:
        matrices = _rescue_columns(V, left, right, matrices, float(density), votes, below,
                                   complete=False)
        atoms = _atoms(matrices)
    C = _unmix_coefficients(Y, V, matrices, strength, left, right, rounds, YV=YV)
    return UnmixResult(s, K, V, strength, matrices, atoms, C, YV, left, right)
