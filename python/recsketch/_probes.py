"""Read-outs ("probes") of a sketch and their exact gains, worked out symbolically.

An object at depth h reaches the sketch through a chain of ``P(R) = (I + R)/2`` factors, one
per position, module wrapper and tuple slot on its path (MATH.md §2.3). Expanding the chain,
the object contributes ``c * 2^-n * sum over subsequences W of the chain's letters of
W (R[M,ch] v)``. A read-out peels a set of factors, plainly (``R^T``) or by their adjoint
(``P(R)^T``), which expands into a weighted sum of words ``u``. For matrices that behave like
independent random isometries, ``E[u^T W] = I`` exactly when ``u`` and ``W`` spell the same word
and vanishes otherwise, so the gain of a read-out is

    c * 2^-n * sum_u a_u * N(u),   N(u) = number of subsequences of the chain that spell u.

This counts the coherent terms that the shared matrices R[1], R[2] create (they are tuple
positions and object slots at once, MATH.md §3.3) instead of averaging them away. A word whose
N depends on what the read-out does not know (unknown positions) or that other objects of the
same module can also spell (a leak) is dropped from the ``matched`` read-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, Hashable, List, NamedTuple, Optional, Sequence, Set, Tuple

__all__ = ["Letter", "Word", "WeightedWord", "Probe", "paper_gain", "build_probe", "position",
           "own_module", "path_free_words"]

# Kinds of letters (which matrix R a factor P(R) of a chain carries).
POSITION = "position"          # R[i], a tuple position or an object slot (R[1], R[2])
OWN_MODULE = "module"          # R[M, 0], the wrapper of the object's own module M
ANCESTOR = "ancestor"          # R[A, 0] of the (unknown) module of an ancestor at a level
UNKNOWN_POSITION = "unknown"   # the position of an ancestor at a level, when no path is given
FREE = "free"                  # an unknown position that coincides with no other matrix


class Letter(NamedTuple):
    """One factor ``P(R)`` of a chain, named by the matrix ``R`` it carries."""

    kind: str       # one of POSITION, OWN_MODULE, ANCESTOR, UNKNOWN_POSITION, FREE
    key: Hashable   # the position i, the module name, or the level


Word = Tuple[Letter, ...]


class WeightedWord(NamedTuple):
    """A term ``coef * word^T`` of a read-out."""

    word: Word
    coef: float


class Role(IntEnum):
    """Why a factor sits on the chain (MATH.md §2.3)."""

    POSITION = 0          # the object's (or an ancestor's) input position in its parent
    WRAP_ANCESTOR = 1     # an ancestor's module wrapper
    WRAP_OWN = 2          # the object's own module wrapper
    SLOT_INPUT = 3        # R[2]: the input slot of a tuple sketch
    SLOT_ATTR = 4         # R[1]: the attribute slot of a tuple sketch


class Factor(NamedTuple):
    """A factor of the chain from the sketch's root down to the object."""

    letter: Letter
    role: Role


class Peel(NamedTuple):
    """A factor a read-out removes: plainly (``R^T``) or by its adjoint (``P(R)^T``)."""

    letter: Letter
    adjoint: bool


@dataclass(frozen=True)
class Probe:
    """A linear read-out: ``sum_u coef_u * u^T s``, then ``R[module, channel]^T`` (unless the
    probe stops in tuple-sketch space), divided by ``gain`` (the gain at unit weight)."""

    words: Tuple[WeightedWord, ...]
    gain: float


def position(i: int) -> Letter:
    """The letter of ``R[i]``."""
    return Letter(POSITION, i)


def own_module(name: str) -> Letter:
    """The letter of ``R[name, 0]``."""
    return Letter(OWN_MODULE, name)


