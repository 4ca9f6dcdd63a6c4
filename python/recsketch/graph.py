"""The communication graph of one input through a modular network (paper Section 2.1)."""

from __future__ import annotations

import graphlib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._checks import as_real_array, check_flag, check_real_dtype
from .alloc import check_alloc

__all__ = ["Graph", "Handle", "FlatGraphs"]

# Tolerances: attributes are unit-norm and weights sum to at most one "up to rounding" of the
# caller's float32 or float64 arithmetic, no further. Weights renormalised in float32 sum to
# 1 + O(1e-7) (issue 10): a total within _WEIGHT_TOL (relative) above 1 is accepted and the
# weights are divided by it, so the stored weights always sum to at most 1.
_NORM_TOL = 1e-5
_WEIGHT_TOL = 1e-6


class Handle:
    """An object of a :class:`Graph`, returned by :meth:`Graph.add`; pass it as an input."""

    __slots__ = ("_graph", "_index")

    def __init__(self, graph: "Graph", index: int):
        self._graph = graph
        self._index = index

    @property
    def index(self) -> int:
        """Position of the object in its graph (0, 1, ... in the order of ``add``)."""
        return self._index

    @property
    def module(self) -> str:
        return self._graph._modules[self._index]

    @property
    def graph(self) -> "Graph":
        return self._graph

    def __repr__(self) -> str:
        return f"<object {self._index} of module {self.module!r}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Handle) and other._graph is self._graph
                and other._index == self._index)

    def __hash__(self) -> int:
        return hash((id(self._graph), self._index))


def _describe(graph: "Graph", index: int) -> str:
    return f"object {index} (module {graph._modules[index]!r})"


def _check_weight(w: Any, what: str) -> float:
    if isinstance(w, (bool, np.bool_)) or not isinstance(w, numbers.Real):
        raise TypeError(f"{what}: weight must be a real number, got {type(w).__name__}")
    value = float(w)
    if not math.isfinite(value) or value < 0.0 or value > 1.0 + _WEIGHT_TOL:
        raise ValueError(f"{what}: weight must be finite and in [0, 1], got {value!r}")
    return value


def _plain_array(values: Any) -> Any:
    """A tensor that requires grad (or lives on a device) as something ``np.array`` reads.

    Duck-typed so that this module never imports torch: ``.detach().cpu().numpy()``."""
    detach = getattr(values, "detach", None)
    if callable(detach) and not isinstance(values, np.ndarray):
        values = detach()
        for step in ("cpu", "numpy"):
            method = getattr(values, step, None)
            if callable(method):
                values = method()
    return values


