"""Real-shaped sketching workloads and the baselines they are measured against.

Scenes
- many_module_scene: >= 200 modules and >= 500 objects per graph, depth 5, attributes 16-768
  long; 90% of a graph's modules are its own (distinct across a batch), 10% shared.
- eighty_module_scene: issue 11's case, 20 mid objects with 3 leaves each, every object its own
  module, 64-d attributes.
- chain_scene: a CNN's 4-layer chain (one object per layer).

Baselines (all compute Section 3.3 with the same matrices; tests/ check the library against an
independent dense recursion, the benchmarks check the baselines against the library):
- LevelBaseline: the level-synchronous schedule written in NumPy, with the same algebra as the
  library: one batched product per matrix and level (all P(R[i]) of a level's edges at
  position i, all P(R[1]), all P(R[2]), each module's R[M,1], R[M,0] over its objects) and
  R[M,2] e_1 computed once per module and call. Products go through `matrix(role)`:
  SciPyProducts (SciPy sparse matrices generated from the seed, or a NumPy FWHT: the "scipy"
  baseline) or native_products (recsketch's own batched products: the "fair" baseline, which
  then measures the schedule only).
- naive_sketch: the object-by-object recursion, one vector per product (what a first
  implementation looks like).
"""

from __future__ import annotations

import math
import zlib
import time
from collections import OrderedDict, defaultdict
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

import recsketch as rs


def _unit(rng: np.random.Generator, m: int) -> np.ndarray:
    x = rng.random(m) + 1e-3
    return x / np.linalg.norm(x)


# objects and modules per depth (5 = leaves ... 2 = top level): 500 objects, 210 modules
_MANY_LAYOUT = {5: (260, 110), 4: (130, 55), 3: (70, 30), 2: (40, 15)}


def many_module_scene(seed: int) -> rs.Graph:
    rng = np.random.default_rng(seed)
    g = rs.Graph()
    below: List[rs.Handle] = []
    for h in (5, 4, 3, 2):
        n_obj, n_mod = _MANY_LAYOUT[h]
        names = []
        for j in range(n_mod):
            shared = j % 10 == 0
            name = f"shared_d{h}_{j}" if shared else f"g{seed}_d{h}_{j}"
            # a shared module's length is a function of its name (the same in every graph)
            dim = 16 + (zlib.crc32(name.encode()) if shared else int(rng.integers(0, 2**31))) % 753
            names.append((name, dim))
        parent = rng.integers(0, n_obj, size=len(below))
        row = []
        for k in range(n_obj):
            kids = [below[c] for c in np.flatnonzero(parent == k)]
            name, dim = names[k % n_mod]
            w = rng.dirichlet(np.ones(len(kids))) if kids else []
            row.append(g.add(name, _unit(rng, dim), [(c, float(x)) for c, x in zip(kids, w)]))
        below = row
    g.set_output([(b, 1.0 / len(below)) for b in below])
    return g


def eighty_module_scene(seed: int) -> rs.Graph:
    rng = np.random.default_rng(seed)
    g = rs.Graph()
    mids = []
    for i in range(20):
        kids = [g.add(f"s{seed}_leaf{i}_{j}", _unit(rng, 64)) for j in range(3)]
        mids.append(g.add(f"s{seed}_mid{i}", _unit(rng, 64), [(c, 1 / 3) for c in kids]))
    g.set_output([(m, 1 / 20) for m in mids])
    return g


def chain_scene(seed: int, dims: Sequence[int] = (64, 128, 256, 512)) -> rs.Graph:
    rng = np.random.default_rng(seed)
    g = rs.Graph()
    prev = None
    for i, m in enumerate(dims):
        prev = g.add(f"conv{i}", _unit(rng, m), [] if prev is None else [(prev, 1.0)])
    g.set_output([(prev, 1.0)])
    return g


# -- the schedule, shared by the baseline and the bound ---------------------------------------

