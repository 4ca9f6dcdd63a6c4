"""The joint read-out (``method="joint"``): a least-squares fit of the whole sketch.

The matched filter reads one module's words and treats every other word in the sketch as noise.
But an overall sketch is *linear* in a small set of unknowns once the words are fixed: every
object of module M reached along path p (input positions i_2..i_h and the modules of its
ancestors) contributes

    w 2^-h P(R[i_2]) P(R[A_2,0]) P(R[2]) ... P(R[i_h]) P(R[M,0]) P(R[1]) (R[M,1] x + R[M,2] e_1)

(P(R) = (I + R)/2, MATH.md §2.3), so ``s = sum over (M, p) of B_(M,p) [y_(M,p); m_(M,p)]``
with ``y = sum of w x`` and ``m = sum of w`` over the objects on that path. The read-out
enumerates these *blocks* for every registered module and every path whose positions are at
most ``fan_in``, stacks their columns (one per attribute coordinate, one for the count
channel) as the rows of a dense design ``A`` built once with the library's products, and
solves the normal equations ``(A A^T) theta = A s`` with a cached Cholesky factor. Least
squares is linear in ``s``: a query's sum ``S theta`` is read by the probe ``S G^-1 A``
(:func:`read_out`), cached like the matched probes. When every
object's path is enumerated the model is exact and so is the read-out (to rounding), whatever
the number of objects; what it cannot see (positions above ``fan_in``) stays noise, as in the
matched filter.

The blocks grow as ``fan_in^(h-1)`` times the modules of the ancestor levels, so paths are
enumerated level by level from the top while all the unknowns stay within
:func:`unknowns_budget` (half the coordinates read, at most ``Decoder.joint_max_unknowns``,
default :data:`JOINT_MAX_UNKNOWNS`; never the query cache's size, which only has to hold
the plan's Gram factor and probes, :func:`cache_bytes_needed`, or the query is refused; the
design is kept beside them only where there is room, else rebuilt for ``path`` queries);
deeper modules get one *path-free* block: the words of the matched read-out of case (i),
which every object of the module spells the same number of times whatever its path (``_probes.path_free_words``). A
query on such a module with a ``path`` adds that path's blocks to the fit, reusing the cached
factor of the rest (:class:`Extension`).
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

from ._checks import check_int
from ._probes import POSITION, Letter, Word, paper_gain, path_free_words, position
from .queries import METHODS

if TYPE_CHECKING:  # pragma: no cover
    from .matrices import RandomMatrix
    from .sketcher import ModuleInfo, Sketcher

__all__ = ["JOINT_FAN_IN", "JOINT_MAX_UNKNOWNS", "Block", "Extension", "unknowns_budget",
           "design_bytes", "cache_bytes_needed", "cache_bytes_fast", "over_budget",
           "cache_too_small", "build_too_large", "JOINT_MAX_BUILD_BYTES",
           "check_method", "reachable",
           "plan_blocks", "extra_blocks", "design_rows", "gram_factor", "extend", "solve_normal",
           "read_out", "check_fan_in"]

JOINT_FAN_IN = 8              # default bound on the input positions the fit enumerates
# Default cap on the unknowns n (``Decoder.joint_max_unknowns``): the Gram matrix costs n^2 d
# flops once, its factor n^3 / 3, each query's probe n k d once.
JOINT_MAX_UNKNOWNS = 4096
# Default cap on a build's working memory (``Decoder.joint_max_build_bytes``, design_bytes):
# the design is not kept by the query cache, so this is the only bound on what a query allocates.
# 4 GiB: the README's room at d = 64k (2.8 GiB) fits; a 10 GB design does not.
JOINT_MAX_BUILD_BYTES = 4 * 2**30
_MAX_FAN_IN = 64
# Smallest admissible min(diag L)^2 / max(diag L)^2 of the Gram factor: below it the fitted
# columns are numerically dependent and the solve would amplify rounding into garbage.
_MIN_PIVOT_RATIO = 1e-12
# design_rows stacks the partial products that one matrix multiplies next, up to this many
# bytes (at least one block; the stack is a temporary), and multiplies the stack this many rows
# a call: blocks of dim + 1 rows, multiplied alone, left a slow 1-vector panel each, and the
# kernels' 8-vector panel ran slower per vector than two of 4 (docs/joint.md).
_PANEL_BYTES = 8 << 20
_SLICE_ROWS = 4
# A partial product of the design: (module, through P(R) factors, letters innermost first).
_Key = Tuple[str, bool, Word]


def design_bytes(blocks: Sequence["Block"], d: int, d_kept: Optional[int] = None) -> int:
    """Peak working memory of building a plan's design and Gram factor (bytes): the design
    (``8 n d``) with, while :func:`design_rows` runs, the partial products that later products
    or blocks still read, the modules' base columns and a batched product's stacked inputs and
    output, counted by walking the same schedule (:func:`_schedule`); then the design beside
    its restriction to ``d_kept`` coordinates (an erased sketch) and the Gram matrix and its
    factor (``16 n^2``). Not what the query cache must keep (:func:`cache_bytes_needed`); capped by
    ``Decoder.joint_max_build_bytes`` (:func:`build_too_large`)."""
    n = sum(b.size for b in blocks)
    size = {b.module: 8 * b.size * d for b in blocks}
    design = 8 * n * d
    # the modules' base columns are kept to the end; a batched product's output lives until
    # the last of its partial products is dropped
    alive = design + sum(size.values())
    peak = alive
    made: Dict[_Key, int] = {}
    made_ever: Set[_Key] = set()
    left: Dict[int, int] = {}
    nbytes: Dict[int, int] = {}
    for i, step in enumerate(_schedule(blocks, d)[1]):
        if step.letter is not None:
            nbytes[i] = out = sum(size[key[0]] for key in step.keys)
            stacked = out if len(step.keys) > 1 else 0
            peak = max(peak, alive + stacked + out + 8 * _SLICE_ROWS * d)
            alive += out
            left[i] = len(step.keys)
            made.update((key, i) for key in step.keys)
        made_ever.update(step.keys)
        # a path-free block's sum holds one term besides its partial products
        term = max((size[blocks[j].module] for j in step.done if blocks[j].path is None),
                   default=0)
        peak = max(peak, alive + term)
        for key in step.drop:
            j = made.pop(key, None)
            if j is not None:
                left[j] -= 1
                if left[j] == 0:
                    alive -= nbytes[j]
    restricted = 0 if d_kept is None else 8 * n * d_kept
    # Python's own objects: the schedule's keys and the arrays' headers (under 0.5 KiB a
    # partial product), the factor's checks (a few vectors of n)
    bookkeeping = 1024 * len(made_ever) + 64 * n
    return bookkeeping + max(peak, design + restricted + 16 * n * n)


def build_too_large(need: int, limit: int) -> ValueError:
    """The error for a plan whose build (:func:`design_bytes`) exceeds
    ``Decoder.joint_max_build_bytes``: the plan stays what it is, so the query is refused."""
    return ValueError(
        f"method='joint' needs {need} bytes ({need / 2**30:.2f} GiB) of working memory to "
        f"build its design and Gram factor, more than sk.decoder.joint_max_build_bytes "
        f"({limit} bytes, {limit / 2**30:.2f} GiB): raise joint_max_build_bytes if the "
        "machine has the memory, or lower sk.decoder.joint_max_unknowns (or fan_in) for a "
        "smaller plan, which changes the answers (sk.decoder.joint_plan() shows the plan)")


def cache_bytes_needed(n: int, d: int, probe_rows: int) -> int:
    """The query cache a plan of ``n`` unknowns needs: its Gram factor (``8 n^2``) and
    ``probe_rows`` rows of length ``d`` (``attribute_dim + 1`` of the largest planned module:
    one query's probe, both channels). With room for every planned module's probe too
    (:func:`cache_bytes_fast` without the design), one build of the design answers every
    ``path=None`` query; with room for the design as well, every query. The cache decides
    speed only: it never changes the plan, and a smaller one is refused
    (:func:`cache_too_small`)."""
    return 8 * n * n + 8 * probe_rows * d


def cache_bytes_fast(n: int, d: int, probe_rows: int) -> int:
    """The query cache that keeps everything of a plan of ``n`` unknowns: the design
    (``8 n d``), its factor (``8 n^2``) and the ``probe_rows`` rows (``attribute_dim + 1``
    summed over the planned modules) of the ``path=None`` probes."""
    return 8 * n * (d + n) + 8 * probe_rows * d


def unknowns_budget(d_kept: int, max_unknowns: int = JOINT_MAX_UNKNOWNS) -> int:
    """How many unknowns the fit may use, every block counted (enumerated paths, path-free
    modules and a query's extension): half of the ``d_kept`` coordinates read (so the fit
    stays well determined), at most ``max_unknowns`` (``Decoder.joint_max_unknowns``). It
    depends on nothing else (not on the query cache), so neither does the plan."""
    return min(d_kept // 2, max_unknowns)


def over_budget(n: int, n_modules: int, d_kept: int, max_unknowns: int,
                extension: Optional[str] = None) -> ValueError:
    """The error for a fit whose ``n`` unknowns exceed :func:`unknowns_budget`, naming the
    limit that binds and the cause: the registry's own blocks, or (``extension``: the
    query's description) the blocks a ``path`` query adds to a plan that fits."""
    budget = unknowns_budget(d_kept, max_unknowns)
    limits = []
    if n > d_kept // 2:
        limits.append(f"half of the {d_kept} sketch coordinates read ({d_kept // 2}; use a "
                      "larger d_sketch or erase fewer coordinates)")
    if n > max_unknowns:
        limits.append(f"sk.decoder.joint_max_unknowns ({max_unknowns}; raise it, and "
                      "cache_bytes with it)")
    if extension is None:
        where = f"for the {n_modules} registered modules"
        remedy = ("Every registered module costs at least attribute_dim + 1 unknowns, used or "
                  "not: register fewer modules on this Sketcher")
    else:
        where = f"with the blocks {extension} adds to the plan"
        remedy = ("That path is not enumerated, so its blocks (one per choice of ancestor "
                  "modules) are fitted on top of the plan: query without the path, or lower "
                  "fan_in so that the plan leaves room")
    return ValueError(
        f"method='joint' needs {n} unknowns {where}, more than the {budget} it may fit: "
        f"{'; '.join(limits)}. {remedy}; sk.decoder.joint_plan() shows the plan")


def cache_too_small(n: int, d: int, need: int, cache_bytes: int) -> ValueError:
    """The error for a plan whose Gram factor and one probe do not fit the query cache
    (:func:`cache_bytes_needed`): the plan stays what it is, so the query is refused."""
    return ValueError(
        f"method='joint' plans {n} unknowns, whose Gram factor and probes need a query cache of "
        f"{need} bytes ({need / 2**20:.1f} MiB: 8 n^2 and one module's probe, "
        f"at d = {d}); sk.decoder.cache_bytes is {cache_bytes}: raise cache_bytes to at least "
        f"{need}, or lower sk.decoder.joint_max_unknowns (or fan_in) for a smaller plan, which "
        "changes the answers (sk.decoder.joint_plan() shows the plan)")


class Block(NamedTuple):
    """One group of unknowns: the summed weighted attributes (``dim`` values) and the mass
    (one value) of the objects of ``module`` on ``path`` (``None``: any path, fitted on the
    path-free words only). ``ancestors`` are the modules of the objects on the path between
    the output and this one (depths 2..depth-1). ``start`` is its first row in the design."""

    module: str
    depth: int
    path: Optional[Tuple[int, ...]]
    ancestors: Tuple[str, ...]
    start: int
    dim: int

    @property
    def size(self) -> int:
        return self.dim + 1


def check_fan_in(fan_in: object) -> int:
    return check_int(fan_in, "fan_in", minimum=1, maximum=_MAX_FAN_IN)


def check_method(method: object, fan_in: object = None) -> str:
    """Validate a query's ``method`` and its ``fan_in`` (joint only; refused by the others),
    as every entry point (Sketcher, Repository, dask) does before reading anything."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "joint":
        check_fan_in(JOINT_FAN_IN if fan_in is None else fan_in)
    elif fan_in is not None:
        raise ValueError(f"fan_in applies to method='joint' only, not {method!r}")
    return method


def _ancestor_choices(depth: int, by_depth: Mapping[int, List[str]]) -> List[List[str]]:
    return [by_depth.get(level, []) for level in range(2, depth)]


def _path_count(depth: int, fan_in: int, by_depth: Mapping[int, List[str]]) -> int:
    """Paths of an object at ``depth``: counted, never enumerated (they grow exponentially)."""
    n = fan_in ** (depth - 1)
    for choice in _ancestor_choices(depth, by_depth):
        n *= len(choice)
    return n


def _by_depth(modules: Mapping[str, "ModuleInfo"]) -> Dict[int, List[str]]:
    by_depth: Dict[int, List[str]] = {}
    for name in sorted(modules):
        by_depth.setdefault(modules[name].depth, []).append(name)
    return by_depth


def reachable(depth: int, by_depth: Mapping[int, List[str]]) -> bool:
    """Whether any path reaches an object at ``depth``: every level above it has a module."""
    return all(by_depth.get(level) for level in range(2, depth))


def plan_blocks(modules: Mapping[str, "ModuleInfo"], fan_in: int, budget: int
                ) -> Tuple[Block, ...]:
    """The blocks of the fit, in a deterministic order (by depth, then module name). They
    depend only on the registry, ``fan_in`` and ``budget`` (:func:`unknowns_budget`).

    Levels are enumerated path by path from the top while the total unknowns, the deeper
    levels' path-free blocks included, stay within ``budget``; from the first level that does
    not fit, every module has one path-free block. The path-free blocks alone may exceed
    ``budget``: the caller checks the total (:func:`over_budget`) before building anything.
    A module below a level without registered modules has no block, enumerated or path-free
    (no path reaches it, so no sketch of this registry holds its objects).
    """
    everything = _by_depth(modules)
    by_depth = {h: names for h, names in everything.items() if reachable(h, everything)}
    # unknowns of the levels below each depth fitted path-free (their minimum)
    depths = sorted(by_depth)
    path_free = {h: sum(modules[n].attribute_dim + 1 for n in by_depth[h]) for h in depths}
    blocks: List[Block] = []
    start = 0
    enumerate_paths = True
    for depth in depths:
        names = by_depth[depth]
        if enumerate_paths:
            need = (_path_count(depth, fan_in, by_depth)
                    * sum(modules[n].attribute_dim + 1 for n in names))
            below = sum(path_free[h] for h in depths if h > depth)
            enumerate_paths = start + need + below <= budget
        for name in names:
            dim = modules[name].attribute_dim
            if not enumerate_paths:
                blocks.append(Block(name, depth, None, (), start, dim))
                start += dim + 1
                continue
            for a in product(*_ancestor_choices(depth, by_depth)):
                for p in product(range(1, fan_in + 1), repeat=depth - 1):
                    blocks.append(Block(name, depth, p, a, start, dim))
                    start += dim + 1
    return tuple(blocks)


def extra_blocks(modules: Mapping[str, "ModuleInfo"], module: str, path: Tuple[int, ...],
                 start: int) -> Tuple[Block, ...]:
    """The blocks of one (module, path) that the plan does not enumerate (a case (ii) query on
    a path-free module, or a position above ``fan_in``): one per choice of ancestor modules,
    numbered from ``start``."""
    by_depth = _by_depth(modules)
    depth = modules[module].depth
    dim = modules[module].attribute_dim
    out = []
    for a in product(*_ancestor_choices(depth, by_depth)):
        out.append(Block(module, depth, tuple(path), a, start, dim))
        start += dim + 1
    return tuple(out)


def _chain(block: Block) -> List[Letter]:
    """Letters of the P(R) factors of a path block, from the outside in."""
    assert block.path is not None
    letters: List[Letter] = []
    for level, i in enumerate(block.path, start=2):
        letters.append(position(i))
        if level < block.depth:
            letters.append(Letter("module", block.ancestors[level - 2]))
            letters.append(position(2))
        else:
            letters.append(Letter("module", block.module))
            letters.append(position(1))
    return letters


def _design_words(block: Block) -> List[Tuple[_Key, float]]:
    """The partial products a block's rows sum, as ``(key, coefficient)`` terms in the order
    they are added: a path block reads one word through ``P(R)`` factors (scaled by
    ``2^-depth``), a path-free block the words of :func:`path_free_words` through plain
    products, each counted ``N(u)`` times. Keys are (module, half, letters innermost first)."""
    if block.path is not None:
        return [((block.module, True, tuple(reversed(_chain(block)))), 0.5 ** block.depth)]
    return [((block.module, False, tuple(reversed(w))), count)
            for w, count in path_free_words(block.depth, block.module)]


def _panel_rows(blocks: Sequence[Block], d: int) -> int:
    """Rows of one batched product in :func:`design_rows`: ``_PANEL_BYTES`` of inputs, at least
    the largest block."""
    return max(max((b.size for b in blocks), default=1), _PANEL_BYTES // (8 * d))


def _parent(key: _Key) -> _Key:
    return (key[0], key[1], key[2][:-1])


class _Step(NamedTuple):
    """One batched product of :func:`design_rows`: ``letter``'s matrix (``P(R)`` if ``half``,
    else ``R``) applied to the parents of ``keys``, stacked; None: the modules' base columns.
    Then the blocks ``done`` (all of whose terms are made) are summed into the design, and the
    partial products ``drop`` are read by nothing later."""

    letter: Optional[Letter]
    half: bool
    keys: Tuple[_Key, ...]
    done: Tuple[int, ...]
    drop: Tuple[_Key, ...]


def _schedule(blocks: Sequence[Block], d: int
              ) -> Tuple[List[List[Tuple[_Key, float]]], List[_Step]]:
    """The terms of every block (:func:`_design_words`) and the steps that make them: the
    partial products level by level (letters applied), those that the same matrix multiplies
    next batched together, up to :func:`_panel_rows` rows a product. Deterministic: a pure
    function of the blocks, so :func:`design_bytes` walks the steps :func:`design_rows` runs."""
    terms = [_design_words(b) for b in blocks]
    levels: List[Dict[_Key, None]] = []
    for block_terms in terms:
        for (module, half, word), _ in block_terms:
            for length in range(len(word) + 1):
                while len(levels) <= length:
                    levels.append({})
                levels[length][(module, half, word[:length])] = None
    rows = {b.module: b.size for b in blocks}
    panel = _panel_rows(blocks, d)
    # readers of each partial product: the next level's products and the blocks' sums
    uses: Dict[_Key, int] = {}
    for level in levels[1:]:
        for key in level:
            uses[_parent(key)] = uses.get(_parent(key), 0) + 1
    waiting: Dict[_Key, List[int]] = {}
    missing = []
    for i, block_terms in enumerate(terms):
        keys = dict.fromkeys(key for key, _ in block_terms)
        missing.append(len(keys))
        for key in keys:
            uses[key] = uses.get(key, 0) + 1
            waiting.setdefault(key, []).append(i)

    def step(letter: Optional[Letter], half: bool, keys: Sequence[_Key]) -> _Step:
        drop: List[_Key] = []

        def release(key: _Key) -> None:
            uses[key] -= 1
            if uses[key] == 0:
                drop.append(key)

        done = []
        for key in keys:
            if letter is not None:
                release(_parent(key))
            for i in waiting.get(key, ()):
                missing[i] -= 1
                if missing[i] == 0:
                    done.append(i)
        for i in done:
            for key in dict.fromkeys(key for key, _ in terms[i]):
                release(key)
        return _Step(letter, half, tuple(keys), tuple(done), tuple(drop))

    steps = [step(None, False, list(levels[0]))] if levels else []
    for level in levels[1:]:
        groups: Dict[Tuple[Letter, bool], List[_Key]] = {}
        for key in level:
            groups.setdefault((key[2][-1], key[1]), []).append(key)
        for (letter, half), keys in groups.items():
            i = 0
            while i < len(keys):
                j, size = i + 1, rows[keys[i][0]]
                while j < len(keys) and size + rows[keys[j][0]] <= panel:
                    size += rows[keys[j][0]]
                    j += 1
                steps.append(step(letter, half, keys[i:j]))
                i = j
    return terms, steps


def design_rows(sketcher: "Sketcher", blocks: Sequence[Block],
                threads: Optional[int]) -> np.ndarray:
    """The design ``A`` (unknowns x d): row ``start + j`` of a block is its column for
    attribute coordinate j, row ``start + dim`` its column for the count channel, at unit
    weight (so the fitted unknowns are ``sum of w x`` and ``sum of w``).

    Every partial product (a module's base columns with the letters applied so far, innermost
    first) is made once, shared by the blocks whose paths end alike, and dropped once nothing
    reads it. The partial products that the same matrix multiplies next are one batched
    product (:func:`_schedule`): the kernels give a vector the same bits alone or in a batch,
    and a product of dozens of vectors runs nearer the kernel's throughput than many of five.
    """
    d = sketcher.d_sketch
    n = sum(b.size for b in blocks)
    first = blocks[0].start if blocks else 0
    rows = np.empty((n, d))
    dims = {b.module: b.dim for b in blocks}
    terms, steps = _schedule(blocks, d)

    def matrix(letter: Letter) -> "RandomMatrix":
        if letter.kind == POSITION:
            return sketcher.position_matrix(letter.key)
        return sketcher.module_matrix(letter.key, 0)

    def base(module: str) -> np.ndarray:
        if module not in bases:
            attr = sketcher.module_matrix(module, 1).apply_short(
                np.eye(dims[module]), num_threads=threads)
            count = sketcher.module_matrix(module, 2).apply_short(
                np.eye(1), num_threads=threads)
            bases[module] = np.concatenate([attr, count])
        return bases[module]

    memo: Dict[_Key, np.ndarray] = {}
    bases: Dict[str, np.ndarray] = {}
    try:
        for step in steps:
            if step.letter is None:
                for key in step.keys:
                    memo[key] = base(key[0])
            else:
                mat = matrix(step.letter)
                product = mat.half if step.half else mat.matvec
                parents = [memo[_parent(key)] for key in step.keys]
                stacked = parents[0] if len(parents) == 1 else np.concatenate(parents)
                out = np.empty_like(stacked)
                for at in range(0, len(out), _SLICE_ROWS):
                    out[at:at + _SLICE_ROWS] = product(stacked[at:at + _SLICE_ROWS],
                                                       num_threads=threads)
                at = 0
                for key in step.keys:
                    memo[key] = out[at:at + dims[key[0]] + 1]
                    at += dims[key[0]] + 1
                # the names would keep the stacked product and its inputs alive
                del parents, stacked, out
            for i in step.done:
                block = blocks[i]
                out = rows[block.start - first:block.start - first + block.size]
                if block.path is not None:
                    (key, scale), = terms[i]
                    np.multiply(memo[key], scale, out=out)
                else:
                    out[...] = 0.0
                    for key, count in terms[i]:
                        out += count * memo[key]
                    out *= paper_gain(1, block.depth)
                del out
            for key in step.drop:
                del memo[key]
    finally:
        memo.clear()
        bases.clear()
    return rows


def _dependent(n: int, d: int) -> ValueError:
    return ValueError(
        f"the joint read-out's {n} fitted columns are (numerically) linearly dependent on the "
        f"{d} coordinates read (a matrix column without a nonzero block, or too many unknowns "
        "for the coordinates kept): use a larger d_sketch or density, erase fewer coordinates "
        "or register fewer modules; sk.decoder.joint_plan() shows the unknowns")


def _cholesky(gram: np.ndarray, n: int, d: int) -> np.ndarray:
    """Lower Cholesky factor of ``gram``, refused when it fails or is ill-conditioned
    (pivot ratio below ``_MIN_PIVOT_RATIO``): a factor that merely exists may still turn
    rounding into an arbitrary fit."""
    try:
        factor = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        raise _dependent(n, d) from None
    diag = np.abs(np.diag(factor))
    if diag.size and diag.min() ** 2 < _MIN_PIVOT_RATIO * diag.max() ** 2:
        raise _dependent(n, d)
    return factor


def gram_factor(rows: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of the Gram matrix ``rows rows^T`` (refused when singular or
    ill-conditioned: see :func:`_cholesky`)."""
    return _cholesky(rows @ rows.T, rows.shape[0], rows.shape[1])