class Graph:
    """A weighted communication DAG of objects, built bottom-up.

    ``h = g.add(module, attributes, inputs=[(h1, w1), ...])`` adds an object produced by
    ``module`` with a nonnegative, unit-norm attribute vector and weighted inputs (handles
    returned by earlier ``add`` calls, so the graph is acyclic by construction; an input may
    feed several parents). The list order is the input position 1, 2, ... of the paper's tuple
    sketch. ``g.set_output([(h, w), ...])`` names the top-level objects and their weights.

    Every check runs before the graph changes, and errors name the offending object:
    attributes non-finite, negative, empty or not unit-norm (pass ``normalize=True`` to scale
    them), weights outside [0, 1] or an object's input weights summing above 1, a handle from
    another graph. Depth rules (every module at one depth, Section 2.2) are checked by
    :meth:`set_output` and again when the graph is sketched.
    """

    def __init__(self) -> None:
        self._modules: List[str] = []
        self._attributes: List[np.ndarray] = []
        self._inputs: List[List[Tuple[int, float]]] = []
        self._output: Optional[List[Tuple[int, float]]] = None

    # -- building --------------------------------------------------------------------------
    def add(self, module: str, attributes: Any,
            inputs: Sequence[Tuple[Handle, float]] = (), *, normalize: bool = False) -> Handle:
        """Add an object; returns its handle.

        Parameters
        ----------
        module : str
            Name of the module that produced the object.
        attributes : array_like, 1-D
            Nonnegative, finite, unit ℓ2 norm (to within 1e-5) unless ``normalize``; length at
            most the Sketcher's ``d_sketch`` (checked when sketched). Anything ``np.array``
            reads, and tensors (detached and copied to the CPU first, so one that requires
            grad works); the values are copied.
        inputs : sequence of (Handle, weight)
            The objects this one was built from, in position order, with importance weights in
            [0, 1] summing to at most 1. A sum at most 1e-6 (relative) above 1, the rounding of
            weights renormalised in float32, is accepted and the weights are divided by it.
        normalize : bool
            Scale the attributes to unit norm instead of requiring it.
        """
        index = len(self._modules)
        what = f"object {index} (module {module!r})"
        if not isinstance(module, str):
            raise TypeError(f"object {index}: module must be a str, got {type(module).__name__}")
        if not module:
            raise ValueError(f"object {index}: module name must not be empty")
        x = self._check_attributes(attributes, what, normalize)
        edges = self._check_inputs(inputs, what)
        self._modules.append(module)
        self._attributes.append(x)
        self._inputs.append(edges)
        return Handle(self, index)

    def set_output(self, inputs: Sequence[Tuple[Handle, float]]) -> None:
        """Set the inputs of the output pseudo-object (the top-level objects and their weights).

        Raises ValueError if the resulting graph puts an object or a module at two depths.
        """
        edges = self._check_inputs(inputs, "the output")
        if not edges:
            raise ValueError("the output needs at least one input")
        self._depths(edges)  # validates before the graph changes
        self._output = edges

    @classmethod
    def combine(cls, graphs: Sequence["Graph"], weights: Optional[Sequence[float]] = None
                ) -> "Graph":
        """Several inputs' graphs under one output: a scene of several images, a page of
        several sentences (the paper's scenes are built this way from single inputs).

        The result holds every object of every graph (graph 0's objects first, each graph's
        in ``add`` order); its output takes each graph's output inputs with their weights
        multiplied by ``weights[i]`` (default ``1 / len(graphs)``; finite, nonnegative,
        summing to at most 1 up to the tolerance of :meth:`add`). Depths are unchanged, so a
        module keeps its depth; a module at different depths in two graphs is a ValueError.
        The input graphs are not modified (attribute arrays are shared: they are read-only).
        """
        if isinstance(graphs, Graph) or not isinstance(graphs, Sequence):
            raise TypeError("combine takes a sequence of recsketch.Graph")
        graphs = list(graphs)
        if not graphs:
            raise ValueError("combine needs at least one graph")
        for i, g in enumerate(graphs):
            if not isinstance(g, Graph):
                raise TypeError(f"graph {i} is a {type(g).__name__}, not a recsketch.Graph")
            if g._output is None:
                raise ValueError(f"graph {i} has no output; call set_output first")
        if weights is None:
            scale = [1.0 / len(graphs)] * len(graphs)
        else:
            if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) and not (
                    isinstance(weights, np.ndarray) and weights.ndim == 1):
                raise TypeError("weights must be a sequence of numbers, one per graph")
            if len(weights) != len(graphs):
                raise ValueError(f"{len(weights)} weights for {len(graphs)} graphs")
            scale = [_check_weight(w, f"graph {i}") for i, w in enumerate(weights)]
            total = math.fsum(scale)
            if total > 1.0 + _WEIGHT_TOL:
                raise ValueError(f"the graph weights sum to {total!r}, more than 1")
        out = cls()
        output: List[Tuple[Handle, float]] = []
        for g, w in zip(graphs, scale):
            base = len(out._modules)
            out._modules.extend(g._modules)
            out._attributes.extend(g._attributes)
            out._inputs.extend([(base + c, v) for c, v in e] for e in g._inputs)
            output.extend((Handle(out, base + c), v * w) for c, v in g._output)
        try:
            out.set_output(output)
        except ValueError as exc:
            raise ValueError(f"cannot combine: {exc}") from None
        return out

    @staticmethod
    def _check_attributes(attributes: Any, what: str, normalize: bool) -> np.ndarray:
        check_flag(normalize, f"{what}: normalize")
        if isinstance(attributes, np.ndarray):   # (a broadcast view is copied in full)
            check_alloc(attributes.size * 8, f"{what}: a copy of {attributes.size} attributes")
        try:
            x = as_real_array(_plain_array(attributes), f"{what}: attributes")
        except RuntimeError as exc:   # raised by an array-like's own conversion
            raise TypeError(f"{what}: attributes must be an array of numbers ({exc})") from exc
        check_real_dtype(x, f"{what}: attributes")   # (an ndarray's dtype is the caller's check)
        x = np.array(x, dtype=np.float64)   # a plain copy: the graph keeps it, read-only
        if x.ndim != 1:
            raise ValueError(f"{what}: attributes must be 1-D, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"{what}: attributes must not be empty")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{what}: attributes contain NaN or infinity")
        if np.any(x < 0):
            raise ValueError(f"{what}: attributes must be nonnegative (min {x.min()!r})")
        norm = float(np.linalg.norm(x))
        if normalize:
            if norm == 0.0:
                raise ValueError(f"{what}: cannot normalize all-zero attributes")
            x = x / norm
        elif abs(norm - 1.0) > _NORM_TOL:
            raise ValueError(f"{what}: attributes must have unit l2 norm, got {norm!r} "
                             "(pass normalize=True to scale them)")
        x.setflags(write=False)
        return x

    def _check_inputs(self, inputs: Any, what: str) -> List[Tuple[int, float]]:
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(f"{what}: inputs must be a sequence of (handle, weight) pairs")
        edges: List[Tuple[int, float]] = []
        for k, item in enumerate(inputs):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(f"{what}: input {k + 1} must be a (handle, weight) pair")
            handle, w = item
            if not isinstance(handle, Handle):
                raise TypeError(f"{what}: input {k + 1} is not a Handle "
                                f"(got {type(handle).__name__})")
            if handle._graph is not self:
                raise ValueError(f"{what}: input {k + 1} is a handle from another graph")
            edges.append((handle._index, _check_weight(w, f"{what}, input {k + 1}")))
        total = math.fsum(w for _, w in edges)
        if total > 1.0 + _WEIGHT_TOL:
            raise ValueError(f"{what}: input weights sum to {total!r}, more than 1")
        if total > 1.0:  # rounding of the caller's renormalisation: renormalise again
            edges = [(k, w / total) for k, w in edges]
            if math.fsum(w for _, w in edges) > 1.0:
                edges = [(k, math.nextafter(w, 0.0)) for k, w in edges]
        return edges

    # -- structure -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Handle]:
        return (Handle(self, k) for k in range(len(self._modules)))

    def __repr__(self) -> str:
        out = "unset" if self._output is None else f"{len(self._output)} inputs"
        return f"Graph({len(self)} objects, {len(set(self._modules))} modules, output {out})"

    @property
    def modules(self) -> List[str]:
        """Module of every object, in the order of ``add``."""
        return list(self._modules)

    def attributes(self, handle: Handle) -> np.ndarray:
        """The (read-only) attribute vector of an object."""
        return self._attributes[self._own(handle)]

    def inputs(self, handle: Handle) -> List[Tuple[Handle, float]]:
        return [(Handle(self, k), w) for k, w in self._inputs[self._own(handle)]]

    @property
    def output(self) -> Optional[List[Tuple[Handle, float]]]:
        if self._output is None:
            return None
        return [(Handle(self, k), w) for k, w in self._output]

    def _own(self, handle: Handle) -> int:
        if not isinstance(handle, Handle) or handle._graph is not self:
            raise ValueError("not a handle of this graph")
        return handle._index

    def _depths(self, output: List[Tuple[int, float]]) -> Dict[int, int]:
        """Depth of every object reachable from the output (the output has depth 1).

        Raises ValueError for an object reachable at two depths or a module at two depths.
        """
        depth: Dict[int, int] = {}
        frontier = sorted({k for k, _ in output})
        level = 2
        while frontier:
            nxt = set()
            for k in frontier:
                if k in depth:
                    if depth[k] != level:
                        raise ValueError(f"{_describe(self, k)} is reachable at depths "
                                         f"{depth[k]} and {level}; every object (and every "
                                         "module) must sit at one depth")
                    continue
                depth[k] = level
                nxt.update(c for c, _ in self._inputs[k])
            frontier = sorted(nxt)
            level += 1
        module_depth: Dict[str, Tuple[int, int]] = {}
        for k in sorted(depth):
            name = self._modules[k]
            seen = module_depth.get(name)
            if seen is not None and seen[0] != depth[k]:
                raise ValueError(f"module {name!r} appears at depths {seen[0]} "
                                 f"({_describe(self, seen[1])}) and {depth[k]} "
                                 f"({_describe(self, k)}); a module must sit at one depth")
            module_depth.setdefault(name, (depth[k], k))
        return depth

    def depths(self) -> Dict[Handle, int]:
        """Depth of every object (top-level objects have depth 2, paper Section 2.2)."""
        if self._output is None:
            raise ValueError("the graph has no output; call set_output first")
        return {Handle(self, k): h for k, h in sorted(self._depths(self._output).items())}

    def _validated(self) -> Dict[int, int]:
        if self._output is None:
            raise ValueError("the graph has no output; call set_output first")
        depth = self._depths(self._output)
        if len(depth) != len(self._modules):
            k = next(k for k in range(len(self._modules)) if k not in depth)
            raise ValueError(f"{_describe(self, k)} does not feed the output")
        return depth

    # -- pickling ----------------------------------------------------------------------------
    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Default pickling, except that unpickled arrays come back writeable: make the
        attributes read-only again, as :meth:`add` leaves them."""
        self.__dict__.update(state)
        for x in self._attributes:
            x.setflags(write=False)

    # -- plain-data form (JSON) --------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """``{"objects": [{"module", "attributes", "inputs": [[index, weight], ...]}, ...],
        "output": [[index, weight], ...]}``: the graph as JSON-compatible values."""
        return {
            "objects": [{"module": m, "attributes": x.tolist(),
                         "inputs": [[k, w] for k, w in e]}
                        for m, x, e in zip(self._modules, self._attributes, self._inputs)],
            "output": None if self._output is None else [[k, w] for k, w in self._output],
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any], *, normalize: bool = False) -> "Graph":
        """Inverse of :meth:`to_dict`. Inputs may refer to any object index, earlier or later in
        the list: the objects keep the dict's numbering (``Handle.index`` and the rows of
        ``sketch(..., return_objects=True)`` follow it) and are sketched children first. A cycle
        or a reference to a missing object is a ValueError."""
        check_flag(normalize, "normalize")
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise ValueError("a graph dict needs an 'objects' list")
        objects = data["objects"]
        n = len(objects)
        children: List[List[int]] = []
        for k, obj in enumerate(objects):
            if not isinstance(obj, dict) or "module" not in obj or "attributes" not in obj:
                raise ValueError(f"object {k}: needs 'module' and 'attributes'")
            refs = obj.get("inputs", [])
            if not isinstance(refs, list):
                raise ValueError(f"object {k}: 'inputs' must be a list of [index, weight]")
            kids = []
            for r in refs:
                if not isinstance(r, (list, tuple)) or len(r) != 2:
                    raise ValueError(f"object {k}: inputs must be [index, weight] pairs")
                if isinstance(r[0], bool) or not isinstance(r[0], int) or not 0 <= r[0] < n:
                    raise ValueError(f"object {k}: input refers to a missing object {r[0]!r}")
                kids.append(r[0])
            children.append(kids)
        order = _topological_order(children)
        g = cls()
        handle: Dict[int, Handle] = {}
        for k in order:
            obj = objects[k]
            inputs = [(handle[r[0]], r[1]) for r in obj.get("inputs", [])]
            handle[k] = g.add(obj["module"], obj["attributes"], inputs, normalize=normalize)
        out = data.get("output")
        if out is not None:
            if not isinstance(out, list):
                raise ValueError("'output' must be a list of [index, weight] pairs")
            for r in out:
                if (not isinstance(r, (list, tuple)) or len(r) != 2 or isinstance(r[0], bool)
                        or not isinstance(r[0], int) or not 0 <= r[0] < n):
                    raise ValueError(f"output: bad input {r!r}")
            g.set_output([(handle[r[0]], r[1]) for r in out])
        # Restore the caller's numbering so that handles and indices agree with the dict.
        position_of = [0] * n
        for added, k in enumerate(order):
            position_of[k] = added
        g._renumber(position_of)
        return g

    def _renumber(self, position_of: List[int]) -> None:
        """Reorder objects so that the object now at ``position_of[k]`` gets index k."""
        n = len(self._modules)
        if position_of == list(range(n)):
            return
        new_index = {p: k for k, p in enumerate(position_of)}
        self._modules = [self._modules[p] for p in position_of]
        self._attributes = [self._attributes[p] for p in position_of]
        self._inputs = [[(new_index[c], w) for c, w in self._inputs[p]] for p in position_of]
        if self._output is not None:
            self._output = [(new_index[c], w) for c, w in self._output]


def _topological_order(children: List[List[int]]) -> List[int]:
    """Children before parents (the identity when the numbering already is such an order);
    ValueError naming an object on a cycle. O(objects + edges)."""
    if all(c < k for k, kids in enumerate(children) for c in kids):
        return list(range(len(children)))
    sorter = graphlib.TopologicalSorter({k: kids for k, kids in enumerate(children)})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"the graph has a cycle through object {exc.args[1][0]}") from None


@dataclass(frozen=True)
class FlatGraphs:
    """A batch of graphs as the arrays the native recursion reads (see ``sketch.hpp``)."""

    modules: List[str]            # module table; row module ids index it
    graph_ptr: np.ndarray
    module: np.ndarray
    attr_ptr: np.ndarray
    attr: np.ndarray
    input_ptr: np.ndarray
    input_row: np.ndarray
    input_weight: np.ndarray
    max_fan_in: int
    module_depth: Dict[str, int]
    module_dim: Dict[str, int]
    object_rows: np.ndarray       # row of every object of every graph, in Handle.index order


def flatten(graphs: Sequence[Graph], d: int) -> FlatGraphs:
    """Validate and flatten graphs (rows children first, in ``add`` order when that is one; each
    graph closed by its output row).

    Raises ValueError naming the graph and object on any violation; nothing is modified.
    """
    names: Dict[str, int] = {}
    module_depth: Dict[str, Tuple[int, str]] = {}
    module_dim: Dict[str, Tuple[int, str]] = {}
    graph_ptr = [0]
    module: List[int] = []
    attr_len: List[int] = []
    attrs: List[np.ndarray] = []
    fan_in: List[int] = []
    input_row: List[int] = []
    input_weight: List[float] = []
    max_fan_in = 2
    object_rows: List[int] = []
    for gi, g in enumerate(graphs):
        if not isinstance(g, Graph):
            raise TypeError(f"graph {gi} is a {type(g).__name__}, not a recsketch.Graph")
        where = f"graph {gi}: " if len(graphs) > 1 else ""
        try:
            depth = g._validated()
        except ValueError as exc:
            raise ValueError(where + str(exc)) from None
        base = graph_ptr[-1]
        # Rows go children first (the native recursion reads earlier rows only); a graph from
        # from_dict may number a parent before its children.
        order = _topological_order([[c for c, _ in e] for e in g._inputs])
        row = [0] * len(order)
        for r, k in enumerate(order):
            row[k] = base + r
        object_rows.extend(row)
        for k in order:
            name = g._modules[k]
            x = g._attributes[k]
            if x.size > d:
                raise ValueError(f"{where}{_describe(g, k)} has {x.size} attributes, more than "
                                 f"d_sketch={d}")
            loc = f"{where}{_describe(g, k)}"
            seen = module_depth.setdefault(name, (depth[k], loc))
            if seen[0] != depth[k]:
                raise ValueError(f"module {name!r} appears at depths {seen[0]} ({seen[1]}) and "
                                 f"{depth[k]} ({loc})")
            seen = module_dim.setdefault(name, (x.size, loc))
            if seen[0] != x.size:
                raise ValueError(f"module {name!r} has attributes of length {seen[0]} "
                                 f"({seen[1]}) and {x.size} ({loc})")
            module.append(names.setdefault(name, len(names)))
            attr_len.append(x.size)
            attrs.append(x)
            fan_in.append(len(g._inputs[k]))
            input_row.extend(row[c] for c, _ in g._inputs[k])
            input_weight.extend(w for _, w in g._inputs[k])
            max_fan_in = max(max_fan_in, len(g._inputs[k]))
        assert g._output is not None
        module.append(-1)
        attr_len.append(0)
        fan_in.append(len(g._output))
        input_row.extend(row[c] for c, _ in g._output)
        input_weight.extend(w for _, w in g._output)
        max_fan_in = max(max_fan_in, len(g._output))
        graph_ptr.append(base + len(g._modules) + 1)

    def ptr(lengths: List[int]) -> np.ndarray:
        out = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out[1:])
        return out

    return FlatGraphs(
        modules=list(names),
        graph_ptr=np.asarray(graph_ptr, dtype=np.int64),
        module=np.asarray(module, dtype=np.int32),
        attr_ptr=ptr(attr_len),
        attr=np.concatenate(attrs) if attrs else np.zeros(0),
        input_ptr=ptr(fan_in),
        input_row=np.asarray(input_row, dtype=np.int64),
        input_weight=np.asarray(input_weight, dtype=np.float64),
        max_fan_in=max_fan_in,
        module_depth={m: v[0] for m, v in module_depth.items()},
        module_dim={m: v[0] for m, v in module_dim.items()},
        object_rows=np.asarray(object_rows, dtype=np.int64),
    )