def _plan(graphs: Sequence[rs.Graph]):
    """Objects of all graphs as rows: (module, attributes, [(row, w)]), levels, output rows."""
    rows, outputs = [], []
    for g in graphs:
        base = len(rows)
        for h in g:
            rows.append((h.module, g.attributes(h), [(base + c.index, w) for c, w in g.inputs(h)]))
        outputs.append([(base + c.index, w) for c, w in g.output])
    level = []
    for _, _, inputs in rows:
        level.append(1 + max((level[c] for c, _ in inputs), default=-1))
    return rows, level, outputs


class LevelBaseline:
    """Level-synchronous recursion in NumPy (see the module docstring).

    ``matrix(role)`` returns a function X (n, m) -> R X^T as (n, d) rows, for m <= d."""

    def __init__(self, d: int, matrix: Callable[[Tuple], Callable[[np.ndarray], np.ndarray]],
                 dtype=np.float32, embeddings: Dict[str, np.ndarray] = None):
        self.d, self.matrix, self.dtype = d, matrix, dtype
        # module -> A_M ((k + 1) x d): that module's leaves are A_M^T [x; 1] (the library's
        # leaf embeddings, same algebra)
        self.embeddings = {m: A.astype(dtype) for m, A in (embeddings or {}).items()}

    @staticmethod
    def embeddings_like(sk: rs.Sketcher, graphs: Sequence[rs.Graph], matrix) -> Dict[str, np.ndarray]:
        """A_M for the modules whose leaves the library embeds in these graphs, built with
        `matrix` (outside any timing: a user would keep them too)."""
        from recsketch.graph import flatten
        flat = flatten(list(graphs), sk.d_sketch)
        _, chosen = sk._leaf_embeddings.plan(sk, flat)
        out = {}
        for m, k in chosen.items():
            name = flat.modules[m]
            cols = np.vstack([matrix(("module", name, 1))(np.eye(k)),
                              matrix(("module", name, 2))(np.ones((1, 1)))])
            half = lambda role, X: 0.5 * (X + matrix(role)(X))
            out[name] = 0.25 * half(("module", name, 0), half(("position", 1), cols))
        return out

    def _half(self, role, X):
        return 0.5 * (X + self.matrix(role)(X))

    def sketch_many(self, graphs: Sequence[rs.Graph]) -> np.ndarray:
        rows, level, outputs = _plan(graphs)
        d = self.d
        e1 = {}
        obj: Dict[int, np.ndarray] = {}
        by_level = defaultdict(list)
        last_level = {}
        for r, lv in enumerate(level):
            by_level[lv].append(r)
            last_level[rows[r][0]] = max(lv, last_level.get(rows[r][0], lv))
        # matrix.release(role), if it has one, frees a module's matrix after its last use
        release = getattr(self.matrix, "release", lambda role: None)
        for lv in sorted(by_level):
            level_rows = by_level[lv]
            s_in = np.zeros((len(level_rows), d), self.dtype)
            fan = max((len(rows[r][2]) for r in level_rows), default=0)
            for i in range(1, fan + 1):
                edges = [(p, rows[r][2][i - 1]) for p, r in enumerate(level_rows)
                         if len(rows[r][2]) >= i]
                kids = sorted({c for _, (c, _) in edges})
                slot = {c: k for k, c in enumerate(kids)}
                H = self._half(("position", i), np.stack([obj[c] for c in kids]))
                p_idx = np.array([p for p, _ in edges])
                w = np.array([w for _, (_, w) in edges], self.dtype)[:, None]
                s_in[p_idx] += w * H[[slot[c] for _, (c, _) in edges]]
            groups = defaultdict(list)
            embedded = defaultdict(list)
            for p, r in enumerate(level_rows):
                module, _, inputs = rows[r]
                (embedded if not inputs and module in self.embeddings else groups)[module].append(p)
            for module, ps in embedded.items():
                X = np.stack([np.append(rows[level_rows[p]][1], 1.0) for p in ps]).astype(self.dtype)
                S = X @ self.embeddings[module]
                for k, p in enumerate(ps):
                    obj[level_rows[p]] = S[k]
            rest = [p for ps in groups.values() for p in ps]
            if not rest:
                continue
            s_attr = np.empty_like(s_in)
            for module, ps in groups.items():
                X = np.stack([rows[level_rows[p]][1] for p in ps]).astype(self.dtype)
                if module not in e1:
                    e1[module] = self.matrix(("module", module, 2))(np.ones((1, 1), self.dtype))[0]
                s_attr[ps] = 0.5 * self.matrix(("module", module, 1))(X) + 0.5 * e1[module]
                if last_level[module] == lv:
                    release(("module", module, 1))
                release(("module", module, 2))   # R[M,2] e_1 is kept in e1
            has_in = np.array([len(rows[r][2]) > 0 for r in level_rows])
            rest = np.array(sorted(rest))
            tup = np.zeros_like(s_in)
            tup[rest] = 0.5 * self._half(("position", 1), s_attr[rest])
            with_in = rest[has_in[rest]]
            if with_in.size:
                tup[with_in] += 0.5 * self._half(("position", 2), s_in[with_in])
            for module, ps in groups.items():
                S = self._half(("module", module, 0), tup[ps])
                if last_level[module] == lv:
                    release(("module", module, 0))
                for k, p in enumerate(ps):
                    obj[level_rows[p]] = S[k]
        out = np.zeros((len(graphs), d), self.dtype)
        for k, items in enumerate(outputs):
            for i, (c, w) in enumerate(items, start=1):
                out[k] += w * self._half(("position", i), obj[c][None])[0]
        return out


