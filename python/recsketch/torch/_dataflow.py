"""Which selected layer feeds which: from ``torch.fx`` where the model traces, else hook order."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx

__all__ = ["fx_producers", "order_producers"]


class _Tracer(torch.fx.Tracer):
    """Keeps every selected layer as one call, whatever its size."""

    def __init__(self, selected: Set[str]):
        super().__init__()
        self._selected = selected

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return qualname in self._selected or super().is_leaf_module(m, qualname)


def fx_producers(model: torch.nn.Module, layers: Sequence[str]
                 ) -> Tuple[Optional[Dict[str, List[str]]], str]:
    """``(producers, "")`` from a symbolic trace, or ``(None, reason)`` if the model does not
    trace or a selected layer is not one call in the traced graph."""
    selected = set(layers)
    try:
        graph = _Tracer(selected).trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        return None, f"torch.fx could not trace the model ({type(exc).__name__}: {exc})"
    calls: Dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in selected:
            if node.target in calls:
                return None, f"layer {node.target!r} is called more than once"
            calls[node.target] = node
    missing = [name for name in layers if name not in calls]
    if missing:
        return None, f"layer {missing[0]!r} is not a call in the traced graph"
    producers: Dict[str, List[str]] = {}
    for name, node in calls.items():
        found: List[str] = []
        seen: Set[torch.fx.Node] = set()
        stack = list(node.all_input_nodes)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n.op == "call_module" and n.target in selected:
                found.append(n.target)
            else:
                stack.extend(n.all_input_nodes)
        producers[name] = found
    return producers, ""


def order_producers(fired: Sequence[str]) -> Dict[str, List[str]]:
    """A chain in the order the hooks fired: each layer's input is the layer before it."""
    return {c: ([fired[k - 1]] if k else []) for k, c in enumerate(fired)}
