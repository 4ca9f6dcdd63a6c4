"""The counter-based generator and the stable matrix keys."""

import os
import subprocess
import sys

import reference as ref
from recsketch import _core


def test_mix64_is_splitmix64():
    # Published SplitMix64 outputs for state 0: the first three words of the sequence.
    state = 0
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    for k, want in enumerate(expected):
        assert _core.mix64((state + (k + 1) * ref.GAMMA) & ref.M64) == want


def test_keys_match_the_independent_derivation():
    for name in ["cat", "wall", "édge", "a" * 100]:
        for slot in (0, 1, 2):
            assert _core.module_key(name, slot) == ref.module_key(name, slot)
    for i in (1, 2, 3, 1000):
        assert _core.position_key(i) == ref.position_key(i)


def test_keys_are_distinct_across_roles():
    keys = {_core.module_key(n, s) for n in ["cat", "dog", "wall"] for s in (0, 1, 2)}
    keys |= {_core.position_key(i) for i in range(1, 50)}
    assert len(keys) == 9 + 49


def test_keys_are_stable_across_processes():
    # Python's own hash() of a str is salted per process; ours must not be.
    code = "from recsketch import _core; print(_core.module_key('cat', 1), _core.position_key(3))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": str(s)}).stdout for s in (1, 2)}
    assert len(runs) == 1
    assert runs.pop().split() == [str(ref.module_key("cat", 1)), str(ref.position_key(3))]
