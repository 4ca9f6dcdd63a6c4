"""The sketch of Section 3.3 against an independent NumPy recursion, and its contracts."""

import numpy as np
import pytest

import recsketch as rs
from reference import DenseMatrices, reference_sketch
from scenes import random_dag, room

CONFIGS = [
    # (sketcher kwargs, reference matrices)
    (dict(d_sketch=256, family="orthogonal", seed=5, dtype="float64"),
     lambda: DenseMatrices("orthogonal", 256, 5)),
    (dict(d_sketch=360, block_size=36, density=0.3, seed=11, dtype="float64"),
     lambda: DenseMatrices("block_sparse", 360, 11, 36, 0.3)),
]


@pytest.mark.parametrize("config,make_ref", CONFIGS, ids=["orthogonal", "block_sparse"])
@pytest.mark.parametrize("scene_seed", [0, 1, 2])
def test_sketch_matches_dense_numpy_recursion(config, make_ref, scene_seed):
    rng = np.random.default_rng(scene_seed)
    g, (objects, output) = random_dag(rng, depth=4, max_fan_in=8)
    sk = rs.Sketcher(**config)
    s, objs = sk.sketch(g, return_objects=True)
    ref, ref_objs = reference_sketch(objects, output, make_ref())
    scale = np.linalg.norm(ref)
    assert scale > 0
    np.testing.assert_allclose(s, ref, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(objs, np.array(ref_objs), rtol=0, atol=1e-10)
    # float32 sketches agree with the float64 reference to float32 precision
    s32 = rs.Sketcher(**{**config, "dtype": "float32"}).sketch(g)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, ref, rtol=0, atol=1e-5 * scale)


def test_random_dags_share_children_and_reach_depth_4():
    shared = 0
    for seed in range(3):
        g, (objects, _) = random_dag(np.random.default_rng(seed))
        parents = {}
        for k, (_, _, inputs) in enumerate(objects):
            for c, _ in inputs:
                parents.setdefault(c, set()).add(k)
        shared += sum(len(p) > 1 for p in parents.values())
        assert max(g.depths().values()) == 4
        assert max(len(inputs) for _, _, inputs in objects) <= 8
    assert shared > 0


@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_sketch_many_is_bit_identical_to_one_by_one(family):
    sk = rs.Sketcher(1024, family="orthogonal", seed=3) if family == "orthogonal" \
        else rs.Sketcher(1008, block_size=42, density=0.25, seed=3)
    dims: dict = {}
    graphs = [random_dag(np.random.default_rng(k), depth=3, dim=dims)[0] for k in range(7)]
    one = np.array([sk.sketch(g, num_threads=1) for g in graphs])
    for threads in (1, 2, 3):
        many = sk.sketch_many(graphs, num_threads=threads)
        assert many.dtype == sk.dtype and many.shape == (7, sk.d_sketch)
        assert np.array_equal(many, one)
    assert np.array_equal(sk.sketch(graphs[0], num_threads=2), one[0])
    assert sk.sketch_many([]).shape == (0, sk.d_sketch)


def test_registry_is_filled_and_serialised():
    sk = rs.Sketcher(1024, family="orthogonal")
    g, _ = room(np.random.default_rng(0))
    assert sk.modules == {}
    sk.sketch(g)
    assert sk.modules == {"cat": rs.ModuleInfo(2, 32), "wall": rs.ModuleInfo(2, 8),
                          "edge": rs.ModuleInfo(3, 16)}
    back = rs.Sketcher.from_json(sk.to_json())
    assert back == sk and back.modules == sk.modules
    assert back.same_matrices(rs.Sketcher(1024, family="orthogonal"))
    assert back != rs.Sketcher(1024, family="orthogonal")


def test_output_object_sketches_are_consistent():
    # s_overall = sum_i w_i P(R_i) s_object(top_i), checked with the library's own matrices
    sk = rs.Sketcher(512, family="orthogonal", dtype="float64")
    g, h = room(np.random.default_rng(4))
    s, objs = sk.sketch(g, return_objects=True)
    expect = sum(w * sk.position_matrix(i).half(objs[c.index])
                 for i, (c, w) in enumerate(g.output, start=1))
    np.testing.assert_allclose(s, expect, atol=1e-12)


def test_wide_graph_sketches_with_frontier_memory():
    # 1,000 leaves under 125 mid objects: object sketches are freed after their last parent,
    # and the result still matches the dense recursion.
    from reference import DenseMatrices, reference_sketch
    from scenes import describe

    rng = np.random.default_rng(3)
    g = rs.Graph()
    mids = []
    for k in range(125):
        kids = [g.add("leaf", rng.random(3) + 0.1, normalize=True) for _ in range(8)]
        mids.append(g.add("mid", [1.0], [(c, 1 / 8) for c in kids]))
    tops = [g.add("top", [1.0], [(m, 1 / 25) for m in mids[i:i + 25]]) for i in range(0, 125, 25)]
    g.set_output([(t, 0.2) for t in tops])
    sk = rs.Sketcher(256, family="orthogonal", seed=2, dtype="float64")
    s, objs = sk.sketch(g, return_objects=True)
    ref, ref_objs = reference_sketch(*describe(g), DenseMatrices("orthogonal", 256, 2))
    np.testing.assert_allclose(s, ref, atol=1e-12)
    np.testing.assert_allclose(objs, np.array(ref_objs), atol=1e-12)
