"""Learned modules: growing a modular network from an emerging cluster of sketches (paper §1.1,
"Learning New Modules").

"We feed it inputs and examine the resulting sketches for emerging clusters. When we find such a
cluster, we use its points to train a corresponding (reversible) module." A
:class:`LearnedModule` is such a module. It reads the overall sketch ``s`` of an input (before
any learned object is added) and

- **fires** when the linear score ``<s, coef>`` is at least ``threshold``. ``coef`` is the
  cluster's *novel* direction: the mean of the cluster's sketches after projecting out the span
  of the past's sketches (their top ``rank`` right singular vectors), scaled so that the
  cluster's centre scores 1. What the past already contained (the old modules' objects, at any
  attribute) scores about 0; a sketch carrying the new content scores the fraction of it that
  it shares with the cluster's centre.
- gives the object an **attribute**: where ``s`` lies in the cluster, ``z = V (s - mu)`` on the
  cluster's top ``components`` principal directions ``V`` around its centre ``mu``, written as
  the nonnegative unit vector ``[1, z+ / tau, z- / tau]`` (normalised; ``tau`` is the cluster's
  RMS spread along ``V``, so a typical member has ``|z| / tau`` about 1).
- is **reversible**: :meth:`LearnedModule.to_sketch_space` maps an attribute back to
  ``mu + V^T z`` in sketch space; the attribute ``e_1`` (``z = 0``) maps to the centre itself.

:func:`sketch_grown` sketches graphs with learned modules: a graph on whose sketch a module fires
gains a top-level object (depth 2, no inputs) of that module with its attribute and weight, and
is sketched again, so the module's counts and attributes are answered by the ordinary queries.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import as_real_array, check_real_dtype
from .graph import Graph
from .sketcher import Sketcher

__all__ = ["LearnedModule", "Grown", "sketch_grown", "with_top_level_objects"]

LEARNED_DEPTH = 2  # a learned object is a top-level object: an input of the output
MIN_NOVELTY = 0.001  # LearnedModule.fit's default floor on the novelty share (docs/learned_modules.md)


def _matrix(x: Any, name: str, width: Optional[int] = None) -> np.ndarray:
    a = as_real_array(x, name)
    check_real_dtype(a, name)
    a = np.array(a, dtype=np.float64)      # a copy of its own
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (sketches as rows), got shape {a.shape}")
    if width is not None and a.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _batch(x: Any, name: str, width: int) -> Tuple[np.ndarray, bool]:
    a = as_real_array(x, name)
    check_real_dtype(a, name)
    single = a.ndim == 1
    return _matrix(a[None, :] if single else a, name, width), single


def _real(x: Any, name: str, lo: float, hi: float, *, lo_open: bool = True) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    ok = (lo < v if lo_open else lo <= v) and v <= hi
    if not (math.isfinite(v) and ok):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {x!r}")
    return v


def _count(x: Any, name: str, lo: int) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if int(x) < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x!r}")
    return int(x)


@dataclass(frozen=True, eq=False)
class LearnedModule:
    """A module learned from a cluster of sketches: a detector, an attribute map and its
    inverse (see the module docstring). Build with :meth:`fit`; all arrays are float64 and
    read-only. ``dim`` is the sketch length it reads (the Sketcher's ``d_sketch``)."""

    name: str
    coef: np.ndarray        # (dim,): score(s) = <s, coef>; the cluster's centre scores 1
    threshold: float        # fires when score >= threshold
    centre: np.ndarray      # (dim,): the mean of the cluster's sketches (zero past prefix)
    components: np.ndarray  # (r, dim): orthonormal principal directions of the cluster
    spread: float           # tau: RMS of |V (s - mu)| over the cluster
    weight: float           # the weight of its object as an input of the output
    novelty: float = 1.0    # |w|^2 / |mu|^2: the share of the centre's energy the past lacks
    rank: int = 0           # how many of the past's directions were projected out
    prefix: int = 0         # the detector reads the first `prefix` coordinates (0: unknown)

    # -- fitting ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, name: str, members: Any, past: Any, *, rank: Optional[int] = None,
            components: int = 2, threshold: float = 0.25, weight: float = 0.1,
            min_novelty: float = MIN_NOVELTY, prefix: Optional[int] = None
            ) -> "LearnedModule":
        """Learn a module from the sketches of a cluster (``members``, rows) against sketches
        of the past (``past``, rows, e.g. every sketch from before the cluster emerged).

        ``rank``: how many of the past's singular directions are projected out; default
        ``min(100, len(past))``; a ``rank`` above ``len(past)`` is a ValueError (the past
        has no more directions; the rank used, after dropping directions below rounding, is
        the module's ``rank``). ``components``: the attribute's principal directions (the
        attribute has ``1 + 2 components`` coordinates; at most ``len(members) - 1``);
        ``threshold`` in (0, 1): the score at which it fires, as a fraction of the centre's;
        ``weight`` in (0, 1]: the weight of its object in the graphs it is added to (its
        count is read back with an error of about the estimator's error divided by it: a
        small weight reads back poorly, a large one leaves the other objects less room).
        ``prefix``: the detector reads only the first ``prefix`` coordinates (e.g. when the
        past was forgotten, i.e. cut, to that length; default: all).

        ``novelty`` (stored on the module) is ``|w|^2 / |mu|^2``: the share of the centre's
        energy outside the past's span (``w`` the novel mean, ``mu`` the centre, both on the
        detector's coordinates). A cluster the past already has scores near 0, and its
        detector ``w / |w|^2`` is a near-random direction of huge norm: ValueError when the
        share is below ``min_novelty`` (default ``MIN_NOVELTY`` = 0.001). The floor guards
        against a cluster the past already spans; it is not a test of newness (use
        ``Clusters.new_since``). Measured (docs/learned_modules.md): new clusters of the demo's year
        0.29-0.72, new captured inputs of the torch test 0.0034; clusters of old days against
        the whole past below 1e-11, against 20 sampled past days 5e-4 to 0.48.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        x = _matrix(members, "members")
        p = _matrix(past, "past", x.shape[1])
        if x.shape[0] < 2:
            raise ValueError(f"members: need at least 2 sketches, got {x.shape[0]}")
        if p.shape[0] < 1:
            raise ValueError("past: need at least 1 sketch")
        rank = min(100, p.shape[0]) if rank is None else _count(rank, "rank", 0)
        if rank > p.shape[0]:
            raise ValueError(f"rank {rank} is more than the past's {p.shape[0]} sketches (it "
                             f"has at most {p.shape[0]} directions to project out)")
        dim = x.shape[1]
        prefix = dim if prefix is None else _count(prefix, "prefix", 1)
        if prefix > dim:
            raise ValueError(f"prefix must be at most the sketch length {dim}, got {prefix}")
        min_novelty = _real(min_novelty, "min_novelty", 0.0, 1.0, lo_open=False)
        r = _count(components, "components", 0)
        if r > x.shape[0] - 1:
            raise ValueError(f"components must be at most len(members) - 1 = {x.shape[0] - 1}"
                             f", got {r}")
        threshold = _real(threshold, "threshold", 0.0, 1.0)
        if threshold >= 1.0:
            raise ValueError(f"threshold must be below 1, got {threshold!r}")
        weight = _real(weight, "weight", 0.0, 1.0)

        # the past's span (uncentred: its mean direction is the first one), on the prefix
        xp, pp = x[:, :prefix], p[:, :prefix]
        k = rank
        if k and np.any(pp):
            _, sv, vt = np.linalg.svd(pp, full_matrices=False)
            # directions below rounding are not part of the past's span
            k = min(k, int(np.sum(sv > sv[0] * 1e-10)))
            v = vt[:k]
            novel = xp - (xp @ v.T) @ v
        else:
            k = 0
            novel = xp
        w = novel.mean(axis=0)
        nw = float(w @ w)
        mu = x.mean(axis=0)
        nmu = float(mu[:prefix] @ mu[:prefix])
        novelty = nw / max(nmu, 1e-300)
        if not nw > 1e-24 * max(nmu, 1e-300) or novelty < min_novelty:
            raise ValueError(f"the cluster has nothing the past lacks: the novelty share "
                             f"|w|^2/|mu|^2 of its centre outside the past's span is "
                             f"{novelty:.3g}, below min_novelty={min_novelty} (its detector "
                             f"would be near-random)")
        coef = np.zeros(dim)
        coef[:prefix] = w / nw  # <mu, w> = |w|^2, the centre scores 1

        # the attribute's directions on the prefix too: past it, members cut by forgetting
        # read zeros, and the first direction would be "was this sketch cut"
        mu[prefix:] = 0.0
        centred = xp - mu[:prefix]
        if r:
            _, _, ct = np.linalg.svd(centred, full_matrices=False)
            comp = np.zeros((r, x.shape[1]))
            comp[:, :prefix] = ct[:r]
            z = centred @ ct[:r].T
            spread = float(np.sqrt(np.mean(np.sum(z * z, axis=1))))
        else:
            comp = np.zeros((0, x.shape[1]))
            spread = 1.0
        if not spread > 0:
            spread = 1.0  # identical members: every attribute is e_1
        return cls._frozen(name, coef, threshold, mu, comp, spread, weight, novelty, k,
                           prefix)

    @classmethod
    def _frozen(cls, name: str, coef: np.ndarray, threshold: float, centre: np.ndarray,
                components: np.ndarray, spread: float, weight: float, novelty: float = 1.0,
                rank: int = 0, prefix: int = 0) -> "LearnedModule":
        arrays = []
        for a in (coef, centre, components):
            a = np.array(a, dtype=np.float64)
            a.setflags(write=False)
            arrays.append(a)
        return cls(name, arrays[0], float(threshold), arrays[1], arrays[2], float(spread),
                   float(weight), float(novelty), int(rank), int(prefix))

    # -- properties --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The sketch length it reads."""
        return int(self.coef.shape[0])

    @property
    def attribute_dim(self) -> int:
        """Length of its objects' attributes: ``1 + 2 * components``."""
        return 1 + 2 * int(self.components.shape[0])

    def __repr__(self) -> str:
        return (f"LearnedModule({self.name!r}, dim={self.dim}, attribute_dim="
                f"{self.attribute_dim}, threshold={self.threshold}, weight={self.weight})")

    # -- the module's computation ------------------------------------------------------------------
    def scores(self, sketches: Any) -> np.ndarray:
        """``<s, coef>`` for a sketch ``(dim,)`` (a float) or a batch ``(n, dim)``."""
        s, single = _batch(sketches, "sketches", self.dim)
        out = s @ self.coef
        return out[0] if single else out

    def fires(self, sketches: Any) -> np.ndarray:
        """Whether the module fires on each sketch: ``scores >= threshold``."""
        return np.asarray(self.scores(sketches)) >= self.threshold

    def attribute(self, sketches: Any) -> np.ndarray:
        """The attribute of the module's object on each sketch: nonnegative, unit norm,
        ``(attribute_dim,)`` or ``(n, attribute_dim)``."""
        s, single = _batch(sketches, "sketches", self.dim)
        z = (s - self.centre) @ self.components.T / self.spread
        a = np.concatenate([np.ones((s.shape[0], 1)), np.maximum(z, 0), np.maximum(-z, 0)],
                           axis=1)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        return a[0] if single else a

    def to_sketch_space(self, attributes: Any, *, clip: bool = False) -> np.ndarray:
        """The reverse map: ``mu + V^T z`` for each attribute, ``z = tau (a+ - a-) / a_0``.

        Exact on the attributes this module computes: ``to_sketch_space(attribute(s))`` is the
        projection of ``s`` onto the cluster's principal plane through its centre, and
        ``e_1`` maps to the centre. Attributes are rescaled first (so an estimate read back
        from a sketch, of any norm, works); ValueError if ``a_0`` is not positive (an
        attribute no object of this module has). An estimate read from sketches may have
        small negative coordinates (noise): pass ``clip=True`` to read them as 0, else they
        are a ValueError."""
        if not isinstance(clip, bool):
            raise TypeError(f"clip must be True or False, got {clip!r}")
        a, single = _batch(attributes, "attributes", self.attribute_dim)
        if clip:
            a = np.maximum(a, 0.0)
        elif np.any(a < 0):
            raise ValueError("attributes must be nonnegative (clip=True reads negative "
                             "coordinates of an estimate as 0)")
        if np.any(a[:, 0] <= 0):
            raise ValueError("attributes: the first coordinate must be positive (it carries "
                             "the scale of the others)")
        r = self.components.shape[0]
        z = self.spread * (a[:, 1:1 + r] - a[:, 1 + r:]) / a[:, :1]
        out = self.centre + z @ self.components
        return out[0] if single else out

    # -- persistence -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The module as ``.npz`` bytes (no pickles): what :meth:`save` writes."""
        meta = json.dumps({"name": self.name, "threshold": self.threshold,
                           "spread": self.spread, "weight": self.weight,
                           "novelty": self.novelty, "rank": self.rank, "prefix": self.prefix})
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(meta), coef=self.coef, centre=self.centre,
                 components=self.components)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "the data") -> "LearnedModule":
        """Read :meth:`to_bytes`'s output (ValueError naming ``what`` if it is not one)."""
        bad = f"{what} is not a saved LearnedModule"
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                coef, centre, comp = z["coef"], z["centre"], z["components"]
            name, thr = meta["name"], meta["threshold"]
            spread, weight = meta["spread"], meta["weight"]
            # modules saved before these were recorded: unknown novelty and rank, all read
            novelty = meta.get("novelty", 1.0)
            rank, prefix = meta.get("rank", 0), meta.get("prefix", 0)
        except (KeyError, ValueError, OSError, TypeError, EOFError, AttributeError,
                zipfile.BadZipFile) as exc:
            raise ValueError(f"{bad}: {exc}") from None
        d = coef.shape[0] if coef.ndim == 1 else -1
        if d < 1 or centre.shape != (d,) or comp.ndim != 2 or comp.shape[1] != d \
                or not isinstance(name, str) or not name:
            raise ValueError(f"{bad}: inconsistent shapes")
        try:
            _real(thr, "threshold", 0.0, 1.0)
            _real(weight, "weight", 0.0, 1.0)
            _real(spread, "spread", 0.0, math.inf)
            _real(novelty, "novelty", 0.0, 1.0, lo_open=False)
            _count(rank, "rank", 0)
            _count(prefix, "prefix", 0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{bad}: {exc}") from None
        if prefix > d:
            raise ValueError(f"{bad}: prefix {prefix} beyond the sketch length {d}")
        for a in (coef, centre, comp):
            if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
                raise ValueError(f"{bad}: non-float, NaN or infinite values")
        return cls._frozen(name, coef, thr, centre, comp, spread, weight, novelty, rank,
                           prefix)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write to an ``.npz`` file (:meth:`to_bytes`)."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "LearnedModule":
        """Read a file written by :meth:`save` (ValueError if it is not one)."""
        return cls.from_bytes(Path(path).read_bytes(), str(path))


MAKE_ROOM = ("error", "scale")


def check_make_room(make_room: Any) -> str:
    if not isinstance(make_room, str) or make_room not in MAKE_ROOM:
        raise ValueError(f"make_room must be 'error' or 'scale', got {make_room!r}")
    return make_room


def with_top_level_objects(graph: Graph, objects: Sequence[Tuple[str, np.ndarray, float]],
                           *, make_room: str = "error") -> Graph:
    """A copy of ``graph`` with leaf objects ``(module, attributes, weight)`` added as the last
    inputs of its output (positions after the existing ones), each object's index after the
    graph's. The existing output weights are kept when they leave room (they sum to at most
    ``1 - sum of the added weights``). When they do not: ``make_room="error"`` (default) is a
    ValueError; ``make_room="scale"`` scales them down to leave exactly that room, which
    changes the weights their queries must be given (the other modules' counts read back
    smaller by that factor)."""
    make_room = check_make_room(make_room)
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a recsketch.Graph, got {type(graph).__name__}")
    output = graph.output
    if output is None:
        raise ValueError("the graph has no output; call set_output first")
    out = Graph()
    handles = []
    for h in graph:
        handles.append(out.add(h.module, graph.attributes(h),
                               [(handles[c.index], w) for c, w in graph.inputs(h)]))
    added = math.fsum(w for _, _, w in objects)
    if added > 1.0:
        raise ValueError(f"the added objects' weights sum to {added}, more than 1")
    total = math.fsum(w for _, w in output)
    scale = 1.0 if total <= 1.0 - added or total == 0 else (1.0 - added) / total
    if scale != 1.0 and make_room == "error":
        raise ValueError(
            f"no room for the learned objects: the graph's output weights sum to {total:.6g} "
            f"and the added objects' to {added:.6g}, more than 1. Choose the learned "
            f"modules' weights (or the graphs' output weights) to leave room, or pass "
            f"make_room='scale' to scale the output weights by {(1.0 - added) / total:.6g} "
            f"(which changes the weights the other modules' queries must be given)")
    top = [(handles[h.index], w * scale) for h, w in output]
    for module, attributes, w in objects:
        top.append((out.add(module, attributes), w))
    out.set_output(top)
    return out


@dataclass(frozen=True)
class Grown:
    """What :func:`sketch_grown` returns: the sketches (``(n, d)``, of the grown graphs),
    ``fired[i, j]`` (module ``j`` fired on graph ``i``), the grown graphs (the input graph
    itself where nothing fired) and ``base``, the sketches without learned objects (the ones
    the detectors read)."""

    sketches: np.ndarray
    fired: np.ndarray
    graphs: List[Graph]
    base: np.ndarray


def check_learned(sketcher: Sketcher, modules: Sequence[LearnedModule]) -> List[LearnedModule]:
    """The modules as a list, checked against the Sketcher: every module reads ``d_sketch``
    values and has a distinct name."""
    out = list(modules)
    names = set()
    for m in out:
        if not isinstance(m, LearnedModule):
            raise TypeError(f"expected LearnedModule, got {type(m).__name__}")
        if m.dim != sketcher.d_sketch:
            raise ValueError(f"learned module {m.name!r} reads sketches of length {m.dim}, "
                             f"the Sketcher makes {sketcher.d_sketch}")
        if m.name in names:
            raise ValueError(f"two learned modules named {m.name!r}")
        names.add(m.name)
    return out


def register_learned(sketcher: Sketcher, module: LearnedModule) -> None:
    """Record the module in the Sketcher's registry (depth 2, its attribute length), so its
    counts and attributes can be queried; ValueError if the name is registered otherwise."""
    check_learned(sketcher, [module])
    sketcher.register_module(module.name, LEARNED_DEPTH, module.attribute_dim)


def sketch_grown(sketcher: Sketcher, graphs: Sequence[Graph],
                 modules: Sequence[LearnedModule], *, num_threads: Optional[int] = None,
                 make_room: str = "error") -> Grown:
    """Sketch graphs through a network grown by learned modules.

    Every graph is sketched; each module reads that sketch (so learned modules never read each
    other's objects); a graph on which any fires gains one top-level object per firing module
    (:func:`with_top_level_objects`, in the order of ``modules``) and is sketched again. The
    result's sketches are bit-identical to sketching the grown graphs directly. Works on any
    graphs, e.g. those of ``recsketch.torch.capture``. The modules are registered with the
    Sketcher first (:func:`register_learned`). ``make_room``: what to do with a graph whose
    output weights leave no room for the objects (:func:`with_top_level_objects`).
    """
    make_room = check_make_room(make_room)
    mods = check_learned(sketcher, modules)
    for m in mods:
        register_learned(sketcher, m)
    base = sketcher.sketch_many(graphs, num_threads=num_threads)
    n = base.shape[0]
    fired = np.zeros((n, len(mods)), bool)
    attrs = []
    for j, m in enumerate(mods):
        fired[:, j] = m.fires(base)
        attrs.append(m.attribute(base[fired[:, j]]) if fired[:, j].any() else None)
    grown = list(graphs)
    rows = np.flatnonzero(fired.any(axis=1))
    if rows.size == 0:
        return Grown(base, fired, grown, base)
    cursor = [0] * len(mods)
    for i in rows.tolist():
        extra = []
        for j, m in enumerate(mods):
            if fired[i, j]:
                extra.append((m.name, attrs[j][cursor[j]], m.weight))
                cursor[j] += 1
        grown[i] = with_top_level_objects(graphs[i], extra, make_room=make_room)
    out = base.copy()
    out[rows] = sketcher.sketch_many([grown[i] for i in rows.tolist()], num_threads=num_threads)
    return Grown(out, fired, grown, base)
