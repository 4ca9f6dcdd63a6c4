"""Helpers for the paper's block-sparse family D(b, q, d): valid sizes, Enc and its decoder."""

from __future__ import annotations

import enum
import math
from typing import Dict, NamedTuple, Optional, Union

import numpy as np

from ._checks import MAX_D_SKETCH, check_int, check_real
from ._native import _core
from .alloc import check_alloc

__all__ = [
    "MIN_DENSITY",
    "BlockSparseParams",
    "BlockStatus",
    "DecodedBlocks",
    "decode_blocks",
    "default_block_size",
    "default_density",
    "enc_pattern",
    "min_block_size",
    "paper_density",
    "set_walk_cache_limit",
    "suggest_block_sparse",
    "walk_cache_info",
]


# Smallest density q of D(b, q, d): 2**-32. The gaps between nonzero blocks are drawn from
# 32-bit words, so a block's probability of being nonzero is a multiple of 2**-32; a smaller q
# cannot be represented (see cpp/include/recsketch/block_sparse_params.hpp).
MIN_DENSITY: float = float(_core.MIN_DENSITY)


# Named densities accepted wherever ``density`` is (besides a float and None, the default).
DENSITY_NAMES = ("paper",)


def check_density(density: object) -> float:
    """``density`` as a float in ``[MIN_DENSITY, 1]``; TypeError if it is not a real number,
    ValueError (naming the bound) if out of range."""
    q = check_real(density, "density")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {q!r}")
    if q < MIN_DENSITY:
        raise ValueError(f"density {q!r} is below MIN_DENSITY = 2**-32, the smallest block "
                         "probability the 32-bit gap table represents")
    return q


def resolve_density(density: object, d_sketch: int, block_size: int) -> float:
    """The block probability ``q`` that ``density`` names for ``d_sketch`` and ``block_size``:
    None is :func:`default_density`, ``"paper"`` is :func:`paper_density`, a real number is
    checked by :func:`check_density`. A string naming no density is a ValueError, anything
    else that is not a real number a TypeError."""
    if density is None:
        return default_density(d_sketch, block_size)
    if isinstance(density, str):
        if density == "paper":
            return paper_density(d_sketch)
        raise ValueError(f"density must be a float in (0, 1], None or one of {DENSITY_NAMES}, "
                         f"got {density!r}")
    return check_density(density)


class BlockSparseParams(NamedTuple):
    d_sketch: int
    block_size: int
    density: float


def min_block_size(d_sketch: int) -> int:
    """Smallest block size Enc allows for ``d_sketch``: ``3 * (ceil(log2 d) + 3)``."""
    return int(_core.min_block_size(check_int(d_sketch, "d_sketch", minimum=1, maximum=MAX_D_SKETCH)))


def paper_density(d_sketch: int) -> float:
    """The paper's block probability ``q = min(1, log2(d) / sqrt(d))`` (Theorem 4 asks for
    ``q >= polylog(d) / sqrt(d)``; ``Sketcher(d, density="paper")``)."""
    return float(_core.paper_density(check_int(d_sketch, "d_sketch", minimum=1, maximum=MAX_D_SKETCH)))


# Default density rule: the probability that a column has no nonzero block, (1 - q)^(d/b), is
# at most EMPTY_COLUMN_PROBABILITY (a column with no block records nothing: an attribute entry
# it carries is lost). That is about ln(1e8) = 18.4 nonzero blocks per column; above it the
# errors of depth-1 and depth-2 queries no longer fall with q while the cost grows with it
# (depth-3 read-outs gain 20-30% from the paper's larger q at d >= 16k: docs/density.md).
EMPTY_COLUMN_PROBABILITY = 1e-8


def default_density(d_sketch: int, block_size: Optional[int] = None) -> float:
    """The default block probability ``q`` of D(b, q, d) (``Sketcher(d)``, ``density=None``):
    the smallest ``q`` with ``(1 - q)^(d / b) <= 1e-8``, i.e. ``q = 1 - 1e-8^(b / d)``, about
    18.4 nonzero blocks per column (chosen by measurement: ``docs/density.md``).

    ``block_size`` defaults to :func:`default_block_size` (or, if ``d_sketch`` has none, the
    smallest block size Enc allows). The paper's value is :func:`paper_density`
    (``density="paper"``).
    """
    d = check_int(d_sketch, "d_sketch", minimum=1, maximum=MAX_D_SKETCH)
    if block_size is None:
        block_size = default_block_size(d) or min(d, min_block_size(d))
    b = check_int(block_size, "block_size", minimum=1, maximum=MAX_D_SKETCH)
    return min(1.0, -math.expm1(math.log(EMPTY_COLUMN_PROBABILITY) * b / d))


def default_block_size(d_sketch: int) -> Optional[int]:
    """The smallest valid block size that divides ``d_sketch``, or None if there is none up to
    twice the minimum (then pick another ``d_sketch`` with :func:`suggest_block_sparse`)."""
    d = check_int(d_sketch, "d_sketch", minimum=1, maximum=MAX_D_SKETCH)
    b_min = min_block_size(d)
    for b in range(b_min, min(d, 2 * b_min) + 1, 3):
        if d % b == 0:
            return b
    return None


