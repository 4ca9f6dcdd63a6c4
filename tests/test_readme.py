"""The README's "Concepts in five minutes" code runs as written, and its table's queries, run
as the README names them, print the figures the README shows (the code is seeded: the figures
are reproducible to the printed digit)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def concepts_code():
    text = README.read_text()
    section = text.split("## Concepts in five minutes", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def table_row(call):
    """The README table row whose call column contains ``call``."""
    text = README.read_text().split("## Concepts in five minutes", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("|") and call in line]
    assert len(rows) == 1, f"no single README table row with {call!r}"
    return rows[0]


def test_concepts_example_runs_and_its_queries_answer():
    env = {}
    exec(compile(concepts_code(), "README.md", "exec"), env)
    s, sk, g, cat, wall2 = env["s"], env["sk"], env["g"], env["cat"], env["wall2"]
    assert s.shape == (65520,) and s.dtype == np.float32
    # The table's figures, recomputed from the code above and printed the way the README prints
    # them: each must be the figure the README shows (the claim is the printed number).
    def linf(est, handle):
        return np.abs(est - g.attributes(handle)).max()

    import recsketch as rs

    est = sk.attributes(s, "cat")
    walls = (g.attributes(env["wall1"]) + g.attributes(wall2)) / 2
    t = sk.subsketch(s, [3], "cat", weight=0.5)
    figures = {
        'sk.attributes(s, "cat", weight=0.5)`': "l-inf error %.3f"
        % linf(sk.attributes(s, "cat", weight=0.5), cat),
        'sk.attributes(s, "cat")`': "`.weight` %.3f (0.5)" % est.weight,
        'path=[2], weight=0.25)': "l-inf error %.3f"
        % linf(sk.attributes(s, "wall", path=[2], weight=0.25), wall2),
        'sk.count(s, "wall", 0.25)': "%.2f (2), %.2f (2)"
        % (sk.count(s, "wall", 0.25), sk.count(s, "edge", 0.25)),
        'sk.mean_attributes(s, "wall")': "l-inf error %.3f"
        % np.abs(sk.mean_attributes(s, "wall") - walls).max(),
        'sk.subsketch(s, [3], "cat", weight=0.5)': '`sk.count(t, "edge", 0.5)` %.2f (2)'
        % sk.count(t, "edge", 0.5),
        'rs.erase(s, 0.25)': "l-inf error %.3f"
        % linf(sk.attributes(rs.erase(s, 0.25), "cat", weight=0.5), cat),
        'method="paper")': "l-inf error %.3f"
        % linf(sk.attributes(s, "cat", weight=0.5, method="paper"), cat),
    }
    for call, printed in figures.items():
        row = table_row(call)
        assert printed in row, (call, printed, row)
    assert abs(np.linalg.norm(est.attributes) - 1.0) < 1e-9
