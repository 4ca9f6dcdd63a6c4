"""Run a PyTorch model on inputs and turn each input row's forward pass into a Graph."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .._checks import MAX_D_SKETCH, check_flag
from ..graph import Graph, Handle
from ._dataflow import fx_producers, order_producers
from ._encoding import LayerEncoding, fold_width
from ._layout import Layout, layout
from ._result import Capture, UnitEncoding

__all__ = ["capture"]

OBJECTS = ("modules", "units", "tokens")
EDGES = ("dataflow", "fx", "order")
WEIGHTS = ("uniform", "attribution", "attention")

# Modules whose output is (C, positions...) per row even when it has only two axes
# (Conv1d, BatchNorm1d on (N, C, L), pooling); any other 2-axis row output is read as
# (tokens, features).
_CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase,
                  nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                  nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                  nn.GroupNorm)
_UNIT_GRID = 4        # a unit's "where" map is pooled to at most 4 x 4 cells (16 along a line)


# -- inputs ------------------------------------------------------------------------------------
def _rows(inputs: Any) -> int:
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs must have a batch axis (one row per input), got a scalar")
        return int(inputs.shape[0])
    if isinstance(inputs, Mapping):
        values = list(inputs.values())
    elif isinstance(inputs, (tuple, list)):
        values = list(inputs)
    else:
        raise TypeError("inputs must be a tensor, a tuple of tensors (positional arguments) or "
                        f"a mapping of tensors (keyword arguments), got {type(inputs).__name__}")
    sizes = {int(v.shape[0]) for v in values if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) != 1:
        raise ValueError("the input tensors must share one batch size (axis 0), got "
                         f"{sorted(sizes) or 'no tensor'}")
    return sizes.pop()


def _slice(inputs: Any, lo: int, hi: int, device: torch.device) -> Any:
    def cut(v: Any) -> Any:
        return v[lo:hi].to(device) if isinstance(v, torch.Tensor) and v.dim() > 0 else v
    if isinstance(inputs, torch.Tensor):
        return cut(inputs)
    if isinstance(inputs, Mapping):
        return {k: cut(v) for k, v in inputs.items()}
    return tuple(cut(v) for v in inputs)


def _call(model: nn.Module, batch: Any, **extra: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return model(batch, **extra)
    if isinstance(batch, Mapping):
        return model(**batch, **extra)
    return model(*batch, **extra)


def _needs_grad(batch: Any) -> Any:
    """Float input tensors become leaves that require grad, so gradients exist even when
    the parameters are frozen (the parameters themselves are never touched)."""
    def leaf(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            # an inference tensor (made under torch.inference_mode()) cannot require grad;
            # a clone made outside that mode can
            v = v.detach().clone() if v.is_inference() else v.detach()
            return v.requires_grad_(True)
        return v
    if isinstance(batch, torch.Tensor):
        return leaf(batch)
    if isinstance(batch, Mapping):
        return {k: leaf(v) for k, v in batch.items()}
    return tuple(leaf(v) for v in batch)


def _first_tensor(out: Any, what: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(
        out, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise ValueError(f"{what} returned {type(out).__name__}, with no tensor to capture")


def _replace_first_tensor(out: Any, tensor: torch.Tensor) -> Any:
    """``out`` with the tensor `_first_tensor` finds replaced by ``tensor`` (same structure)."""
    if isinstance(out, torch.Tensor):
        return tensor
    if isinstance(out, Mapping):
        key = next(k for k, v in out.items() if isinstance(v, torch.Tensor))
        replaced = dict(out)
        replaced[key] = tensor
        try:
            return type(out)(replaced)
        except TypeError:
            return replaced
    index = next(i for i, v in enumerate(out) if isinstance(v, torch.Tensor))
    items = list(out)
    items[index] = tensor
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a named tuple
        return type(out)(*items)
    return type(out)(items)


# -- layers --------------------------------------------------------------------------------------
def _select(model: nn.Module, layers: Any) -> List[str]:
    named = dict(model.named_modules())
    if layers is None:
        # modules that own parameters with none below them: a Conv2d subclass holding a
        # padding child counts, a block of several convolutions does not
        names = [n for n, m in named.items()
                 if n and any(True for _ in m.parameters(recurse=False))
                 and not any(any(True for _ in c.parameters()) for c in m.children())]
        if not names:
            raise ValueError("the model has no module owning parameters; pass layers=")
        return names
    if callable(layers):
        names = [n for n, m in named.items() if n and layers(n, m)]
        if not names:
            raise ValueError("the layers= filter selected no module")
        return names
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError("layers must be None, a sequence of names from model.named_modules() "
                        "or a callable (name, module) -> bool")
    names = list(layers)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"layer names must be str, got {type(n).__name__}")
        if n not in named or not n:
            raise ValueError(f"layer {n!r} is not in model.named_modules()")
    if len(set(names)) != len(names):
        raise ValueError("layers lists a name twice")
    return names


def _channels(y: torch.Tensor, module: nn.Module, name: str
              ) -> Tuple[torch.Tensor, Tuple[int, ...], bool]:
    """A layer output ``(B, ...)`` as ``(B, C, P)``: units (channels, features) by positions
    (pixels, tokens; P = 1 for a vector). Returns it, the position shape and whether the
    positions are tokens (so that an attention mask applies)."""
    if not y.is_floating_point():
        raise ValueError(f"layer {name!r}: output has dtype {y.dtype}, not a float type")
    if y.dim() < 2:
        raise ValueError(f"layer {name!r}: output of shape {tuple(y.shape)} has no batch axis")
    if y.dim() == 2:
        return y.unsqueeze(2), (), False
    if y.dim() == 3 and not isinstance(module, _CHANNEL_FIRST):
        return y.transpose(1, 2), (int(y.shape[1]),), True
    return y.flatten(2), tuple(int(s) for s in y.shape[2:]), False


def _position_mean(view: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if mask is None:
        return view.mean(dim=2)
    m = mask.to(view.dtype).unsqueeze(1)
    return (view * m).sum(dim=2) / m.sum(dim=2).clamp_min(1.0)


def _expected_input(module: nn.Module) -> Optional[Tuple[str, Callable[[torch.Tensor], bool]]]:
    """What a layer whose input width its own parameters fix expects of its (first) input,
    and a test of a tensor against it: linear layers, convolutions, layer and batch norms.
    None for any other module (its own error, if any, stands)."""
    if isinstance(module, nn.modules.lazy.LazyModuleMixin):
        return None           # its widths are set by its first input
    if isinstance(module, nn.Linear):
        k = module.in_features
        return (f"{k} features on the last axis",
                lambda x: x.dim() >= 1 and x.shape[-1] == k)
    if isinstance(module, nn.modules.conv._ConvNd):
        k, nd = module.in_channels, len(module.kernel_size)
        return (f"{k} channels on axis -{nd + 1} of a ({nd + 1})- or ({nd + 2})-axis input",
                lambda x: x.dim() in (nd + 1, nd + 2) and x.shape[-nd - 1] == k)
    if isinstance(module, nn.LayerNorm):
        tail = tuple(module.normalized_shape)
        return (f"trailing axes {tail}",
                lambda x: x.dim() >= len(tail) and tuple(x.shape[x.dim() - len(tail):]) == tail)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        k = module.num_features
        return (f"{k} features on axis 1", lambda x: x.dim() >= 2 and x.shape[1] == k)
    return None


def _input_shapes(batch: Any) -> str:
    """The shapes of a batch's tensors, as the model receives them."""
    if isinstance(batch, torch.Tensor):
        return str(tuple(batch.shape))
    items = batch.items() if isinstance(batch, Mapping) else enumerate(batch)
    return ", ".join(f"{k}: {tuple(v.shape)}" for k, v in items if isinstance(v, torch.Tensor))