def naive_sketch(graph: rs.Graph, d: int, matrix, dtype=np.float32) -> np.ndarray:
    """Object by object, one vector per product, R[M,2] e_1 recomputed every time."""
    half = lambda role, v: 0.5 * (v + matrix(role)(v[None])[0])
    obj = {}
    for h in graph:
        a = graph.attributes(h).astype(dtype)[None]
        s_attr = 0.5 * matrix(("module", h.module, 1))(a)[0] \
            + 0.5 * matrix(("module", h.module, 2))(np.ones((1, 1), dtype))[0]
        s_in = np.zeros(d, dtype)
        for i, (c, w) in enumerate(graph.inputs(h), start=1):
            s_in += w * half(("position", i), obj[c.index])
        t = 0.5 * half(("position", 1), s_attr)
        if graph.inputs(h):
            t += 0.5 * half(("position", 2), s_in)
        obj[h.index] = half(("module", h.module, 0), t)
    out = np.zeros(d, dtype)
    for i, (c, w) in enumerate(graph.output, start=1):
        out += w * half(("position", i), obj[c.index])
    return out


def native_products(sk: rs.Sketcher, dtype=np.float32):
    """matrix(role) through recsketch's batched products (no materialisation)."""
    def matrix(role):
        R = sk.position_matrix(role[1]) if role[0] == "position" else sk.module_matrix(role[1], role[2])

        def apply(X):
            X = np.ascontiguousarray(X, dtype)
            return R.apply_short(X) if X.shape[1] < sk.d_sketch else R.matvec(X)
        return apply
    return matrix


