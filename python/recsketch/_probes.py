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

import itertools
from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

__all__ = ["Probe", "paper_gain", "build_probe"]

Letter = Tuple[Hashable, ...]
Word = Tuple[Letter, ...]

# Roles of the factors of a chain.
_POS, _WRAP_ANCESTOR, _WRAP_OWN, _SLOT_INPUT, _SLOT_ATTR = range(5)


@dataclass(frozen=True)
class Probe:
    """A linear read-out: ``sum_u coef_u * u^T s``, then ``R[module, channel]^T`` (unless the
    probe stops in tuple-sketch space), divided by ``gain`` (the gain at unit weight)."""

    words: Tuple[Tuple[Word, float], ...]
    gain: float


def pos(i: int) -> Letter:
    return ("P", i)


def _chain(root_depth: int, depth: int, module: str, path: Optional[Sequence[int]],
           stop: str) -> Tuple[List[Tuple[Letter, int]], float]:
    """Letters (with roles) from the sketch's root down to the object, and the scalar ``c``.

    ``root_depth`` 1 is an overall sketch (the output's input tuple); ``root_depth >= 2`` is
    the tuple sketch of an object at that depth. ``stop`` is ``"channel"`` (down to the
    object's s_attr) or ``"tuple"`` (down to the object's tuple sketch).
    """
    levels = list(range(root_depth + 1, depth + 1))
    positions: List[Letter] = ([pos(i) for i in path] if path is not None
                               else [("U", level) for level in levels])
    chain: List[Tuple[Letter, int]] = []
    c = 1.0
    if root_depth > 1:
        if depth == root_depth:
            return ([], 1.0) if stop == "tuple" else ([(pos(1), _SLOT_ATTR)], 0.25)
        chain.append((pos(2), _SLOT_INPUT))
        c *= 0.5
    for level, p in zip(levels, positions):
        own = level == depth
        chain.append((p, _POS))
        chain.append((("M", module) if own else ("A", level), _WRAP_OWN if own else _WRAP_ANCESTOR))
        if not own:
            chain.append((pos(2), _SLOT_INPUT))
            c *= 0.5
    if stop == "channel":
        chain.append((pos(1), _SLOT_ATTR))
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


def _expand(readout: Sequence[Tuple[Letter, bool]]) -> Dict[Word, float]:
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


def _readout(chain: List[Tuple[Letter, int]], method: str, stop: str,
             path_known: bool) -> List[Tuple[Letter, bool]]:
    """Which factors a read-out peels, and how: (letter, adjoint?) from the outside in."""
    out: List[Tuple[Letter, bool]] = []
    for letter, role in chain:
        if role == _WRAP_ANCESTOR:
            continue  # the ancestors' modules are not known
        if role == _POS:
            if path_known:
                out.append((letter, False))
        elif role == _SLOT_INPUT:
            if path_known:
                out.append((letter, False))
        elif role == _WRAP_OWN:
            # Unrolling to tuple space peels the wrapper plainly under both methods: the
            # adjoint's identity branch would let the object's own slots and its children's
            # positions (letters *below* the wrapper) spell the peeled word, a bias that no
            # gain computed on the peel alone can see (measured: +0.04 on the cat's attributes).
            if stop == "tuple":
                out.append((letter, False))
            elif method == "matched":
                out.append((letter, True))
        elif role == _SLOT_ATTR:
            if method == "matched":
                out.append((letter, True))
            elif path_known:
                out.append((letter, False))
    return out


def build_probe(root_depth: int, depth: int, module: str, path: Optional[Sequence[int]],
                method: str, stop: str = "channel") -> Probe:
    """The read-out of ``module`` (at ``depth``) in a sketch rooted at ``root_depth``.

    ``path`` (positions from the root down, or None) selects case (ii) or case (i) of
    Theorem 1. ``method`` is ``"paper"`` (MATH.md §3: identity words for case (i), plain
    transposes of positions and slots for case (ii), literal gain) or ``"matched"``
    (adjoints on the object's own wrapper and attribute slot, exact gain, ambiguous words
    dropped).
    """
    chain, c = _chain(root_depth, depth, module, path, stop)
    letters = [letter for letter, _ in chain]
    scale = c * 0.5 ** len(chain)
    path_known = path is not None
    if method == "paper":
        words = _expand(_readout(chain, method, stop, path_known))
        return Probe(tuple(words.items()), scale)

    words = _expand(_readout(chain, method, stop, path_known))
    if path_known:
        alternatives = _alternative_chains(root_depth, depth, module, path, stop)
        kept = {u: a for u, a in words.items()
                if count_spellings(letters, u) > 0
                and all(count_spellings(alt, u) == 0 for alt in alternatives)}
    else:
        assignments = _assignments(letters)
        kept = {}
        for u, a in words.items():
            counts = {count_spellings(chain_k, u) for chain_k in assignments}
            if len(counts) == 1 and counts.pop() > 0:
                kept[u] = a
    if not kept:  # cannot happen for the chains above; guards future edits
        raise AssertionError("matched read-out kept no word")
    gain = scale * sum(a * count_spellings(letters, u) for u, a in kept.items())
    return Probe(tuple(kept.items()), gain)


def _assignments(letters: List[Letter]) -> List[List[Letter]]:
    """The chain under every way the unknown positions can coincide with the slot matrices
    R[1], R[2] or with nothing in the read-out."""
    unknown = [k for k, letter in enumerate(letters) if letter[0] == "U"]
    out = []
    for values in itertools.product((pos(1), pos(2), None), repeat=len(unknown)):
        chain = list(letters)
        for k, v in zip(unknown, values):
            chain[k] = v if v is not None else ("F", k)
        out.append(chain)
    return out


def _alternative_chains(root_depth: int, depth: int, module: str, path: Sequence[int],
                        stop: str) -> List[List[Letter]]:
    """Chains of the other objects the module could have at the same depth (other paths)."""
    alphabet = sorted(set(path) | {1, 2}) + [0]  # 0 stands for a position used nowhere else
    out = []
    for alt in itertools.product(alphabet, repeat=len(path)):
        if tuple(alt) == tuple(path):
            continue
        chain, _ = _chain(root_depth, depth, module, [a if a else -1 for a in alt], stop)
        out.append([letter for letter, _ in chain])
    return out
