"""recsketch: recursive sketches for modular deep learning (Ghazi, Panigrahy, Wang, ICML 2019).

A modular network's communication graph becomes one small vector, the sketch, built with seeded
random matrices; queries recover attributes, counts and similarities from sketches alone.
``recsketch.torch`` (extra ``recsketch[torch]``, imported only on request) captures a PyTorch
forward pass as graphs.
"""

from __future__ import annotations

from ._native import _core
from ._version import __version__
from .alloc import DEFAULT_ALLOC_LIMIT, alloc_limit, alloc_limit_set, set_alloc_limit
from .decoder import Decoder
from .block_sparse import (
    MIN_DENSITY,
    BlockSparseParams,
    BlockStatus,
    DecodedBlocks,
    decode_blocks,
    default_block_size,
    default_density,
    enc_pattern,
    min_block_size,
    paper_density,
    set_walk_cache_limit,
    suggest_block_sparse,
    walk_cache_info,
)
from .dictionary import DictionaryLearner, RecoveredMatrix
from .erasure import ErasedSketch, erase
from .graph import Graph, Handle
from .info import build_info
from .matrices import RandomMatrix
from .network import NetworkModel, NetworkTruth, RecoveredModule, TreeEdge, learn_network
from .queries import METHODS, AttributeEstimate, SubSketch
from .repository import Repository
from .similarity import Similarity, similarity
from .sketcher import FAMILIES, ModuleInfo, Sketcher

__all__ = [
    "DEFAULT_ALLOC_LIMIT",
    "FAMILIES",
    "METHODS",
    "MIN_DENSITY",
    "AttributeEstimate",
    "BlockSparseParams",
    "BlockStatus",
    "DecodedBlocks",
    "Decoder",
    "DictionaryLearner",
    "ErasedSketch",
    "Graph",
    "Handle",
    "ModuleInfo",
    "NetworkModel",
    "NetworkTruth",
    "RandomMatrix",
    "RecoveredMatrix",
    "RecoveredModule",
    "Repository",
    "Similarity",
    "Sketcher",
    "SubSketch",
    "TreeEdge",
    "__version__",
    "alloc_limit",
    "alloc_limit_set",
    "build_info",
    "decode_blocks",
    "default_block_size",
    "default_density",
    "enc_pattern",
    "erase",
    "learn_network",
    "min_block_size",
    "paper_density",
    "set_alloc_limit",
    "set_walk_cache_limit",
    "similarity",
    "suggest_block_sparse",
    "walk_cache_info",
]