def numpy_fwht(x: np.ndarray, scratch: np.ndarray):
    """Unnormalised FWHT of every row of x (n x d, float64), ping-ponging between x and
    scratch with no temporaries; returns (result, the other buffer)."""
    n, d = x.shape
    src, dst = x, scratch
    h = 1
    while h < d:
        a = src.reshape(n, d // (2 * h), 2, h)
        b = dst.reshape(n, d // (2 * h), 2, h)
        np.add(a[:, :, 0], a[:, :, 1], out=b[:, :, 0])
        np.subtract(a[:, :, 0], a[:, :, 1], out=b[:, :, 1])
        src, dst = dst, src
        h *= 2
    return src, dst


def numpy_orthogonal(signs, d: int):
    """R x for the rows of x (n x d), as a NumPy user would write R = H D3 H D2 H D1 from its
    sign diagonals (float64, like the library's kernel)."""
    c = 1.0 / np.sqrt(d)
    d1, d2c, d3c = (s.astype(np.float64) * f for s, f in zip(signs, (1.0, c, c)))

    def apply(x):
        v = x * d1
        v, w = numpy_fwht(v, np.empty_like(v))
        v *= d2c
        v, w = numpy_fwht(v, w)
        v *= d3c
        v, w = numpy_fwht(v, w)
        v *= c
        return v
    return apply


class SciPyProducts:
    """matrix(role) as a competent SciPy/NumPy user would write it for the same algebra.

    block_sparse: SciPy sparse matrices generated from the seed by the library's column
    generator (``RandomMatrix.to_scipy``, all threads): CSR for the matrices built once and
    kept (position matrices; module matrices when ``keep_modules``), CSC for a fresh module's
    matrices (used for a few vectors, and CSC is what the generator produces: no conversion),
    only the first k columns of ``R[M,1]`` and one column of ``R[M,2]``. Products are sparse @ dense
    panels (SciPy, one thread). orthogonal: the sign diagonals (``R._native.signs``: the public
    API has no accessor) and a vectorised NumPy FWHT of the same three transforms.

    ``new_call()`` drops the module matrices (on fresh-module scenes each call brings new ones)
    and zeroes ``build_seconds``, the time spent generating matrices since, so that a timed call
    reports both "build + products" and "products only" (its time minus ``build_seconds``).
    Without ``keep_modules``, ``release(role)`` (called by LevelBaseline after a module's last
    product of the call) frees that matrix, as a user sketching a stream of new modules would.
    A module used at several levels (65 of the ~400 of a many-module call) keeps its matrices
    between them, held least-recently-used within ``module_bytes`` (at d = 16k its ``R[M,0]``
    takes ~114 MiB); ``rebuilds`` counts the matrices generated again after such an eviction.
    """

    def __init__(self, sk: rs.Sketcher, keep_modules: bool, dtype=np.float32,
                 module_bytes: int = 2 << 30):
        self.sk, self.keep_modules, self.dtype = sk, keep_modules, dtype
        self.module_bytes = module_bytes
        self.kept: Dict[Tuple, Callable] = {}
        self.modules: "OrderedDict[Tuple, Tuple[Callable, int]]" = OrderedDict()
        self.held = 0
        self.build_seconds = 0.0
        self.built: set = set()
        self.rebuilds = 0

    def new_call(self) -> None:
        if not self.keep_modules:
            self.modules.clear()
            self.held = 0
            self.built.clear()
        self.build_seconds = 0.0
        self.rebuilds = 0

    def release(self, role) -> None:
        if not self.keep_modules:
            for key in [k for k in self.modules if k[0] == role]:
                self.held -= self.modules.pop(key)[1]

    def _build(self, role, m: int):
        sk = self.sk
        R = sk.position_matrix(role[1]) if role[0] == "position" else sk.module_matrix(role[1], role[2])
        if sk.family == "orthogonal":
            full = numpy_orthogonal([R._native.signs(r) for r in (1, 2, 3)], sk.d_sketch)
            d = sk.d_sketch

            def apply(X):
                if X.shape[1] < d:
                    X = np.concatenate([X, np.zeros((X.shape[0], d - X.shape[1]))], axis=1)
                return full(np.asarray(X, np.float64)).astype(self.dtype)
            return apply, 3 * d
        csr = role[0] == "position" or self.keep_modules
        M = R.to_scipy(self.dtype, columns=m, format="csr" if csr else "csc")
        nbytes = M.data.nbytes + M.indices.nbytes + M.indptr.nbytes
        if csr:
            return (lambda X: np.asarray(M @ np.ascontiguousarray(X.T, self.dtype)).T), nbytes
        return (lambda X: np.asarray(M @ np.asarray(X, self.dtype).T).T), nbytes

    def _get(self, role, m: int):
        key = (role, m)
        if role[0] == "position" or self.keep_modules:
            got = self.kept.get(key)
            if got is None:
                t = time.perf_counter()
                got = self.kept[key] = self._build(role, m)[0]
                self.build_seconds += time.perf_counter() - t
            return got
        got = self.modules.get(key)
        if got is not None:
            self.modules.move_to_end(key)
            return got[0]
        t = time.perf_counter()
        self.rebuilds += key in self.built
        self.built.add(key)
        fn, nbytes = self._build(role, m)
        while self.modules and self.held + nbytes > self.module_bytes:
            self.held -= self.modules.popitem(last=False)[1][1]
        self.modules[key] = (fn, nbytes)
        self.held += nbytes
        self.build_seconds += time.perf_counter() - t
        return fn

    def __call__(self, role):
        return lambda X: self._get(role, X.shape[1])(X)

    def prebuild_positions(self, graphs: Sequence[rs.Graph]) -> None:
        """Build the position matrices these graphs use (outside any timing)."""
        for role in roles_of(graphs):
            if role[0] == "position":
                self(role)(np.zeros((1, self.sk.d_sketch), self.dtype))
        self.build_seconds = 0.0


def roles_of(graphs: Sequence[rs.Graph]):
    roles = set()
    fan = 2
    for g in graphs:
        for h in g:
            roles.update(("module", h.module, k) for k in range(3))
            fan = max(fan, len(g.inputs(h)))
        fan = max(fan, len(g.output))
    roles.update(("position", i) for i in range(1, fan + 1))
    return sorted(roles, key=str)


# -- the physical bound -----------------------------------------------------------------------

def peak_add_rate(rounds: int = 2_000_000, repeats: int = 7) -> float:
    """float64 adds per second of one core at its SIMD peak, measured: the library's own probe
    (``recsketch._core.add_rate_probe``: 48 * rounds independent adds at the WHT kernel's
    SIMD width), best of `repeats` (the minimum time is the machine's rate, not its load).
    The same rate docs/kernels.md and bench_kernels.test_simd_add_rate use (~33 G adds/s on
    this machine, where 8 x the /proc/cpuinfo clock would claim 20.8 G: turbo and two add
    ports make the nominal figure no bound)."""
    rs._core.add_rate_probe(rounds // 10)  # warm the clock and the code
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        rs._core.add_rate_probe(rounds)
        best = min(best, time.perf_counter() - t)
    return 48 * rounds / best


def measured_add_rate(n: int = 16384, repeats: int = 2000) -> float:
    """float64 adds per second of NumPy's SIMD add loop on L2-resident vectors, best of 5."""
    a, b = np.ones(n), np.ones(n)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeats):
            np.add(a, b, out=a)
        best = min(best, time.perf_counter() - t)
    return n * repeats / best


def products_of(graphs: Sequence[rs.Graph]):
    """Products the schedule needs: (full products, [attribute lengths of short products],
    columns e_1 (one per module and call))."""
    rows, level, outputs = _plan(graphs)
    full, short, modules = 0, [], set()
    for (module, x, inputs), lv in zip(rows, level):
        full += 2 + (1 if inputs else 0)        # P(R[1]), P(R[M,0]), P(R[2])
        short.append(x.size)                    # R[M,1] x
        modules.add(module)
    edges = {(c, i) for module, x, inputs in rows for i, (c, _) in enumerate(inputs, 1)}
    full += len(edges) + sum(len(o) for o in outputs)
    return full, short, len(modules)


def bound_seconds(sk: rs.Sketcher, graphs: Sequence[rs.Graph], add_rate: float) -> float:
    """Seconds the unavoidable adds take at `add_rate` on one core.

    orthogonal: every product is 3 Walsh-Hadamard transforms of d log2 d adds (R[M,2] e_1:
    one product per module). block_sparse: a product walks the nonzero blocks of the columns it
    reads and adds b/3 + 4 + ceil(log2 d) structured sums per block and vector
    (block_sparse_kernels.hpp)."""
    d = sk.d_sketch
    full, short, n_modules = products_of(graphs)
    if sk.family == "orthogonal":
        transforms = full + len(short) + n_modules
        return transforms * 3 * d * math.log2(d) / add_rate
    b = sk.block_size
    blocks_per_column = sk.density * d / b
    sums = b / 3 + 4 + math.ceil(math.log2(d))
    columns = full * d + sum(short) + n_modules
    return columns * blocks_per_column * sums / add_rate