class _Hooks:
    """Forward hooks on the selected layers for one forward pass at a time, and pre-hooks that
    check the input of every layer whose width its parameters fix (:func:`_expected_input`);
    always removed (``with``), also when the forward raises.

    A layer whose input does not fit is only noted (``misfit``), not refused: a subclass with
    its own ``forward`` (a LayerNorm over channels first, a Linear that flattens first) may
    accept what the base class would not. The note is dropped when that layer's forward
    returns; one still open when the model's forward raises is where the forward failed
    (:meth:`misfit_error`)."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self._model = model
        self._names = list(names)
        self._handles: List[Any] = []
        self.outputs: Dict[str, torch.Tensor] = {}
        self.fired: List[str] = []
        self.batch: Any = None
        # (module, name, what it expects, the shape it got) for each layer entered with an input
        # that does not fit and not yet returned from, innermost last
        self.misfits: List[Tuple[nn.Module, str, str, Tuple[int, ...]]] = []

    def __enter__(self) -> "_Hooks":
        modules = dict(self._model.named_modules())
        try:
            # the checks first: forward hooks run in the order registered, so a layer's note
            # is dropped before a selected layer's own hook can raise
            for name, module in modules.items():
                expected = _expected_input(module)
                if expected is not None:
                    self._handles.append(module.register_forward_pre_hook(
                        self._check(name or type(module).__name__, *expected)))
                    self._handles.append(module.register_forward_hook(self._returned))
            for name in self._names:
                self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self, batch: Any = None) -> None:
        self.outputs = {}
        self.fired = []
        self.batch = batch
        self.misfits = []

    def _check(self, name: str, what: str,
               fits: Callable[[torch.Tensor], bool]) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: Any) -> None:
            x = args[0] if args else None
            # (a torch.fx trace passes proxies, not tensors: nothing to check)
            if isinstance(x, torch.Tensor) and not fits(x):
                self.misfits.append((module, name, what, tuple(x.shape)))
        return pre_hook

    def _returned(self, module: nn.Module, args: Any, output: Any) -> None:
        for i in range(len(self.misfits) - 1, -1, -1):
            if self.misfits[i][0] is module:
                del self.misfits[i]
                break

    def misfit_error(self, exc: BaseException) -> Optional[ValueError]:
        """After the model's forward raised ``exc``: a ValueError naming the innermost layer
        that was entered with an input of the wrong width and did not return, if any."""
        if not self.misfits:
            return None
        module, name, what, shape = self.misfits[-1]
        # Blame it only if the error came out of that layer's forward: a model may catch a
        # layer's error (a fallback) and fail later elsewhere, with the note still standing.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_locals.get("self") is not module:
            tb = tb.tb_next
        if tb is None:
            return None
        return ValueError(
            f"recsketch.torch.capture: layer {name!r} ({type(module).__name__}) expects "
            f"{what}, got an input of shape {shape}; the model was called on a batch of "
            f"shape {_input_shapes(self.batch)}: do the inputs have the width (features, "
            f"channels) the model was built for? (the forward pass failed in that layer with "
            f"{type(exc).__name__})")

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name in self.outputs:
                raise ValueError(f"layer {name!r} ran more than once in one forward pass; "
                                 "capture a layer that runs once (e.g. its parent)")
            y = _first_tensor(output, f"layer {name!r}")
            self.fired.append(name)
            if not y.requires_grad:
                # a copy: a later in-place op (ReLU(inplace=True), `out += x`) would otherwise
                # change what was captured
                self.outputs[name] = y.detach().clone()
                return None
            # Gradients are needed with respect to y itself, so keep y and hand the rest of the
            # forward pass a clone: later in-place ops change the clone, never y.
            self.outputs[name] = y
            return _replace_first_tensor(output, y.clone())
        return hook


# -- weights -------------------------------------------------------------------------------------
def _shares(values: np.ndarray) -> np.ndarray:
    """Nonnegative scores -> weights summing to 1 (uniform when all are zero)."""
    total = values.sum()
    if not total > 0:
        return np.full(values.shape, 1.0 / values.size)
    return values / total


def _target_score(out: Any, target: Optional[Callable[[Any], torch.Tensor]]) -> torch.Tensor:
    if target is not None:
        score = target(out)
    else:
        logits = _first_tensor(out, "the model")
        if logits.dim() != 2:
            raise ValueError("weights='attribution' needs the model to return logits (B, K) "
                             f"(got shape {tuple(logits.shape)}); pass target=")
        score = logits.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
    if not isinstance(score, torch.Tensor) or score.dim() != 1:
        raise ValueError("target must return one score per row, shape (B,)")
    return score


class _Views:
    """The layer outputs as the hooks saw them (gradients are taken with respect to these)
    and as ``(B, C, P)`` views (:func:`_channels`)."""

    def __init__(self, raw: Dict[str, torch.Tensor], modules: Dict[str, nn.Module]):
        self.raw = raw
        self._modules = modules
        self.view: Dict[str, torch.Tensor] = {}
        self.grid: Dict[str, Tuple[int, ...]] = {}
        self.tokens: Dict[str, bool] = {}
        for name, y in raw.items():
            self.view[name], self.grid[name], self.tokens[name] = _channels(
                y, modules[name], name)

    def grads(self, score: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """d(sum of score)/d(output) of each layer, as ``(B, C, P)`` views."""
        for n in names:
            if not self.raw[n].requires_grad:
                raise ValueError(f"layer {n!r}: its output has no gradient (frozen parameters "
                                 "and an integer input?); use weights='uniform'")
        got = torch.autograd.grad(score.sum(), [self.raw[n] for n in names],
                                  retain_graph=True, allow_unused=True)
        return {n: (torch.zeros_like(self.view[n]) if g is None
                    else _channels(g, self._modules[n], n)[0]) for n, g in zip(names, got)}


# -- the capture ---------------------------------------------------------------------------------
def capture(model: nn.Module, inputs: Any, layers: Any = None, *, objects: str = "modules",
            edges: str = "dataflow", weights: str = "uniform", top_k: int = 8,
            batch_size: int = 64, d_sketch: Optional[int] = None, signed: bool = True,
            seed: int = 0, target: Optional[Callable[[Any], torch.Tensor]] = None,
            tokenizer: Any = None, token_modules: bool = True) -> Capture:
    """Capture a forward pass of ``model`` on ``inputs`` as one :class:`recsketch.Graph` per
    input row.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its mode is restored afterwards), on its own device, under
        ``torch.no_grad()`` unless gradients are needed (``weights="attribution"``,
        ``objects="units"``). Its parameters are never modified, nor their ``requires_grad``.
    inputs : Tensor, tuple of Tensors or mapping of Tensors
        Axis 0 is the batch (one graph per row); a tuple is passed positionally, a mapping
        by keyword (e.g. a tokenizer's output). An ``attention_mask`` in a mapping excludes
        padding from token means.
    layers : None, sequence of str or callable
        Names from ``model.named_modules()`` (exactly; they become the module names), a
        filter ``(name, module) -> bool``, or None for every module that owns parameters
        with no parameters below it (convolutions, linear layers, norms).
        Ignored by ``objects="tokens"``.
    objects : "modules", "units" or "tokens"
        ``"modules"``: one object per selected layer, module = the layer's name; attribute =
        its output reduced to a vector (a convolution's ``(C, H, W)`` by spatial mean to
        ``(C,)``, a sequence ``(T, D)`` by token mean to ``(D,)``, a vector as is), split into
        ``[relu(v), relu(-v)]`` (unless ``signed=False``), folded by a seeded count sketch if
        longer than ``d_sketch`` (see ``recsketch.torch._encoding``), unit-normalised.
        ``"units"``: the ``top_k`` most active units (channels, features) of each layer, by
        ``|mean activation|`` or, with ``weights="attribution"``, by gradient x input toward
        the predicted output (positive part; by activation in a row where no unit of the
        layer has a positive one, e.g. the logit layer itself when the predicted logit is
        negative: there, only the predicted unit has one); module ``f"{layer}[{unit}]"``; attribute ``[where, what]``:
        the unit's ``|activation|`` map pooled to at most 4 x 4 cells, and the layer's
        channel vector at the unit's peak (encoded as above), each half of the norm; inputs:
        up to ``top_k`` captured units of the layer below with a positive gradient x input
        contribution to the unit's mean activation.
        ``"tokens"``: transformers returning ``hidden_states`` and ``attentions`` (Hugging
        Face style; eager attention): one object per (layer, token), module
        ``f"{layer}:{token}"`` (or the layer alone with ``token_modules=False``), attribute
        the token's hidden state (encoded as above); inputs the ``top_k`` keys of the
        head-averaged attention row; the output takes the last layer's tokens, mean pooling.
    edges : "dataflow", "fx" or "order"
        Which selected layer feeds which: ``"dataflow"`` uses a ``torch.fx`` trace of the
        model and falls back to the order in which the hooks fire (a chain) when the model
        does not trace (``Capture.note`` says why); ``"fx"`` requires the trace.
    weights : "uniform", "attribution" or "attention"
        Input weights: equal; gradient x input share of each input toward the predicted
        output (positive part, renormalised; uniform when all are zero; ``target(output)``
        chooses another score per row); attention (``"tokens"`` only).
    top_k, batch_size, d_sketch, signed, seed
        Units/keys kept per object; rows per forward pass; the attribute length limit (the
        Sketcher's ``d_sketch``; longer attributes are folded); split signed outputs; the
        seed of the fold.

    Skip connections: a layer's depth is ``1 +`` its longest path to the output; an edge
    that skips levels is dropped and the consumer's weights renormalised (see
    ``recsketch.torch._layout``; ``Capture.layout.dropped`` lists them). An all-zero output
    produces no object (its consumers' weights renormalise); objects that no longer feed
    the output are left out.

    Errors (ValueError/TypeError) name the layer; hooks are removed in every case.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if objects not in OBJECTS:
        raise ValueError(f"objects must be one of {OBJECTS}, got {objects!r}")
    if edges not in EDGES:
        raise ValueError(f"edges must be one of {EDGES}, got {edges!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "attention" and objects != "tokens":
        raise ValueError("weights='attention' needs objects='tokens'")
    for name, v in (("top_k", top_k), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if d_sketch is not None and (isinstance(d_sketch, bool) or not isinstance(d_sketch, int)
                                 or not 2 <= d_sketch <= MAX_D_SKETCH):
        raise ValueError(f"d_sketch must be an int in [2, {MAX_D_SKETCH}] or None, got "
                         f"{d_sketch!r}")
    check_flag(signed, "signed")
    check_flag(token_modules, "token_modules")
    if target is not None and not callable(target):
        raise TypeError(f"target must be None or a callable (output -> score), got "
                        f"{type(target).__name__}")
    n = _rows(inputs)
    if n == 0:
        raise ValueError("inputs has no rows (axis 0): nothing to capture")
    need_grad = objects == "units" or (weights == "attribution" and objects != "tokens")
    if need_grad and torch.is_inference_mode_enabled():
        raise ValueError(f"objects={objects!r} with weights={weights!r} needs gradients, which "
                         "torch.inference_mode() turns off; call capture outside it (it runs "
                         "the model under torch.no_grad() itself where no gradient is needed)")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    # every module's own mode: a model may mix them (a frozen BatchNorm kept in eval while
    # the rest trains), and model.train(mode) would overwrite them all
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        if objects == "tokens":
            return _capture_tokens(model, inputs, n, device, weights, top_k, batch_size,
                                   d_sketch, signed, seed, tokenizer, token_modules)
        return _capture_layers(model, inputs, n, device, _select(model, layers),
                               layers is None, objects, edges, weights, top_k, batch_size,
                               d_sketch, signed, seed, target)
    finally:
        for module, mode in modes:
            module.training = mode


def _capture_layers(model: nn.Module, inputs: Any, n: int, device: torch.device,
                    names: List[str], default: bool, objects: str, edges: str, weights: str,
                    top_k: int, batch_size: int, d_sketch: Optional[int], signed: bool,
                    seed: int, target: Any) -> Capture:
    modules = dict(model.named_modules())
    producers: Optional[Dict[str, List[str]]] = None
    note = ""
    need_grad = weights == "attribution" or objects == "units"
    graphs: List[Graph] = []
    lay: Optional[Layout] = None
    encodings: Dict[str, Any] = {}
    with _Hooks(model, names) as hooks:
        for lo in range(0, n, batch_size):
            batch = _slice(inputs, lo, min(n, lo + batch_size), device)
            mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
            hooks.reset(batch)
            with torch.set_grad_enabled(need_grad):
                try:
                    out = _call(model, _needs_grad(batch) if need_grad else batch)
                except Exception as exc:
                    misfit = hooks.misfit_error(exc)
                    if misfit is not None:
                        raise misfit from exc
                    # the model's own error keeps its type; say where it happened
                    if hasattr(exc, "add_note"):
                        last = repr(hooks.fired[-1]) if hooks.fired else "none"
                        exc.add_note(f"recsketch.torch.capture: the forward pass of batch "
                                     f"{lo // batch_size} failed; last selected layer that "
                                     f"ran: {last}")
                    raise
                if lay is None:
                    fired = list(hooks.fired)
                    if not fired:
                        raise ValueError("no selected layer ran in the forward pass")
                    ran = set(fired)
                    idle = [nm for nm in names if nm not in ran]
                    if idle and not default:
                        raise ValueError(f"layer {idle[0]!r} did not run in the forward pass "
                                         f"({len(idle)} selected layers did not): a module "
                                         "whose parameters the model uses without calling it, "
                                         "or a branch not taken; leave it out of layers=")
                    # The default selection can hold such modules (MultiheadAttention's
                    # out_proj): they make no object and must not stop the trace's edges.
                    if edges in ("dataflow", "fx"):
                        producers, note = fx_producers(model, fired)
                        if producers is None and edges == "fx":
                            raise ValueError(f"edges='fx': {note}")
                    if idle:
                        shown = ", ".join(repr(nm) for nm in idle[:5])
                        more = f" and {len(idle) - 5} more" if len(idle) > 5 else ""
                        note = "; ".join(filter(None, [
                            note, f"{len(idle)} default layers never ran as modules and make "
                                  f"no object: {shown}{more}"]))
                    # hooks fire after a layer's inputs exist: the firing order is topological
                    lay = layout(fired, order_producers(fired) if producers is None
                                 else producers)
                elif list(hooks.fired) != list(lay.layers):
                    raise ValueError("the selected layers ran in another order or set in "
                                     f"batch {lo // batch_size} than in the first batch")
                views = _Views({nm: hooks.outputs[nm] for nm in lay.layers}, modules)
                score_grads = (views.grads(_target_score(out, target), lay.layers)
                               if weights == "attribution" else None)
                if objects == "modules":
                    graphs.extend(_modules_graphs(lay, views, mask, score_grads, encodings,
                                                  d_sketch, signed, seed))
                else:
                    graphs.extend(_units_graphs(lay, views, mask, score_grads, encodings,
                                                top_k, d_sketch, signed, seed))
    assert lay is not None
    return Capture(graphs, objects, lay, encodings, "order" if producers is None else "fx",
                   note)


def _encoding(encodings: Dict[str, Any], name: str, width: int, d_sketch: Optional[int],
              signed: bool, seed: int) -> LayerEncoding:
    enc = encodings.get(name)
    if enc is None:
        enc = LayerEncoding(name, width, signed, fold_width(width, signed, d_sketch), seed)
        encodings[name] = enc
    elif enc.width != width:
        raise ValueError(f"layer {name!r}: output width changed from {enc.width} to {width}")
    return enc


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _modules_graphs(lay: Layout, views: _Views, mask: Optional[torch.Tensor],
                    score_grads: Optional[Dict[str, torch.Tensor]], encodings: Dict[str, Any],
                    d_sketch: Optional[int], signed: bool, seed: int) -> List[Graph]:
    attrs: Dict[str, np.ndarray] = {}
    share: Dict[str, np.ndarray] = {}
    for name in lay.layers:
        v = views.view[name]
        m = mask if views.tokens[name] and mask is not None and mask.shape == v.shape[::2] else None
        mean = _np(_position_mean(v, m))
        enc = _encoding(encodings, name, mean.shape[1], d_sketch, signed, seed)
        try:
            attrs[name] = enc.encode(mean)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if score_grads is not None:
            share[name] = np.maximum(_np((score_grads[name] * v).sum(dim=(1, 2))), 0.0)
    rows = attrs[lay.layers[0]].shape[0]
    present = {name: np.any(attrs[name] != 0, axis=1) for name in lay.layers}
    by_depth = sorted(lay.layers, key=lambda nm: -lay.depth[nm])
    graphs = []
    for b in range(rows):
        reached = {nm for nm in lay.sinks if present[nm][b]}
        for nm in reversed(by_depth):           # top-down: who still feeds the output
            if nm in reached:
                reached.update(p for p in lay.producers[nm] if present[p][b])
        if not reached:
            raise ValueError(f"input row {len(graphs)}: every output layer "
                             f"({', '.join(map(repr, lay.sinks))}) is all zero")
        g = Graph()
        handle: Dict[str, Handle] = {}
        for nm in by_depth:                     # bottom-up
            if nm not in reached:
                continue
            ins = [p for p in lay.producers[nm] if p in reached]
            handle[nm] = g.add(nm, attrs[nm][b], _weighted(handle, ins, share, b))
        g.set_output(_weighted(handle, [nm for nm in lay.sinks if nm in reached], share, b))
        graphs.append(g)
    return graphs


def _weighted(handle: Dict[str, Handle], names: List[str], share: Dict[str, np.ndarray],
              b: int) -> List[Tuple[Handle, float]]:
    if not names:
        return []
    if share:
        w = _shares(np.array([share[p][b] for p in names]))
    else:
        w = np.full(len(names), 1.0 / len(names))
    return [(handle[p], float(x)) for p, x in zip(names, w)]


def _pool_where(v: torch.Tensor, grid: Tuple[int, ...]) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """``|activation|`` maps ``(B, C, P)`` pooled to a small grid ``(B, C, cells)``."""
    a = v.detach().abs()
    if len(grid) == 2:
        cells = (min(_UNIT_GRID, grid[0]), min(_UNIT_GRID, grid[1]))
        pooled = torch.nn.functional.adaptive_avg_pool2d(
            a.reshape(a.shape[0] * a.shape[1], 1, *grid), cells)
    else:
        cells = (min(_UNIT_GRID * _UNIT_GRID, a.shape[2]),)
        pooled = torch.nn.functional.adaptive_avg_pool1d(
            a.reshape(a.shape[0] * a.shape[1], 1, a.shape[2]), cells[0])
    return pooled.reshape(a.shape[0], a.shape[1], -1), cells


def _units_graphs(lay: Layout, views: _Views, mask: Optional[torch.Tensor],
                  score_grads: Optional[Dict[str, torch.Tensor]], encodings: Dict[str, Any],
                  top_k: int, d_sketch: Optional[int], signed: bool, seed: int) -> List[Graph]:
    grid, tokens = views.grid, views.tokens
    rows = next(iter(views.view.values())).shape[0]
    chosen: Dict[str, np.ndarray] = {}       # (B, k) unit indices, -1 where fewer fire
    sign: Dict[str, torch.Tensor] = {}
    means: Dict[str, torch.Tensor] = {}
    unit_score: Dict[str, np.ndarray] = {}
    attrs: Dict[str, np.ndarray] = {}        # (B, k, dim)
    for name in lay.layers:
        v = views.view[name]
        m = mask if tokens[name] and mask is not None and mask.shape == v.shape[::2] else None
        mean = _position_mean(v, m)
        means[name] = mean
        sign[name] = torch.sign(mean.detach())
        score = np.abs(_np(mean))
        if score_grads is not None:
            attributed = np.maximum(_np((score_grads[name] * v).sum(dim=2)), 0.0)
            # a row where no unit has a positive attribution (the predicted logit itself
            # negative, e.g. log-probabilities) ranks that layer's units by activation instead
            some = attributed.max(axis=1) > 0
            score[some] = attributed[some]
        k = min(top_k, score.shape[1])
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(score, order, axis=1)
        order[top <= 0] = -1
        chosen[name], unit_score[name] = order, top
        if grid[name]:
            where, cells = _pool_where(v, grid[name])
            where = _np(where)
        else:
            where, cells = None, ()
        ue = encodings.get(name)
        if ue is None:
            # the "where" part takes its share of d_sketch before the channel vector
            budget = None if d_sketch is None else d_sketch - int(np.prod(cells) if cells else 0)
            if budget is not None and budget < 2:
                raise ValueError(f"layer {name!r}: d_sketch={d_sketch} leaves no room for "
                                 "the channel vector of a unit")
            ue = UnitEncoding(LayerEncoding(name, v.shape[1], signed,
                                            fold_width(v.shape[1], signed, budget), seed), cells)
            encodings[name] = ue
        elif ue.channels.width != v.shape[1] or ue.grid != cells:
            raise ValueError(f"layer {name!r}: output shape changed between batches")
        channels = ue.channels
        vals = _np(v)
        a = np.zeros((rows, k, ue.dim))
        for b in range(rows):
            units = order[b][order[b] >= 0]
            if units.size == 0:
                continue
            peak = np.abs(vals[b, units, :]).argmax(axis=1)          # (u,)
            what = channels.encode(vals[b, :, peak].reshape(units.size, -1))
            if where is not None:
                wm = where[b, units, :]
                wn = np.linalg.norm(wm, axis=1, keepdims=True)
                wm = np.divide(wm, wn, out=np.zeros_like(wm), where=wn > 0)
                a[b, :units.size] = np.concatenate([wm, what], axis=1) * math.sqrt(0.5)
            else:
                a[b, :units.size] = what
        attrs[name] = a
    # Inputs of each unit: gradient x input of the unit's mean activation w.r.t. the layers
    # below (one backward per rank, batched over rows; rows are independent in eval mode).
    contrib: Dict[Tuple[str, str], np.ndarray] = {}   # (consumer, producer) -> (B, k, C_p)
    for c in lay.layers:
        ps = list(lay.producers[c])
        if not ps:
            continue
        out = {p: np.zeros((rows, chosen[c].shape[1], views.view[p].shape[1])) for p in ps}
        for r in range(chosen[c].shape[1]):
            units = chosen[c][:, r]
            live = units >= 0
            if not live.any():
                continue
            idx = torch.as_tensor(np.where(live, units, 0), device=means[c].device)
            picked = means[c].gather(1, idx[:, None])[:, 0] * sign[c].gather(1, idx[:, None])[:, 0]
            picked = picked * torch.as_tensor(live, dtype=picked.dtype, device=picked.device)
            g = views.grads(picked, ps)
            for p in ps:
                out[p][:, r, :] = np.maximum(_np((g[p] * views.view[p]).sum(dim=2)), 0.0)
        for p in ps:
            contrib[(c, p)] = out[p]
    graphs = []
    by_depth = sorted(lay.layers, key=lambda nm: -lay.depth[nm])
    for b in range(rows):
        # top-down: choose each reached unit's inputs among the producers' chosen units
        inputs: Dict[Tuple[str, int], List[Tuple[Tuple[str, int], float]]] = {}
        reached = {(nm, r) for nm in lay.sinks for r in range(chosen[nm].shape[1])
                   if chosen[nm][b, r] >= 0}
        for c in reversed(by_depth):
            for r in range(chosen[c].shape[1]):
                if (c, r) not in reached:
                    continue
                cand = [(contrib[(c, p)][b, r, chosen[p][b, q]], (p, q))
                        for p in lay.producers[c] for q in range(chosen[p].shape[1])
                        if chosen[p][b, q] >= 0]
                cand = sorted((x for x in cand if x[0] > 0), key=lambda x: -x[0])[:top_k]
                inputs[(c, r)] = [(key, float(x)) for x, key in cand]
                reached.update(key for _, key in cand)
        if not reached:
            raise ValueError(f"input row {len(graphs)}: no unit of the output layers fired")
        g = Graph()
        handle: Dict[Tuple[str, int], Handle] = {}
        for nm in by_depth:
            for r in range(chosen[nm].shape[1]):
                if (nm, r) not in reached:
                    continue
                ins = inputs.get((nm, r), [])
                if not ins:
                    w = np.zeros(0)
                elif score_grads is not None:
                    w = _shares(np.array([x for _, x in ins]))
                else:
                    w = np.full(len(ins), 1.0 / len(ins))
                handle[(nm, r)] = g.add(f"{nm}[{chosen[nm][b, r]}]", attrs[nm][b, r],
                                        [(handle[key], float(x)) for (key, _), x in zip(ins, w)])
        top = [(nm, r) for nm in lay.sinks for r in range(chosen[nm].shape[1])
               if (nm, r) in reached]
        if score_grads is not None:
            w = _shares(np.array([unit_score[nm][b, r] for nm, r in top]))
        else:
            w = np.full(len(top), 1.0 / len(top))
        g.set_output([(handle[key], float(x)) for key, x in zip(top, w)])
        graphs.append(g)
    return graphs


# -- tokens ----------------------------------------------------------------------------------------
def _field(out: Any, key: str) -> Any:
    value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
    if value is None:
        raise ValueError(f"objects='tokens' needs the model to return {key!r} when called with "
                         "output_attentions=True, output_hidden_states=True (a Hugging Face "
                         "model loaded with attn_implementation='eager')")
    return value


_EMBEDDING_NAMES = ("embeddings", "embed", "embedding", "embed_tokens")


def _layer_names(model: nn.Module, count: int) -> Tuple[str, List[str]]:
    """Names of the embedding and of the ``count`` transformer layers, from named_modules."""
    named = dict(model.named_modules())
    lists = [(n, m) for n, m in named.items() if isinstance(m, nn.ModuleList) and len(m) == count]
    lists.sort(key=lambda nm: (not nm[0].endswith(("layer", "layers")), nm[0].count(".")))
    base = lists[0][0] if lists else "layer"
    # The embedding module, also inside a wrapper (SentenceTransformer's "0.auto_model.
    # embeddings"): the shallowest module so named, preferring one beside the layer list.
    parent = base.rpartition(".")[0]
    embeds = [n for n in named if n.rpartition(".")[2] in _EMBEDDING_NAMES]
    embeds.sort(key=lambda n: (not n.startswith(parent), n.count("."), n))
    embed = embeds[0] if embeds else "embeddings"
    return embed, [f"{base}.{i}" for i in range(count)]


def _capture_tokens(model: nn.Module, inputs: Any, n: int, device: torch.device, weights: str,
                    top_k: int, batch_size: int, d_sketch: Optional[int], signed: bool,
                    seed: int, tokenizer: Any, token_modules: bool) -> Capture:
    if weights == "attribution":
        raise ValueError("objects='tokens' takes weights='attention' or 'uniform'")
    if not isinstance(inputs, Mapping) or "input_ids" not in inputs:
        raise TypeError("objects='tokens' needs inputs as a mapping with 'input_ids' (a "
                        "tokenizer's output)")
    graphs: List[Graph] = []
    encodings: Dict[str, Any] = {}
    names: Optional[List[str]] = None
    for lo in range(0, n, batch_size):
        batch = _slice(inputs, lo, min(n, lo + batch_size), device)
        with torch.no_grad():
            out = _call(model, batch, output_attentions=True, output_hidden_states=True)
        hidden = _field(out, "hidden_states")
        attn = _field(out, "attentions")
        if len(hidden) != len(attn) + 1:
            raise ValueError(f"expected one more hidden state than attention maps, got "
                             f"{len(hidden)} and {len(attn)}")
        if names is None:
            embed, blocks = _layer_names(model, len(attn))
            names = [embed] + blocks
        ids = batch["input_ids"].to("cpu").numpy()
        mask = batch.get("attention_mask")
        valid = (np.ones(ids.shape, dtype=bool) if mask is None
                 else mask.to("cpu").numpy().astype(bool))
        att = [_np(a.detach().mean(dim=1)) for a in attn]      # head average, then copy
        enc_rows = []
        for level, name in enumerate(names):
            h = _np(hidden[level])                              # (B, T, D)
            enc = _encoding(encodings, name, h.shape[2], d_sketch, signed, seed)
            enc_rows.append(enc.encode(h.reshape(-1, h.shape[2])).reshape(h.shape[0], h.shape[1], -1))
        for b in range(ids.shape[0]):
            graphs.append(_token_graph(names, ids[b], valid[b], enc_rows, att, b, weights,
                                       top_k, tokenizer, token_modules))
    assert names is not None
    depth = {name: len(names) + 1 - k for k, name in enumerate(names)}
    lay = Layout(layers=tuple(names), depth=depth,
                 producers={nm: ((names[k - 1],) if k else ()) for k, nm in enumerate(names)},
                 consumers={nm: ((names[k + 1],) if k + 1 < len(names) else ())
                            for k, nm in enumerate(names)},
                 sinks=(names[-1],), dropped=())
    return Capture(graphs, "tokens", lay, encodings, "attention")


def _token_graph(names: List[str], ids: np.ndarray, valid: np.ndarray,
                 enc_rows: List[np.ndarray], att: List[np.ndarray], b: int, weights: str,
                 top_k: int, tokenizer: Any, token_modules: bool) -> Graph:
    pos = np.flatnonzero(valid)
    if tokenizer is not None:
        text = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    else:
        text = [str(int(i)) for i in ids]
    top = len(names) - 1
    present = [np.any(enc_rows[lv][b] != 0, axis=1) & valid for lv in range(len(names))]
    inputs: Dict[Tuple[int, int], List[Tuple[int, float]]] = {}
    reached = {(top, int(t)) for t in pos if present[top][t]}
    for lv in range(top, 0, -1):
        for t in sorted(t for (l2, t) in reached if l2 == lv):
            row = att[lv - 1][b, t] * valid * present[lv - 1]
            keys = np.argsort(-row, kind="stable")[:top_k]
            keys = keys[row[keys] > 0]
            w = row[keys] if weights == "attention" else np.ones(keys.size)
            if keys.size:
                w = _shares(w)
            inputs[(lv, t)] = [(int(k), float(x)) for k, x in zip(keys, w)]
            reached.update((lv - 1, int(k)) for k in keys)
    if not any(l2 == top for l2, _ in reached):
        raise ValueError(f"input row {b}: the last layer has no nonzero token")
    g = Graph()
    handle: Dict[Tuple[int, int], Handle] = {}
    for lv in range(len(names)):
        for t in sorted(t for (l2, t) in reached if l2 == lv):
            module = f"{names[lv]}:{text[t]}" if token_modules else names[lv]
            handle[(lv, t)] = g.add(module, enc_rows[lv][b, t],
                                    [(handle[(lv - 1, k)], x) for k, x in inputs.get((lv, t), [])])
    last = [handle[(top, int(t))] for t in pos if (top, int(t)) in handle]
    g.set_output([(h, 1.0 / len(last)) for h in last])
    return g
