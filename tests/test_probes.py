"""The symbolic read-outs: gains of the paper's probes, and the spelling counts behind the
matched probes, checked against brute-force enumeration of the (I + R)/2 expansion."""

import itertools
import sys

import pytest

from recsketch import _probes
from recsketch._probes import build_probe, count_spellings, own_module, paper_gain, position


@pytest.mark.parametrize("h", [2, 3, 4])
def test_paper_gain_is_w_times_2_to_minus_4h_plus_3(h):
    assert paper_gain(1, h) == 2.0 ** -(4 * h - 3)
    assert build_probe(1, h, "M", None, "paper").gain == 2.0 ** -(4 * h - 3)
    # case (ii): one word, positions and slots on their R branch, same gain (MATH.md §3.2)
    probe = build_probe(1, h, "M", [3] * (h - 1), "paper")
    assert len(probe.words) == 1 and probe.gain == 2.0 ** -(4 * h - 3)


def test_tuple_space_gain_matches_math_md():
    # t(theta) = (4 / w) R[M,0]^T R[i]^T s at depth 2: gain 1/4 (MATH.md §3.3)
    assert build_probe(1, 2, "M", [2], "paper", "tuple").gain == 0.25
    assert build_probe(1, 3, "M", [1, 2], "paper", "tuple").gain == 0.25 / 16
    # attributes from a tuple sketch: x = 8 R[M,1]^T t
    assert build_probe(2, 2, "M", None, "paper").gain == 1 / 8


def brute_force_spellings(chain, word):
    return sum(1 for idx in itertools.combinations(range(len(chain)), len(word))
               if tuple(chain[i] for i in idx) == tuple(word))


@pytest.mark.parametrize("chain,word", [
    ("abcabc", "abc"), ("aaaa", "aa"), ("abab", ""), ("abcd", "db"), ("aabbaa", "aba"),
])
def test_count_spellings_matches_enumeration(chain, word):
    assert count_spellings(list(chain), tuple(word)) == brute_force_spellings(chain, word)


@pytest.mark.parametrize("pos_", [1, 2, 3])
def test_matched_gain_is_the_sum_of_spellings_of_the_kept_words(pos_):
    # Depth 2, chain (R[pos], R[cat,0], R[1]), c = 1/4: gain = c 2^-3 sum_u a_u N(u), with N
    # counted by brute force. At position 1, R[1] is position and slot at once.
    probe = build_probe(1, 2, "cat", [pos_], "matched")
    chain = [position(pos_), own_module("cat"), position(1)]
    expect = sum(a * brute_force_spellings(chain, u) for u, a in probe.words) / 4 / 8
    assert probe.gain == pytest.approx(expect)
    if pos_ == 3:  # no coincidence: the four words of the two adjoints, each spelled once
        assert len(probe.words) == 4 and probe.gain == pytest.approx(1 / 32)


def test_matched_case_i_drops_words_unknown_positions_could_spell():
    probe = build_probe(1, 2, "cat", None, "matched")
    words = {u for u, _ in probe.words}
    # (R1,) alone could come from the unknown position being 1: dropped
    assert (position(1),) not in words
    assert () in words and (own_module("cat"),) in words
    assert (own_module("cat"), position(1)) in words
    assert probe.gain == pytest.approx(3 / 4 * 2.0 ** -5)


# -- the enumerating construction of Round 1, kept verbatim (letters as plain tuples) as the
# independent oracle of the polynomial one: it enumerates every alternative path and every
# assignment of the unknown positions, exponential in the depth.

def _old_count(chain, word):
    ways = [1] + [0] * len(word)
    for letter in chain:
        for k in range(len(word), 0, -1):
            if word[k - 1] == letter:
                ways[k] += ways[k - 1]
    return ways[len(word)]


def _old_pos(i):
    return ("P", i)


def _old_chain(root_depth, depth, module, path, stop):
    levels = list(range(root_depth + 1, depth + 1))
    positions = ([_old_pos(i) for i in path] if path is not None
                 else [("U", level) for level in levels])
    chain, c = [], 1.0
    if root_depth > 1:
        if depth == root_depth:
            return ([], 1.0) if stop == "tuple" else ([(_old_pos(1), 4)], 0.25)
        chain.append((_old_pos(2), 3))
        c *= 0.5
    for level, p in zip(levels, positions):
        own = level == depth
        chain.append((p, 0))
        chain.append((("M", module) if own else ("A", level), 2 if own else 1))
        if not own:
            chain.append((_old_pos(2), 3))
            c *= 0.5
    if stop == "channel":
        chain.append((_old_pos(1), 4))
        c *= 0.25
    return chain, c


def _old_expand(readout):
    words = {(): 1.0}
    for letter, adjoint in readout:
        nxt = {}
        for w, a in words.items():
            if adjoint:
                nxt[w] = nxt.get(w, 0.0) + 0.5 * a
                nxt[w + (letter,)] = nxt.get(w + (letter,), 0.0) + 0.5 * a
            else:
                nxt[w + (letter,)] = nxt.get(w + (letter,), 0.0) + a
        words = nxt
    return words