def _chain(root_depth: int, depth: int, module: str, path: Optional[Sequence[int]],
           stop: str) -> Tuple[List[Factor], float]:
    """Factors from the sketch's root down to the object, and the scalar ``c``.

    ``root_depth`` 1 is an overall sketch (the output's input tuple); ``root_depth >= 2`` is
    the tuple sketch of an object at that depth. ``stop`` is ``"channel"`` (down to the
    object's s_attr) or ``"tuple"`` (down to the object's tuple sketch).
    """
    levels = list(range(root_depth + 1, depth + 1))
    positions: List[Letter] = ([position(i) for i in path] if path is not None
                               else [Letter(UNKNOWN_POSITION, level) for level in levels])
    chain: List[Factor] = []
    c = 1.0
    if root_depth > 1:
        if depth == root_depth:
            return ([], 1.0) if stop == "tuple" else ([Factor(position(1), Role.SLOT_ATTR)], 0.25)
        chain.append(Factor(position(2), Role.SLOT_INPUT))
        c *= 0.5
    for level, p in zip(levels, positions):
        own = level == depth
        chain.append(Factor(p, Role.POSITION))
        if own:
            chain.append(Factor(own_module(module), Role.WRAP_OWN))
        else:
            chain.append(Factor(Letter(ANCESTOR, level), Role.WRAP_ANCESTOR))
            chain.append(Factor(position(2), Role.SLOT_INPUT))
            c *= 0.5
    if stop == "channel":
        chain.append(Factor(position(1), Role.SLOT_ATTR))
        c *= 0.25  # the object's tuple weight 1/2 and the 1/2 of s_attr
    return chain, c


def paper_gain(root_depth: int, depth: int, stop: str = "channel") -> float:
    """The literal gain of the paper's read-outs: ``c * 2^-n`` (``w 2^-(4h-3)`` at the root)."""
    chain, c = _chain(root_depth, depth, "M", None, stop)
    return c * 0.5 ** len(chain)


def count_spellings(chain: Sequence[Letter], word: Word) -> int:
    """Number of subsequences of ``chain`` equal to ``word`` (dynamic programming)."""
    ways = [1] + [0] * len(word)
    for letter in chain:
        for k in range(len(word), 0, -1):
            if word[k - 1] == letter:
                ways[k] += ways[k - 1]
    return ways[len(word)]


def _expand(readout: Sequence[Peel]) -> Dict[Word, float]:
    """Words of a read-out: a plain factor keeps its letter, an adjoint keeps it or not (1/2)."""
    words: Dict[Word, float] = {(): 1.0}
    for letter, adjoint in readout:
        nxt: Dict[Word, float] = {}
        for w, a in words.items():
            if adjoint:
                nxt[w] = nxt.get(w, 0.0) + 0.5 * a
                nxt[w + (letter,)] = nxt.get(w + (letter,), 0.0) + 0.5 * a
            else:
                nxt[w + (letter,)] = nxt.get(w + (letter,), 0.0) + a
        words = nxt
    return words


def _readout(chain: List[Factor], method: str, stop: str, path_known: bool) -> List[Peel]:
    """Which factors a read-out peels, and how, from the outside in."""
    out: List[Peel] = []
    for letter, role in chain:
        if role == Role.WRAP_ANCESTOR:
            continue  # the ancestors' modules are not known
        if role in (Role.POSITION, Role.SLOT_INPUT):
            if path_known:
                out.append(Peel(letter, False))
        elif role == Role.WRAP_OWN:
            # Unrolling to tuple space peels the wrapper plainly under both methods: the
            # adjoint's identity branch would let the object's own slots and its children's
            # positions (letters *below* the wrapper) spell the peeled word, a bias that no
            # gain computed on the peel alone can see (measured: +0.04 on the cat's attributes).
            if stop == "tuple":
                out.append(Peel(letter, False))
            elif method == "matched":
                out.append(Peel(letter, True))
        elif role == Role.SLOT_ATTR:
            if method == "matched":
                out.append(Peel(letter, True))
            elif path_known:
                out.append(Peel(letter, False))
    return out


def build_probe(root_depth: int, depth: int, module: str, path: Optional[Sequence[int]],
                method: str, stop: str = "channel") -> Probe:
    """The read-out of ``module`` (at ``depth``) in a sketch rooted at ``root_depth``.

    ``path`` (positions from the root down, or None) selects case (ii) or case (i) of
    Theorem 1. ``method`` is ``"paper"`` (MATH.md §3: identity words for case (i), plain
    transposes of positions and slots for case (ii), literal gain) or ``"matched"``
    (adjoints on the object's own wrapper and attribute slot, exact gain, ambiguous words
    dropped). Polynomial in the depth: every test over the alternative paths or unknown
    positions is a dynamic programme along the chain, never an enumeration of them.
    """
    chain, c = _chain(root_depth, depth, module, path, stop)
    letters = [f.letter for f in chain]
    scale = c * 0.5 ** len(chain)
    path_known = path is not None
    words = _expand(_readout(chain, method, stop, path_known))
    if method == "paper":
        return Probe(tuple(WeightedWord(u, a) for u, a in words.items()), scale)

    if path_known:
        assert path is not None
        kept = {u: a for u, a in words.items()
                if count_spellings(letters, u) > 0
                and not _spelled_on_another_path(chain, path, u)}
    else:
        kept = {}
        for u, a in words.items():
            counts = _spellings_over_unknowns(letters, u)
            if len(counts) == 1 and counts.pop() > 0:
                kept[u] = a
    if not kept:  # cannot happen for the chains above; guards future edits
        raise AssertionError("matched read-out kept no word")
    gain = scale * sum(a * count_spellings(letters, u) for u, a in kept.items())
    return Probe(tuple(WeightedWord(u, a) for u, a in kept.items()), gain)


