"""Which selected layer feeds which: from ``torch.fx`` where the model traces, else hook order."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx

__all__ = ["fx_producers", "order_producers"]


# Nodes that read a tensor's metadata, not its values: a layer whose output is only measured
# (x.reshape(y.shape[0], -1)) does not feed the consumer.
_METADATA_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "type", "is_contiguous"}
_METADATA_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout", "requires_grad"}


def _reads_metadata_only(node: torch.fx.Node) -> bool:
    if node.op == "call_method" and node.target in _METADATA_METHODS:
        return True
    if node.op == "call_function" and getattr(node.target, "__name__", "") == "getattr":
        return len(node.args) > 1 and node.args[1] in _METADATA_ATTRS
    return False


class _Tracer(torch.fx.Tracer):
    """Keeps every selected layer as one call, whatever its size, and traces into any module
    that holds a selected layer (fx would otherwise keep a torch.nn container such as
    TransformerEncoderLayer whole, hiding the selected layers inside it)."""

    def __init__(self, selected: Set[str]):
        super().__init__()
        self._selected = selected

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if qualname in self._selected:
            return True
        if any(s.startswith(qualname + ".") for s in self._selected) or not qualname:
            return False
        return super().is_leaf_module(m, qualname)


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
            elif not _reads_metadata_only(n):
                stack.extend(n.all_input_nodes)
        producers[name] = found
    return producers, ""


def order_producers(fired: Sequence[str]) -> Dict[str, List[str]]:
    """A chain in the order the hooks fired: each layer's input is the layer before it."""
    return {c: ([fired[k - 1]] if k else []) for k, c in enumerate(fired)}
