"""Graph.combine, the float32 weight tolerance, rs.Repository export, and `import recsketch`
without torch (issue 10; issue 12 defects 7 and 8). No torch needed here."""

import subprocess
import sys

import numpy as np
import pytest

import recsketch as rs


def unit(rng, m):
    x = rng.random(m) + 0.01
    return x / np.linalg.norm(x)


def room(rng, cats):
    g = rs.Graph()
    e = [g.add("edge", unit(rng, 8)) for _ in range(2)]
    top = [(g.add("cat", unit(rng, 4), [(e[0], 0.5), (e[1], 0.5)]), 1.0 / (cats + 1))
           for _ in range(cats)]
    wall = g.add("wall", unit(rng, 3))
    g.set_output(top + [(wall, 1.0 / (cats + 1))])
    return g


def test_combine_structure_matches_hand_built_scene():
    rng = np.random.default_rng(0)
    a, b = room(rng, 1), room(rng, 2)
    scene = rs.Graph.combine([a, b], weights=[0.25, 0.75])
    da, db, ds = a.to_dict(), b.to_dict(), scene.to_dict()
    na = len(da["objects"])
    assert len(ds["objects"]) == na + len(db["objects"])
    for k, obj in enumerate(db["objects"]):
        got = ds["objects"][na + k]
        assert got["module"] == obj["module"] and got["attributes"] == obj["attributes"]
        assert got["inputs"] == [[c + na, w] for c, w in obj["inputs"]]
    want = [[k, w * 0.25] for k, w in da["output"]] + [[k + na, w * 0.75] for k, w in db["output"]]
    assert [k for k, _ in ds["output"]] == [k for k, _ in want]
    assert [w for _, w in ds["output"]] == pytest.approx([w for _, w in want], rel=1e-15)
    assert a.to_dict() == da and b.to_dict() == db          # inputs untouched


def test_combine_default_weights_and_counts():
    rng = np.random.default_rng(1)
    graphs = [room(rng, c) for c in (1, 2, 3, 1)]
    scene = rs.Graph.combine(graphs)
    total = sum(w for _, w in scene.output)
    assert total == pytest.approx(1.0)
    sk = rs.Sketcher(16384, family="orthogonal", seed=3)
    s = sk.sketch(scene)
    # every cat object's effective weight is 1/4 * 1/(cats+1): the mass is their sum
    truth = sum(c / (4 * (c + 1)) for c in (1, 2, 3, 1))
    assert sk.mass(s, "cat") == pytest.approx(truth, abs=0.05)


def test_combine_errors():
    rng = np.random.default_rng(2)
    a = room(rng, 1)
    with pytest.raises(ValueError, match="no output"):
        rs.Graph.combine([a, rs.Graph()])
    with pytest.raises(ValueError, match="at least one"):
        rs.Graph.combine([])
    with pytest.raises(TypeError):
        rs.Graph.combine(a)
    with pytest.raises(ValueError, match="more than 1"):
        rs.Graph.combine([a, a], weights=[0.6, 0.6])
    with pytest.raises(ValueError, match="2 graphs"):
        rs.Graph.combine([a, a], weights=[0.5])
    # "edge" at depth 2 here and at depth 3 in the room: refused, naming the module
    g = rs.Graph()
    g.set_output([(g.add("edge", unit(rng, 8)), 1.0)])
    with pytest.raises(ValueError, match="'edge'"):
        rs.Graph.combine([a, g])


def test_float32_renormalised_weights_are_accepted_and_renormalised():
    # the case: weights renormalised in float32 sum to 1.0000000388 in float64
    rng = np.random.default_rng(3)
    raw = rng.random(7).astype(np.float32)
    w32 = raw / raw.sum(dtype=np.float32)
    total = float(np.sum(w32.astype(np.float64)))
    g = rs.Graph()
    kids = [g.add("leaf", unit(rng, 4)) for _ in range(7)]
    top = g.add("top", unit(rng, 4), list(zip(kids, w32.tolist())))
    g.set_output([(top, 1.0)])
    got = [w for _, w in g.inputs(top)]
    assert sum(got) <= 1.0
    assert got == pytest.approx((w32.astype(np.float64) / max(total, 1.0)).tolist(), rel=1e-12)
    # a single weight a hair above 1, and an output sum within 1e-6: accepted
    g2 = rs.Graph()
    h = g2.add("x", unit(rng, 3))
    g2.set_output([(h, 1.0 + 5e-7)])
    assert g2.output[0][1] <= 1.0
    # beyond the tolerance: still refused
    g3 = rs.Graph()
    h1, h2 = g3.add("x", unit(rng, 3)), g3.add("x", unit(rng, 3))
    with pytest.raises(ValueError, match="more than 1"):
        g3.set_output([(h1, 0.5), (h2, 0.5 + 3e-6)])


def test_repository_is_exported():
    assert rs.Repository is __import__("recsketch.repository").repository.Repository
    assert "Repository" in rs.__all__


BLOCK_TORCH = """
import sys
sys.modules["torch"] = None          # any `import torch` now raises ImportError
import recsketch as rs
assert not any(m == "recsketch.torch" for m in sys.modules)
g = rs.Graph(); g.set_output([(g.add("a", [1.0]), 1.0)])
rs.Sketcher(64, family="orthogonal").sketch(g)
try:
    import recsketch.torch
except ImportError as exc:
    assert "recsketch[torch]" in str(exc), exc
else:
    raise SystemExit("recsketch.torch imported without torch")
print("ok")
"""


def test_import_recsketch_without_torch():
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