def _valid(d: int, b: int) -> bool:
    return d >= b and d % b == 0 and b % 3 == 0 and b >= min_block_size(d)


def suggest_block_sparse(d_sketch: int, density: Union[float, str, None] = None
                         ) -> BlockSparseParams:
    """Valid ``(d_sketch, block_size, density)`` with ``d_sketch`` as close as possible to the
    requested one and the smallest block size Enc allows; ``density`` (None, ``"paper"`` or a
    float, as for :class:`Sketcher`) defaults to :func:`default_density` of the chosen
    ``d_sketch``.

    >>> suggest_block_sparse(16384)
    BlockSparseParams(d_sketch=16371, block_size=51, density=0.05576...)
    """
    target = check_int(d_sketch, "d_sketch", minimum=24, maximum=MAX_D_SKETCH)
    best = None
    for b in (min_block_size(target), min_block_size(target) + 3):
        for k in (target // b, -(-target // b)):
            d = k * b
            if d >= 1 and _valid(d, b):
                cand = (abs(d - target), b, -d)
                if best is None or cand < best[0]:
                    best = (cand, d, b)
    if best is None:  # pragma: no cover - the +3 candidate always covers power-of-two crossings
        raise ValueError(f"no valid block-sparse size found near {target}")
    _, d, b = best
    q = resolve_density(density, d, b)
    _core.BlockSparseFamily(d, b, q)
    return BlockSparseParams(d, b, q)


def enc_pattern(column: int, b_m: int, b_s: int, d_sketch: int, block_size: int) -> np.ndarray:
    """Algorithm 1, ``Enc(j, b_m, b_s)`` as a +-1 int8 vector of length ``block_size // 3``.

    ``column`` is 0-based (the paper's ``j - 1``). Layout: +1, the ``ceil(log2 d)`` bits of the
    column most significant first (0 -> -1), ``b_m``, ``b_s``, then +1 padding.
    """
    return _core.enc_pattern(check_int(column, "column"), check_int(b_m, "b_m"),
                             check_int(b_s, "b_s"), check_int(d_sketch, "d_sketch"),
                             check_int(block_size, "block_size"))


class BlockStatus(enum.IntEnum):
    """Outcome of decoding one rounded block."""

    OK = 0
    NOT_A_SIGN_PATTERN = 1
    BAD_PADDING = 2
    INDEX_OUT_OF_RANGE = 3
    PARITY_MISMATCH = 4


class DecodedBlocks(NamedTuple):
    status: np.ndarray  # int8, a BlockStatus per block
    column: np.ndarray  # int64, decoded 0-based column (-1 if not decodable)
    b_m: np.ndarray     # int8, parity bit f'_m
    b_s: np.ndarray     # int8, parity bit f'_s
    sign: np.ndarray    # int8, sign of the coefficient that produced the block (0 unless OK)


def decode_blocks(blocks: np.ndarray, d_sketch: int) -> DecodedBlocks:
    """Invert Enc on rounded blocks (Section 4.2): ``blocks`` is ``(n, block_size)`` or
    ``(block_size,)`` of +-1 (any integer or float dtype holding exactly +-1).

    For a block ``g * [f_s s_j ; f_c Enc(j, f'_m, f'_s) ; f_m s_m]`` this returns ``j``, the
    parity bits and ``g``; a block whose two parity bits disagree on ``g`` is PARITY_MISMATCH.
    """
    arr = np.asarray(blocks)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"blocks must be (n, block_size) or (block_size,), got shape {arr.shape}")
    # the +-1 check's three bool arrays, an int8 copy, and the decoding (12 bytes a block)
    check_alloc(4 * arr.size + 12 * arr.shape[0],
                f"decode_blocks: checking and decoding {arr.shape[0]} blocks of {arr.shape[1]}")
    if not np.all((arr == 1) | (arr == -1)):
        raise ValueError("blocks must contain only +1 and -1 (round them with numpy.sign first)")
    out = _core.decode_blocks(np.ascontiguousarray(arr, dtype=np.int8),
                              check_int(d_sketch, "d_sketch"))
    return DecodedBlocks(*out)


def walk_cache_info() -> Dict[str, int]:
    """State of the block-walk cache: ``bytes``, ``limit``, ``matrices``, ``hits``, ``misses``.

    Full-width products with a block-sparse matrix (``R @ x``, ``R.half``, ``R.T @ y``, and
    the sketch recursion) keep each matrix's block walk, its nonzero blocks and their flips
    (2 bytes per nonzero block, 4 above 8192 block-rows, plus 8 per column: about 0.7 MB at
    d = 16k with the default density, under 1% of the same matrix in CSR), so repeated products skip the hashing. Only inputs with at least a quarter
    of their columns nonzero fill it (a product walks only the columns where its input is
    nonzero). Least recently used matrices go first; results are bit-identical with and
    without the cache.
    """
    return dict(_core.walk_cache_info())


def set_walk_cache_limit(nbytes: int) -> None:
    """Bound the block-walk cache's resident bytes (default 64 MiB; 0 turns it off).

    Evicts least recently used matrices at once if the cache holds more than ``nbytes``.
    """
    _core.set_walk_cache_limit(check_int(nbytes, "nbytes", minimum=0, maximum=2**63 - 1))
