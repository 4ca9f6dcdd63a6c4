"""The Sketcher's configuration contract: attributes, JSON round trip, matrix identity."""

import json

import numpy as np
import pytest

import recsketch as rs


def test_attributes_and_repr():
    sk = rs.Sketcher(1008, block_size=42, density=0.25, seed=17, dtype="float64")
    assert (sk.d_sketch, sk.family, sk.block_size, sk.density, sk.seed) == (1008, "block_sparse", 42, 0.25, 17)
    assert sk.dtype == np.float64
    assert "d_sketch=1008" in repr(sk)
    so = rs.Sketcher(2048, family="orthogonal")
    assert so.block_size is None and so.density is None


@pytest.mark.parametrize("sk", [
    rs.Sketcher(1008, block_size=42, density=0.1 + 0.2, seed=2**64 - 1),
    rs.Sketcher(4050),
    rs.Sketcher(2048, family="orthogonal", seed=3, dtype=np.float64),
])
def test_json_round_trip(sk):
    text = sk.to_json()
    back = rs.Sketcher.from_json(text)
    assert back == sk and back.to_json() == text
    assert back.density == sk.density  # floats survive exactly
    assert json.loads(text)["format"] == "recsketch.Sketcher"


def test_from_json_rejects_foreign_or_broken_input():
    with pytest.raises(ValueError, match="invalid Sketcher JSON"):
        rs.Sketcher.from_json("{not json")
    with pytest.raises(ValueError, match="not a Sketcher"):
        rs.Sketcher.from_json('{"format": "other"}')
    good = json.loads(rs.Sketcher(1008, block_size=42).to_json())
    with pytest.raises(ValueError, match="format_version"):
        rs.Sketcher.from_json(json.dumps({**good, "format_version": 99}))
    del good["seed"]
    with pytest.raises(ValueError, match="seed"):
        rs.Sketcher.from_json(json.dumps(good))


def test_matrices_are_cached_and_describe_themselves():
    sk = rs.Sketcher(1008, block_size=42)
    R = sk.module_matrix("cat", 1)
    assert sk.module_matrix("cat", 1) is R
    assert R.role == ("module", "cat", 1) and R.family == "block_sparse" and R.shape == (1008, 1008)
    assert sk.position_matrix(4).role == ("position", 4)
    assert R.key == rs._core.module_key("cat", 1) and R.seed == 0
    with pytest.raises(ValueError, match="block_sparse family only"):
        rs.Sketcher(1024, family="orthogonal").position_matrix(1).column_block_counts()


def test_info_command(capsys):
    from recsketch.__main__ import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recsketch ") and "OpenMP" in out and "block_sparse" in out
    info = rs.build_info()
    assert isinstance(info["openmp"], bool) and info["max_threads"] >= 1


def test_registry_rollback_unregisters_only_what_the_failed_block_registered():
    sk = rs.Sketcher(256, family="orthogonal", seed=1)
    sk.register_module("kept", 2, 3)
    g = rs.Graph()
    g.set_output([(g.add("new", np.ones(4) / 2.0), 1.0)])
    try:
        with sk.registry_rollback():
            sk.sketch(g)
            sk.register_module("also_new", 3, 2)
            raise KeyError("the caller fails after sketching")
    except KeyError:
        pass
    assert set(sk.modules) == {"kept"}
    with sk.registry_rollback():             # no error: the registrations stay
        sk.sketch(g)
    assert set(sk.modules) == {"kept", "new"}
