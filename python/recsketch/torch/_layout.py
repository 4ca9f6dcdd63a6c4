"""Depths for a network with skip connections (pure Python, no torch).

The paper puts every module at one depth, and every input of an object one level below it.
A skip connection (ResNet, transformer) breaks this: a layer feeds a consumer several levels
up. The rule used by :func:`recsketch.torch.capture`:

* a layer's depth is ``1 +`` its longest path to the output pseudo-object (which has depth
  1); the layers that feed no other selected layer are the *sinks* and sit at depth 2;
* an edge from a producer at depth ``h + 1`` to a consumer at depth ``h`` is kept; an edge
  that skips levels (producer deeper than ``h + 1``) is dropped, and the consumer's remaining
  input weights are renormalised.

Longest paths guarantee that every layer keeps at least one *output* edge to the level above
(the edge that attains its longest path), so no layer is cut off from the output by the
rule; each dropped edge's information still reaches the output through the longer path. A
consumer whose inputs all skip levels loses all of them and becomes a leaf (e.g. p -> x -> y
-> o beside p -> c -> o: c sits at depth 2, p at depth 5, and the edge p -> c is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

__all__ = ["Layout", "layout"]


@dataclass(frozen=True)
class Layout:
    layers: Tuple[str, ...]                       # selected layers that fired, in firing order
    depth: Dict[str, int]                         # 2 for sinks, larger below
    producers: Dict[str, Tuple[str, ...]]         # kept input edges, in firing order
    consumers: Dict[str, Tuple[str, ...]]         # kept output edges
    sinks: Tuple[str, ...]                        # layers feeding the output
    dropped: Tuple[Tuple[str, str], ...]          # (producer, consumer) edges that skip levels


def layout(layers: Sequence[str], producers: Dict[str, Sequence[str]]) -> Layout:
    """Apply the rule of the module docstring to a layer DAG.

    ``layers`` in a topological order (producers first, e.g. the order layers fire);
    ``producers[c]`` the selected layers feeding ``c``. Raises ValueError on a cycle or an
    edge from a layer that comes later in ``layers``.
    """
    order = {name: k for k, name in enumerate(layers)}
    consumers: Dict[str, List[str]] = {name: [] for name in layers}
    for c in layers:
        for p in producers.get(c, ()):
            if p not in order:
                raise ValueError(f"layer {c!r} has an input from {p!r}, which is not captured")
            if order[p] >= order[c]:
                raise ValueError(f"layer {c!r} has an input from {p!r}, which runs after it "
                                 "(a cycle, or a layer called twice)")
            consumers[p].append(c)
    depth: Dict[str, int] = {}
    for name in reversed(layers):
        depth[name] = 1 + max((depth[c] for c in consumers[name]), default=1)
    kept: Dict[str, List[str]] = {name: [] for name in layers}
    kept_out: Dict[str, List[str]] = {name: [] for name in layers}
    dropped: List[Tuple[str, str]] = []
    for c in layers:
        for p in sorted(set(producers.get(c, ())), key=order.__getitem__):
            if depth[p] == depth[c] + 1:
                kept[c].append(p)
                kept_out[p].append(c)
            else:
                dropped.append((p, c))
    return Layout(
        layers=tuple(layers),
        depth=depth,
        producers={k: tuple(v) for k, v in kept.items()},
        consumers={k: tuple(v) for k, v in kept_out.items()},
        sinks=tuple(name for name in layers if not consumers[name]),
        dropped=tuple(dropped),
    )
