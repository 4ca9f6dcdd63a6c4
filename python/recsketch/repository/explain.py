"""Which modules (or objects) make two stored sketches similar (Theorems 1 and 2)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..erasure import ErasedSketch
from ..sketcher import Sketcher

__all__ = ["explain_pair"]


def _gain_squared(depth: int) -> float:
    """``G^2`` with ``G = 2^-(4h-3)``: the squared gain of a depth-``h`` object's identity word."""
    return 2.0 ** (-2 * (4 * depth - 3))


def explain_pair(sketcher: Sketcher, pair: Sequence[Union[np.ndarray, ErasedSketch]],
                 paths: Optional[Dict[str, Sequence[Sequence[int]]]], method: str
                 ) -> List[Tuple[Any, float, float]]:
    """``[(who, contribution, share)]`` for two sketches; see :meth:`Repository.explain`.
    The caller serialises access to ``sketcher``."""
    modules = sketcher.modules
    out: List[Tuple[Any, float]] = []
    if paths is None:
        for name, info in sorted(modules.items()):
            x = [sketcher.summed_attributes(s, name, 1.0, method) for s in pair]
            m = [sketcher.mass(s, name, method) for s in pair]
            out.append((name, float(_gain_squared(info.depth) * (x[0] @ x[1] + m[0] * m[1]))))
    else:
        if not isinstance(paths, dict):
            raise TypeError("paths must be a dict: module -> list of paths")
        for name, plist in paths.items():
            if name not in modules:
                raise ValueError(f"module {name!r} is not registered with this Sketcher")
            g2 = _gain_squared(modules[name].depth)
            for path in plist:
                est = [sketcher.attributes(s, name, path=list(path), method=method)
                       for s in pair]
                w = [max(e.weight, 0.0) for e in est]
                score = g2 * w[0] * w[1] * (est[0].attributes @ est[1].attributes + 1.0)
                out.append(((name, tuple(path)), float(score)))
    total = sum(max(c, 0.0) for _, c in out)
    ranked = sorted(out, key=lambda t: -t[1])
    return [(n, c, (max(c, 0.0) / total) if total > 0 else 0.0) for n, c in ranked]
