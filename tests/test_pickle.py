"""Pickling: a Sketcher travels as its JSON, a RandomMatrix as its generating parameters, a
Graph as its objects; everything unpickled behaves bit-identically (what Dask workers rely on)."""

import multiprocessing
import pickle

import numpy as np
import pytest

import recsketch as rs
from reference import DenseMatrices, reference_sketch
from scenes import random_dag


def _graphs(seed, n, dim=None):
    rng = np.random.default_rng(seed)
    dim = {} if dim is None else dim
    return [random_dag(rng, dim=dim)[0] for _ in range(n)]


@pytest.mark.parametrize("family, d", [("block_sparse", 1008), ("orthogonal", 256)])
def test_sketcher_round_trip_is_its_json(family, d):
    sk = rs.Sketcher(d, family=family, seed=2**64 - 5, dtype="float64")
    graphs = _graphs(1, 4)
    expected = sk.sketch_many(graphs)  # registers modules and fills the caches
    blob = pickle.dumps(sk)
    back = pickle.loads(blob)
    assert back == sk and back.modules == sk.modules and back is not sk
    assert back.to_json() == sk.to_json()
    # the pickle is the JSON plus a few bytes of framing: no matrix, no cached embedding
    assert len(blob) < len(sk.to_json()) + 200
    np.testing.assert_array_equal(back.sketch_many(graphs), expected)


def test_unpickled_sketcher_keeps_the_registry_and_its_checks():
    sk = rs.Sketcher(1008, seed=7)
    sk.register_module("a", 2, 5)
    back = pickle.loads(pickle.dumps(sk))
    assert back.modules == {"a": rs.ModuleInfo(2, 5)}
    with pytest.raises(ValueError, match="registered at depth 2"):
        back.register_module("a", 3, 5)


def test_pickle_size_does_not_grow_with_the_caches():
    sk = rs.Sketcher(16371, seed=3)
    small = len(pickle.dumps(sk))
    for i in range(1, 9):
        sk.position_matrix(i)
    sk.sketch_many(_graphs(2, 3))
    # the registry grows (a few modules); the matrices and embeddings do not travel
    assert len(pickle.dumps(sk)) < small + 400


def _sketch_in_child(blob, graphs_blob, queue):
    sk = pickle.loads(blob)
    queue.put(sk.sketch_many(pickle.loads(graphs_blob), num_threads=1).tobytes())


def test_bit_identical_in_another_process():
    sk = rs.Sketcher(1008, seed=11)
    graphs = _graphs(3, 5)
    expected = sk.sketch_many(graphs, num_threads=2)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    queue = ctx.Queue()
    p = ctx.Process(target=_sketch_in_child,
                    args=(pickle.dumps(rs.Sketcher(1008, seed=11)), pickle.dumps(graphs), queue))
    p.start()
    got = queue.get(timeout=120)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert got == expected.tobytes()


@pytest.mark.parametrize("family, d, b, q", [("block_sparse", 360, 36, 0.3),
                                              ("orthogonal", 64, 0, 0.0)])
def test_random_matrix_round_trip_against_the_reference_generator(family, d, b, q):
    kwargs = dict(block_size=b, density=q) if family == "block_sparse" else {}
    sk = rs.Sketcher(d, family=family, seed=123456789, **kwargs)
    mats = DenseMatrices(family, d, 123456789, b, q)  # independent generator (tests/reference.py)
    for R, dense in ((sk.module_matrix("cat", 1), mats.module("cat", 1)),
                     (sk.position_matrix(3), mats.position(3))):
        blob = pickle.dumps(R)
        assert len(blob) < 400
        back = pickle.loads(blob)
        assert (back.role, back.key, back.seed, back.family, back.shape) == \
            (R.role, R.key, R.seed, R.family, R.shape)
        np.testing.assert_allclose(back.to_dense(), dense, rtol=0, atol=1e-12)
        x = np.random.default_rng(0).random((3, d))
        np.testing.assert_array_equal(back.matvec(x), R.matvec(x))
        np.testing.assert_array_equal(back.rmatvec(x), R.rmatvec(x))


def test_graph_round_trip_structure_and_read_only_attributes():
    g = _graphs(4, 1)[0]
    back = pickle.loads(pickle.dumps(g))
    assert back.modules == g.modules and back.to_dict() == g.to_dict()
    assert [w for _, w in back.output] == [w for _, w in g.output]
    for h, hb in zip(g, back):
        np.testing.assert_array_equal(back.attributes(hb), g.attributes(h))
        assert back.attributes(hb).dtype == np.float64
        assert not back.attributes(hb).flags.writeable
        with pytest.raises(ValueError):
            back.attributes(hb)[0] = 0.5
    # handles of the unpickled graph belong to it: building on top of it still works
    top = back.add("extra", [1.0], [(next(iter(back)), 0.5)])
    assert top.graph is back and len(back) == len(g) + 1


def test_graph_pickle_sketches_like_the_reference():
    rng = np.random.default_rng(5)
    g, (objects, output) = random_dag(rng)
    back = pickle.loads(pickle.dumps(g))
    sk = rs.Sketcher(360, block_size=36, density=0.3, seed=9, dtype="float64")
    ref, _ = reference_sketch(objects, output, DenseMatrices("block_sparse", 360, 9, 36, 0.3))
    np.testing.assert_allclose(sk.sketch(back), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(sk.sketch(back), sk.sketch(g))


def test_graph_pickle_is_compact_and_handles_edge_cases():
    g = rs.Graph()
    leaves = [g.add("leaf", np.full(64, 0.125)) for _ in range(200)]
    g.set_output([(h, 1 / 200) for h in leaves])
    # 200 * 64 float64 values = 102400 bytes, plus a few dozen bytes per object
    assert len(pickle.dumps(g)) < 102400 + 200 * 60
    empty = pickle.loads(pickle.dumps(rs.Graph()))
    assert len(empty) == 0 and empty.output is None
    handle = pickle.loads(pickle.dumps(leaves[3]))
    assert handle.index == 3 and handle.graph.modules == g.modules


def test_a_pickled_sketcher_keeps_its_query_cache_budget():
    sk = rs.Sketcher(1008, query_cache_bytes=1234)
    back = pickle.loads(pickle.dumps(sk))
    assert back.decoder.cache_bytes == 1234