def _old_readout(chain, method, stop, path_known):
    out = []
    for letter, role in chain:
        if role == 1:
            continue
        if role in (0, 3):
            if path_known:
                out.append((letter, False))
        elif role == 2:
            if stop == "tuple":
                out.append((letter, False))
            elif method == "matched":
                out.append((letter, True))
        elif role == 4:
            if method == "matched":
                out.append((letter, True))
            elif path_known:
                out.append((letter, False))
    return out


def old_build_probe(root_depth, depth, module, path, method, stop="channel"):
    chain, c = _old_chain(root_depth, depth, module, path, stop)
    letters = [letter for letter, _ in chain]
    scale = c * 0.5 ** len(chain)
    words = _old_expand(_old_readout(chain, method, stop, path is not None))
    if method == "paper":
        return tuple(words.items()), scale
    if path is not None:
        alphabet = sorted(set(path) | {1, 2}) + [0]
        alternatives = []
        for alt in itertools.product(alphabet, repeat=len(path)):
            if tuple(alt) != tuple(path):
                ch, _ = _old_chain(root_depth, depth, module, [a if a else -1 for a in alt], stop)
                alternatives.append([letter for letter, _ in ch])
        kept = {u: a for u, a in words.items()
                if _old_count(letters, u) > 0
                and all(_old_count(alt, u) == 0 for alt in alternatives)}
    else:
        unknown = [k for k, letter in enumerate(letters) if letter[0] == "U"]
        assignments = []
        for values in itertools.product((_old_pos(1), _old_pos(2), None), repeat=len(unknown)):
            ch = list(letters)
            for k, v in zip(unknown, values):
                ch[k] = v if v is not None else ("F", k)
            assignments.append(ch)
        kept = {}
        for u, a in words.items():
            counts = {_old_count(ch, u) for ch in assignments}
            if len(counts) == 1 and counts.pop() > 0:
                kept[u] = a
    gain = scale * sum(a * _old_count(letters, u) for u, a in kept.items())
    return tuple(kept.items()), gain


_OLD_KIND = {"position": "P", "module": "M"}


def as_old(word):
    return tuple((_OLD_KIND[letter.kind], letter.key) for letter in word)


def probe_cases():
    for root in (1, 2, 3):
        for depth in range(max(root, 2), root + 5):
            levels = depth - max(root, 1)
            paths = [None] + [list(p) for p in itertools.product((1, 2, 3), repeat=levels)
                              if levels <= 3 or len(set(p)) <= 2 and p[0] != 2]
            for path in paths:
                for method in ("matched", "paper"):
                    for stop in ("channel", "tuple"):
                        if stop == "tuple" and path is None:
                            continue
                        yield root, depth, path, method, stop


def test_polynomial_probes_equal_the_enumerating_construction():
    n = 0
    for root, depth, path, method, stop in probe_cases():
        words, gain = old_build_probe(root, depth, "cat", path, method, stop)
        probe = build_probe(root, depth, "cat", path, method, stop)
        assert [(as_old(u), a) for u, a in probe.words] == list(words), (root, depth, path)
        assert probe.gain == gain, (root, depth, path, method, stop)
        n += 1
    assert n > 500


class _LineBudget:
    """Counts the Python lines executed inside _probes.py (``line`` events of sys.settrace) and
    stops the build past a budget: a machine-independent measure of work (no wall clock) that,
    unlike counting calls, also sees an exponential loop written inline in one function."""

    def __init__(self, budget, filename=None):
        self.budget, self.lines = budget, 0
        self.filename = filename or _probes.__file__

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != self.filename:
            return None  # do not trace lines of other files
        if event == "line":
            self.lines += 1
            if self.lines > self.budget:
                raise RuntimeError(f"probe building ran more than {self.budget} lines")
        return self

    def run(self, fn, *args):
        sys.settrace(self)
        try:
            return fn(*args)
        finally:
            sys.settrace(None)


def _lines(build, depth, path_known, budget=2_000_000, filename=None):
    counter = _LineBudget(budget, filename)
    counter.run(build, 1, depth, "cat", [3] * (depth - 1) if path_known else None, "matched")
    return counter.lines


@pytest.mark.parametrize("path_known", [True, False])
def test_probe_building_is_polynomial_in_the_depth(path_known):
    # Depth 8 with a known path took 4.1 s and depth 10 over 50 s (3^9 or 4^9 chains); the
    # work must now grow polynomially: lines at depth 16 within a small multiple of depth 4's.
    small, large = _lines(build_probe, 4, path_known), _lines(build_probe, 16, path_known)
    assert large <= 64 * small, (small, large)  # at most cubic: (16 / 4)^3


@pytest.mark.parametrize("path_known", [True, False])
def test_the_line_budget_catches_the_exponential_construction(path_known):
    # The same criterion on the enumerating construction above (the oracle, exponential in the
    # depth) must break the budget, so the test above would catch a regression to it; the
    # budget stops the oracle early.
    small = _lines(old_build_probe, 4, path_known, filename=__file__)
    with pytest.raises(RuntimeError, match="more than"):
        _lines(old_build_probe, 16, path_known, budget=64 * small, filename=__file__)
