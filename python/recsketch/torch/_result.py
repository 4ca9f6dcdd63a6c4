"""What :func:`recsketch.torch.capture` returns: the graphs, their layout and the way back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union, overload

import numpy as np

from ..graph import Graph
from ._encoding import LayerEncoding
from ._layout import Layout

__all__ = ["Capture", "UnitAttributes", "UnitEncoding"]


class UnitAttributes(NamedTuple):
    """A decoded ``"units"`` attribute: where the unit fired and the layer's vector there."""

    where: Optional[np.ndarray]   # the unit's |activation| map pooled to a small grid (None for
                                  # a layer without positions), up to scale
    what: np.ndarray              # the layer's reduced activations at the unit's peak, up to scale


@dataclass(frozen=True)
class UnitEncoding:
    """``"units"`` attribute: ``[where / sqrt 2, what / sqrt 2]``, each part unit-norm (only
    ``what`` for a layer whose output has no positions)."""

    channels: LayerEncoding      # encodes the layer's channel vector at the unit's peak
    grid: Tuple[int, ...]        # shape of the pooled |activation| map, () without positions

    @property
    def where_dim(self) -> int:
        return int(np.prod(self.grid)) if self.grid else 0

    @property
    def dim(self) -> int:
        return self.where_dim + self.channels.dim

    def decode(self, attributes: Any) -> UnitAttributes:
        x = np.asarray(attributes, dtype=np.float64)
        if x.ndim != 1 or x.size != self.dim:
            raise ValueError(f"layer {self.channels.layer!r}: unit attributes have length "
                             f"{self.dim}, got shape {x.shape}")
        k = self.where_dim
        where = x[:k].reshape(self.grid) if k else None
        return UnitAttributes(where, self.channels.decode(x[k:]))


_UNIT = re.compile(r"^(.*)\[(\d+)\]$")


class Capture(Sequence[Graph]):
    """The graphs of a captured forward pass, one per input row (a sequence of
    :class:`recsketch.Graph`; pass it to ``Sketcher.sketch_many``), with the layout used and
    the encodings needed to read recovered attributes back (:meth:`decode`).

    Attributes: ``objects`` (the mode), ``layout`` (depths, kept and dropped edges),
    ``encodings`` (layer -> encoding), ``edge_source`` (``"fx"``, ``"order"`` or
    ``"attention"``) and ``note`` (why the hook order was used, if it was, and which default
    layers never ran as modules).
    """

    def __init__(self, graphs: List[Graph], objects: str, layout: Layout,
                 encodings: Dict[str, Union[LayerEncoding, UnitEncoding]], edge_source: str,
                 note: str = ""):
        self.graphs = graphs
        self.objects = objects
        self.layout = layout
        self.encodings = encodings
        self.edge_source = edge_source
        self.note = note

    def __len__(self) -> int:
        return len(self.graphs)

    @overload
    def __getitem__(self, i: int) -> Graph: ...

    @overload
    def __getitem__(self, i: slice) -> List[Graph]: ...

    def __getitem__(self, i: Any) -> Any:
        return self.graphs[i]

    def __iter__(self) -> Iterator[Graph]:
        return iter(self.graphs)

    def __repr__(self) -> str:
        return (f"Capture({len(self.graphs)} graphs, objects={self.objects!r}, "
                f"{len(self.layout.layers)} layers, edges from {self.edge_source})")

    def layer_of(self, module: str) -> str:
        """The layer (``named_modules()`` path) behind a module name of this capture."""
        if module in self.encodings:
            return module
        m = _UNIT.match(module)
        if self.objects == "units" and m and m.group(1) in self.encodings:
            return m.group(1)
        if self.objects == "tokens":
            head = module.split(":", 1)[0]
            if head in self.encodings:
                return head
        raise KeyError(f"module {module!r} is not a module of this capture")

    def decode(self, module: str, estimate: Any) -> Union[np.ndarray, UnitAttributes]:
        """A recovered attribute vector of ``module`` back in the layer's activation space
        (reduced as captured: channel means, token means). Undoes the signed split and the
        seeded fold; the scale is lost to the unit normalisation (the result is the
        activations up to a positive factor). ``"units"`` modules give :class:`UnitAttributes`.
        Accepts an ``AttributeEstimate`` (its ``attributes``) or an array."""
        values = getattr(estimate, "attributes", estimate)
        return self.encodings[self.layer_of(module)].decode(values)
