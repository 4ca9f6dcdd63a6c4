"""The README's "Concepts in five minutes" code runs as written, and its table's queries are
the calls the README names (their printed figures are measurements, not asserted here)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def concepts_code():
    text = README.read_text()
    section = text.split("## Concepts in five minutes", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_concepts_example_runs_and_its_queries_answer():
    env = {}
    exec(compile(concepts_code(), "README.md", "exec"), env)
    s, sk, g, cat = env["s"], env["sk"], env["g"], env["cat"]
    assert s.shape == (65520,) and s.dtype == np.float32
    # the table's first row, at the README's d: a real recovery, far from a random guess
    err = np.abs(sk.attributes(s, "cat", weight=0.5) - g.attributes(cat)).max()
    assert err < 0.2
    assert round(sk.count(s, "wall", 0.25)) == 2
