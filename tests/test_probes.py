"""The symbolic read-outs: gains of the paper's probes, and the spelling counts behind the
matched probes, checked against brute-force enumeration of the (I + R)/2 expansion."""

import itertools

import pytest

from recsketch._probes import build_probe, count_spellings, paper_gain


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


@pytest.mark.parametrize("position", [1, 2, 3])
def test_matched_gain_is_the_sum_of_spellings_of_the_kept_words(position):
    # Depth 2, chain (R[pos], R[cat,0], R[1]), c = 1/4: gain = c 2^-3 sum_u a_u N(u), with N
    # counted by brute force. At position 1, R[1] is position and slot at once.
    probe = build_probe(1, 2, "cat", [position], "matched")
    chain = [("P", position), ("M", "cat"), ("P", 1)]
    expect = sum(a * brute_force_spellings(chain, u) for u, a in probe.words) / 4 / 8
    assert probe.gain == pytest.approx(expect)
    if position == 3:  # no coincidence: the four words of the two adjoints, each spelled once
        assert len(probe.words) == 4 and probe.gain == pytest.approx(1 / 32)


def test_matched_case_i_drops_words_unknown_positions_could_spell():
    probe = build_probe(1, 2, "cat", None, "matched")
    words = {u for u, _ in probe.words}
    # (R1,) alone could come from the unknown position being 1: dropped
    assert (("P", 1),) not in words
    assert () in words and (("M", "cat"),) in words and (("M", "cat"), ("P", 1)) in words
    assert probe.gain == pytest.approx(3 / 4 * 2.0 ** -5)
