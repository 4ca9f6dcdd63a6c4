"""Capture a PyTorch forward pass as recsketch communication graphs (issue 10).

``from recsketch.torch import capture`` needs PyTorch (``pip install "recsketch[torch]"``);
``import recsketch`` never imports this package. See :func:`capture` and docs/torch.md.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (the real torch: imports are absolute)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("recsketch.torch needs PyTorch: pip install 'recsketch[torch]' "
                      f"(import failed: {exc})") from exc

from ._capture import capture
from ._encoding import LayerEncoding
from ._layout import Layout, layout
from ._result import Capture, UnitAttributes, UnitEncoding

__all__ = ["Capture", "LayerEncoding", "Layout", "UnitAttributes", "UnitEncoding", "capture",
           "layout"]