class Extension(NamedTuple):
    """Extra rows ``E`` appended to a factored design ``A`` (``G = L L^T``): the factor of the
    whole Gram matrix is ``[[L, 0], [C, L2]]`` with ``C^T = L^-1 A E^T`` and
    ``L2 L2^T = E E^T - C C^T``, so the base factor is reused (``n^2 e`` flops, not ``n^3``)."""

    rows: np.ndarray
    coupling: np.ndarray   # C, (e, n)
    factor: np.ndarray     # L2, (e, e)


def extend(rows: np.ndarray, factor: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``[C, L2]`` of :class:`Extension` as one array ``(e, n + e)`` (one cache entry)."""
    import scipy.linalg as sla

    ct = sla.solve_triangular(factor, rows @ extra.T, lower=True)
    l2 = _cholesky(extra @ extra.T - ct.T @ ct, rows.shape[0] + extra.shape[0], rows.shape[1])
    # the whole factor's pivots: the extension's against the base's
    diag = np.concatenate([np.abs(np.diag(factor)), np.abs(np.diag(l2))])
    if diag.min() ** 2 < _MIN_PIVOT_RATIO * diag.max() ** 2:
        raise _dependent(rows.shape[0] + extra.shape[0], rows.shape[1])
    return np.concatenate([ct.T, l2], axis=1)


def solve_normal(factor: np.ndarray, rhs: np.ndarray, ext: Optional[Extension] = None
                 ) -> np.ndarray:
    """``G^-1 rhs`` for the Gram matrix ``G`` of the design (``rhs``: (unknowns, m)), by
    triangular solves with its factor (block-wise with an extension)."""
    import scipy.linalg as sla

    n = factor.shape[0]
    z1 = sla.solve_triangular(factor, rhs[:n], lower=True)
    if ext is None:
        return sla.solve_triangular(factor.T, z1, lower=False)
    z2 = sla.solve_triangular(ext.factor, rhs[n:] - ext.coupling @ z1, lower=True)
    t2 = sla.solve_triangular(ext.factor.T, z2, lower=False)
    t1 = sla.solve_triangular(factor.T, z1 - ext.coupling.T @ t2, lower=False)
    return np.concatenate([t1, t2])


def read_out(rows: np.ndarray, factor: np.ndarray, select: np.ndarray,
             ext: Optional[Extension] = None) -> np.ndarray:
    """The joint read-out as a linear probe: ``Z = S G^-1 A`` (``(k, d_kept)``), so that the
    fitted sum ``S theta`` of a sketch ``s`` is ``Z s``. ``select`` (``S``, (k, unknowns)) picks
    the unknowns a query sums. Least squares is linear in the sketch, so a cached ``Z`` makes a
    joint query cost what a matched one costs."""
    x = solve_normal(factor, np.ascontiguousarray(select.T), ext)   # (unknowns, k)
    n = rows.shape[0]
    z = x[:n].T @ rows
    if ext is not None:
        z += x[n:].T @ ext.rows
    return z