def _spelled_on_another_path(chain: List[Factor], path: Sequence[int], word: Word) -> bool:
    """Whether some other object the module could have at the same depth (another path: each
    position drawn from the path's own positions, R[1], R[2] or a position used nowhere else)
    has a chain in which ``word`` is a subsequence (a leak into the read-out).

    A dynamic programme over the chain whose state is (letters of ``word`` matched so far,
    whether the path differs from ``path`` yet): O(len(chain) * len(word) * len(path)).
    """
    alphabet = sorted(set(path) | {1, 2})
    choices = [position(v) for v in alphabet] + [Letter(FREE, -1)]  # FREE: matches nothing
    values = alphabet + [None]
    n = len(word)
    states: Set[Tuple[int, bool]] = {(0, False)}
    slot = 0
    for letter, role in chain:
        nxt: Set[Tuple[int, bool]] = set()
        if role == Role.POSITION:
            true_value = path[slot]
            slot += 1
            for option, value in zip(choices, values):
                for j, differs in states:
                    d = differs or value != true_value
                    nxt.add((j, d))
                    if j < n and word[j] == option:
                        nxt.add((j + 1, d))
        else:
            for j, differs in states:
                nxt.add((j, differs))
                if j < n and word[j] == letter:
                    nxt.add((j + 1, differs))
        states = nxt
    return (n, True) in states


def _spellings_over_unknowns(letters: List[Letter], word: Word) -> Set[int]:
    """The set of ``count_spellings(chain, word)`` over every way the unknown positions of the
    chain can coincide with the slot matrices R[1], R[2] or with nothing in the read-out.

    A dynamic programme whose state is the vector of spelling counts of the word's prefixes
    (the vector ``count_spellings`` keeps): each unknown position branches three ways and
    equal vectors merge, so the work is bounded by the distinct vectors (at most
    prod_k (C(len(chain), k) + 1) over the word's prefixes), polynomial in the depth for the
    read-outs' words of length <= 2.
    """
    n = len(word)
    options = (position(1), position(2), Letter(FREE, -1))
    vectors: Set[Tuple[int, ...]] = {(1,) + (0,) * n}

    def step(ways: Tuple[int, ...], letter: Letter) -> Tuple[int, ...]:
        out = list(ways)
        for k in range(n, 0, -1):
            if word[k - 1] == letter:
                out[k] += out[k - 1]
        return tuple(out)

    for letter in letters:
        if letter.kind == UNKNOWN_POSITION:
            vectors = {step(v, option) for v in vectors for option in options}
        else:
            vectors = {step(v, letter) for v in vectors}
    return {v[n] for v in vectors}


def path_free_words(depth: int, module: str) -> Tuple[Tuple[Word, int], ...]:
    """Words that every object of ``module`` (at ``depth``, in an overall sketch) spells the
    same number of times whatever its path, with that number: the words of the ``matched``
    read-out of case (i). An object of weight w contributes ``w * paper_gain(1, depth) * N(u) *
    u (R[M, ch] v)`` along each of them, so the joint read-out (``joint.py``) can fit them as
    one column per coordinate when its paths are not enumerated."""
    chain, _ = _chain(1, depth, module, None, "channel")
    letters = [f.letter for f in chain]
    probe = build_probe(1, depth, module, None, "matched", "channel")
    out = []
    for u, _a in probe.words:
        counts = _spellings_over_unknowns(letters, u)
        assert len(counts) == 1  # build_probe keeps only such words
        out.append((u, counts.pop()))
    return tuple(out)
