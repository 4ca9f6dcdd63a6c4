"""Object signatures (paper §3, "Object Signature Recovery"; the supplement that defines them is
not available), as an opt-in change of a graph, never of the sketch mechanism.

A *signed* graph carries, in every object's attribute vector, a seeded code that names the
object: the attribute ``x`` (length ``m``) becomes ``[cos(a) x, sin(a) c]`` (length
``m + dim``; still nonnegative and unit norm), ``c`` being a sparse binary code with ``ones``
entries ``1 / sqrt(ones)`` at positions drawn from the object's *key*. The code goes through
the module's ``R[M,1]`` columns past the attribute (the "extra columns" of the module's
matrix), so the sketch of a signed graph is an ordinary sketch and every query works on it;
only the signed module's attribute length changes (``m + dim``).

The key is a content hash (Merkle): BLAKE2b over the module, the attribute bytes and the
inputs' keys and weights, so it needs no id at sketch time, is the same on every machine, and
two objects get the same key only when they are the same object (same module, attribute and
inputs, recursively). Identification is therefore *up to content*: identical objects (the same
object in two graphs, or a graph added twice) get identical keys and codes, and a lookup
cannot tell them apart (it scores them alike; ties are ordered by object id). Where copies
must be told apart, make their content differ (e.g. an attribute coordinate carrying an id).

Reading it back: :func:`read_signature` takes an attribute estimate of the module (from
``Sketcher.attributes``, any path) and splits it into the attribute part (renormalised) and the
code part; :func:`code_scores` scores a code estimate against stored keys (the sum of the
estimate at each key's code positions, i.e. the inner product with the code). The repository
lookup is the best-scoring stored key.

What it costs and what it buys is measured in ``bench/signatures.py`` (docs/objects.md).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import struct
from typing import Any, List, NamedTuple, Sequence, Tuple

import numpy as np

from .graph import Graph

__all__ = ["SignatureSpec", "object_keys", "signature_code", "sign_graph", "read_signature",
           "code_positions", "code_scores"]


class SignatureSpec(NamedTuple):
    """How objects are signed: ``dim`` code coordinates with ``ones`` of them set, and the
    share of the attribute's energy the code takes, ``sin(angle)^2``."""

    dim: int = 64
    ones: int = 8
    angle: float = math.pi / 4

    def checked(self) -> "SignatureSpec":
        for name, v in (("dim", self.dim), ("ones", self.ones)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"signature {name} must be a positive integer, got {v!r}")
        if self.ones > self.dim:
            raise ValueError(f"signature ones ({self.ones}) must be at most dim ({self.dim})")
        a = self.angle
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or \
                not 0.0 < float(a) < math.pi / 2:
            raise ValueError(f"signature angle must be in (0, pi/2), got {a!r}")
        return SignatureSpec(int(self.dim), int(self.ones), float(a))


def object_keys(graph: Graph) -> List[bytes]:
    """The 16-byte content key of every object of ``graph``, in ``Handle.index`` order."""
    if not isinstance(graph, Graph):
        raise TypeError(f"expected a recsketch.Graph, got {type(graph).__name__}")
    keys: List[bytes] = []
    for h in graph:  # inputs come before the objects they feed
        b = hashlib.blake2b(digest_size=16, person=b"recsketch-sig")
        name = h.module.encode()
        b.update(struct.pack("<q", len(name)) + name)
        x = np.ascontiguousarray(graph.attributes(h), dtype="<f8")
        b.update(struct.pack("<q", x.size) + x.tobytes())
        for c, w in graph.inputs(h):
            b.update(keys[c.index] + struct.pack("<d", float(w)))
        keys.append(b.digest())
    return keys


def code_positions(keys: Sequence[bytes], spec: SignatureSpec) -> np.ndarray:
    """``(n, ones)`` int64: the code positions of each key (distinct, in ``[0, dim)``), drawn by
    NumPy's PCG64 seeded with the key's 128 bits."""
    spec = spec.checked()
    out = np.empty((len(keys), spec.ones), np.int64)
    for i, k in enumerate(keys):
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(k, "little")))
        out[i] = rng.choice(spec.dim, spec.ones, replace=False)
    return out


def signature_code(key: bytes, spec: SignatureSpec) -> np.ndarray:
    """The code ``c`` of a key: ``(dim,)``, ``ones`` entries ``1 / sqrt(ones)``, unit norm."""
    spec = spec.checked()
    c = np.zeros(spec.dim)
    c[code_positions([key], spec)[0]] = 1.0 / math.sqrt(spec.ones)
    return c


def sign_graph(graph: Graph, spec: SignatureSpec = SignatureSpec()
               ) -> Tuple[Graph, List[bytes]]:
    """A copy of ``graph`` whose every object carries its signature, and the objects' keys
    (computed on the unsigned graph). The structure, weights and object indices are kept; a
    module's attribute length grows by ``spec.dim`` (sketch signed graphs with a Sketcher of
    their own: one module cannot have two attribute lengths in a registry)."""
    spec = spec.checked()
    keys = object_keys(graph)
    ca, sa = math.cos(spec.angle), math.sin(spec.angle)
    out = Graph()
    handles = []
    for h, k in zip(graph, keys):
        x = np.concatenate([ca * graph.attributes(h), sa * signature_code(k, spec)])
        handles.append(out.add(h.module, x, [(handles[c.index], w)
                                             for c, w in graph.inputs(h)]))
    if graph.output is not None:
        out.set_output([(handles[h.index], w) for h, w in graph.output])
    return out, keys


class SignatureRead(NamedTuple):
    """An attribute estimate of a signed module, split: ``attributes`` (the first ``m``
    coordinates, renormalised) and ``code`` (the ``dim`` code coordinates, as estimated)."""

    attributes: np.ndarray
    code: np.ndarray


def read_signature(estimate: Any, attribute_dim: int, spec: SignatureSpec = SignatureSpec()
                   ) -> SignatureRead:
    """Split an attribute estimate ``(m + dim,)`` of a signed module (e.g.
    ``sketcher.attributes(s, module, path).attributes``) into its parts."""
    spec = spec.checked()
    x = np.asarray(estimate, np.float64)
    if x.ndim != 1 or x.size != attribute_dim + spec.dim:
        raise ValueError(f"expected an estimate of length attribute_dim + dim = "
                         f"{attribute_dim + spec.dim}, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the estimate contains NaN or infinity")
    a = x[:attribute_dim]
    n = np.linalg.norm(a)
    return SignatureRead(a / n if n > 0 else a.copy(), x[attribute_dim:].copy())


def code_scores(code: Any, positions: np.ndarray) -> np.ndarray:
    """Inner products (up to the constant ``1 / sqrt(ones)``) of a code estimate ``(dim,)`` with
    the codes at ``positions`` ``(n, ones)`` (from :func:`code_positions`)."""
    c = np.asarray(code, np.float64)
    p = np.asarray(positions)
    if c.ndim != 1 or p.ndim != 2 or p.dtype.kind not in "iu":
        raise ValueError("code must be (dim,) and positions (n, ones) integers")
    if p.size and (p.min() < 0 or p.max() >= c.size):
        raise ValueError(f"positions must be in [0, {c.size})")
    return c[p].sum(axis=1)
