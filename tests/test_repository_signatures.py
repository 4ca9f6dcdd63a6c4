"""Signed objects in the repository: add_graphs(..., signatures=spec) and find_signed
(repository/signed.py), against keys and sketches computed independently."""

import numpy as np
import pytest

import recsketch as rs
from recsketch.repository import Repository
from recsketch.signatures import SignatureSpec, object_keys, sign_graph
from test_signatures import _graph

D = 4095


def test_signed_objects_are_stored_with_their_keys_and_found_by_signature(tmp_path):
    spec = SignatureSpec()
    rng = np.random.default_rng(0)
    graphs = [_graph(rng) for _ in range(30)]
    with Repository.create(tmp_path / "r", rs.Sketcher(D, seed=2)) as repo:
        ids = repo.add_graphs(graphs, objects=True, signatures=spec)
        assert repo.sketcher.module_info("cat").attribute_dim == 8 + spec.dim
        fresh = rs.Sketcher(D, seed=2)
        # the stored sketches are the signed graphs' sketches (independent Sketcher)
        signed = [sign_graph(g, spec)[0] for g in graphs]
        assert repo.get(ids).tobytes() == fresh.sketch_many(signed).tobytes()
        # the stored keys are the content keys of the unsigned graphs
        soid, keys = repo._signed.of_module("cat")
        assert keys == [object_keys(g)[2] for g in graphs]
        found = 0
        for k in range(0, 30, 3):
            s = fresh.sketch(signed[k])
            m = repo.find_signed(s, "cat", 3, path=[1])
            assert m.scores[0] >= m.scores[1] >= m.scores[2]
            found += (int(m.graph_ids[0]), int(m.indices[0])) == (int(ids[k]), 2)
        assert found >= 9  # of 10, chance 1 / 30
        # deleting a graph drops its keys with its objects
        repo.delete([int(ids[0])])
        assert len(repo._signed.of_module("cat")[1]) == 29
        m = repo.find_signed(fresh.sketch(signed[0]), "cat", 30, path=[1])
        assert int(ids[0]) not in m.graph_ids.tolist() and m.graph_ids.size == 29
        with pytest.raises(ValueError, match="signs objects with"):
            repo.add_graphs(graphs[:1], objects=True, signatures=SignatureSpec(32, 4))
        with pytest.raises(ValueError, match="objects=True"):
            repo.add_graphs(graphs[:1], signatures=spec)
        with pytest.raises(TypeError, match="SignatureSpec"):
            repo.add_graphs(graphs[:1], objects=True, signatures=(64, 8))
        assert len(repo) == 29  # nothing added by the failed calls


def test_find_signed_needs_signed_objects(tmp_path):
    rng = np.random.default_rng(1)
    with Repository.create(tmp_path / "r", rs.Sketcher(D, seed=2)) as repo:
        repo.add_graphs([_graph(rng)], objects=True)
        s = repo.get(0)
        with pytest.raises(ValueError, match="no signed objects"):
            repo.find_signed(s, "cat")
    with Repository.create(tmp_path / "q", rs.Sketcher(D, seed=2)) as repo:
        repo.add_graphs([_graph(rng)], objects=True, signatures=SignatureSpec(4, 2))
        with pytest.raises(ValueError, match="k must be"):
            repo.find_signed(repo.get(0), "cat", 0)
        repo.sketcher.register_module("tiny", 2, 3)
        with pytest.raises(ValueError, match="not signed"):
            repo.find_signed(repo.get(0), "tiny")


def test_identical_objects_share_a_key_and_are_found_together(tmp_path):
    """Identification is up to content: the same object in two graphs (same module, attribute
    and inputs, recursively) has one key and one code, so find_signed scores both alike and
    orders them by object id."""
    spec = SignatureSpec()
    rng = np.random.default_rng(3)
    twin = _graph(rng)
    graphs = [twin, rs.Graph.from_dict(twin.to_dict())] + [_graph(rng) for _ in range(8)]
    assert object_keys(graphs[0]) == object_keys(graphs[1])
    with Repository.create(tmp_path / "r", rs.Sketcher(D, seed=2)) as repo:
        ids = repo.add_graphs(graphs, objects=True, signatures=spec)
        soid, keys = repo._signed.of_module("cat")
        assert keys[0] == keys[1] and len(set(keys)) == len(keys) - 1
        s = rs.Sketcher(D, seed=2).sketch(sign_graph(twin, spec)[0])
        m = repo.find_signed(s, "cat", 3, path=[1])
        assert sorted(m.graph_ids[:2].tolist()) == sorted(int(i) for i in ids[:2])
        assert m.scores[0] == m.scores[1] and m.object_ids[0] < m.object_ids[1]
