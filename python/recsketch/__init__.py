"""recsketch: recursive sketches for modular deep learning (Ghazi, Panigrahy, Wang, ICML 2019).

A modular network's communication graph becomes one small vector, the sketch, built with seeded
random matrices; queries recover attributes, counts and similarities from sketches alone.
"""

from __future__ import annotations

from ._native import _core
from ._version import __version__
from .block_sparse import (
    BlockSparseParams,
    BlockStatus,
    DecodedBlocks,
    decode_blocks,
    default_block_size,
    default_density,
    enc_pattern,
    min_block_size,
    suggest_block_sparse,
)
from .info import build_info
from .matrices import RandomMatrix
from .sketcher import FAMILIES, Sketcher

__all__ = [
    "FAMILIES",
    "BlockSparseParams",
    "BlockStatus",
    "DecodedBlocks",
    "RandomMatrix",
    "Sketcher",
    "__version__",
    "build_info",
    "decode_blocks",
    "default_block_size",
    "default_density",
    "enc_pattern",
    "min_block_size",
    "suggest_block_sparse",
]
