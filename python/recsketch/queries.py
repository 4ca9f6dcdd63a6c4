"""What queries return: the estimators' names and the result types of :class:`Decoder`
(``decoder.py``), which answers the queries of :class:`recsketch.Sketcher`."""

from __future__ import annotations

from typing import NamedTuple, Tuple, Union

import numpy as np

__all__ = ["SubSketch", "AttributeEstimate", "METHODS"]

METHODS = ("matched", "paper", "joint")


class AttributeEstimate(NamedTuple):
    """Attributes recovered without knowing the weight: unit-normalised (negatives clipped to
    zero, the attributes being nonnegative) and the effective weight estimated from the e_1
    channel, which carries the same gain."""

    attributes: np.ndarray
    weight: Union[float, np.ndarray]


class SubSketch:
    """An estimate of the tuple sketch of an object inside a larger sketch (paper Section 1,
    "recursive sketch"; MATH.md §3.3), returned by :meth:`Sketcher.subsketch`.

    It is a functional approximation: its noise is large in l2 but incoherent with later
    read-outs, so every query of the Sketcher works on it, with paths relative to the object.
    ``values`` is the vector ``(d,)`` (or batch ``(n, d)``).
    """

    __slots__ = ("values", "depth", "module", "path", "method")

    def __init__(self, values: np.ndarray, depth: int, module: str, path: Tuple[int, ...],
                 method: str):
        self.values = values
        self.depth = depth
        self.module = module
        self.path = path
        self.method = method

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.values.shape

    def __repr__(self) -> str:
        return (f"SubSketch(module={self.module!r}, depth={self.depth}, path={list(self.path)}, "
                f"shape={self.shape}, method={self.method!r})")
