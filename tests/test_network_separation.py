"""Splitting fixed-tree sketches into one part per object with sampled-tuple sketches
(:func:`recsketch.network.separation.separate_objects`), and ``learn_network``'s
``sampled_sketches=``.

A tour: on a fixed tree every sketch is ``sum_o C_o W_o`` (object ``o``'s words ``W_o``, its
per-sample coefficients ``g [x; 1]``), and a sketch made with ``tuple_sampling=1`` holds one
object's words. From a set of the latter, ``separate_objects`` finds each object's span and splits
every plain sketch into ``C_o W_o``, one part per object. The expected parts below are computed
independently: planted words and coefficients multiplied out by NumPy, and for real sketches
the bench's word synthesis (``bench/tree_words.py``: the Sketcher's matrices applied to each
word's column, checked against the Sketcher's own sketches).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import recsketch as rs
from recsketch.network import NetworkTruth, learn_network
from recsketch.network.separation import ObjectSeparation, separate_objects

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from teacher_network import build_teacher  # noqa: E402
from tree_words import coefficients, tree_words  # noqa: E402


def _unit_rows(rng, n, k):
    x = rng.uniform(0.2, 1.0, (n, k))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted(seed=0, d=3000, dims=(3, 2, 4), S=60, per_object=12, drop=()):
    """Words ``W[o]`` ``(dims[o] + 1, d)`` (Gaussian, nearly orthogonal), plain sketches
    ``Y = sum_o C[o] W[o]`` with ``C[o] = g_o [x_o; 1]``, and sampled sketches holding one
    object each (``per_object`` of each, objects in ``drop`` never)."""
    rng = np.random.default_rng(seed)
    W = [rng.standard_normal((k + 1, d)) / np.sqrt(d) for k in dims]
    C = []
    for k in dims:
        g = rng.uniform(0.3, 1.0, S)
        C.append(g[:, None] * np.hstack([_unit_rows(rng, S, k), np.ones((S, 1))]))
    Y = sum(c @ w for c, w in zip(C, W))
    rows, owner = [], []
    for o, (k, w) in enumerate(zip(dims, W)):
        if o in drop:
            continue
        c = 0.5 * np.hstack([_unit_rows(rng, per_object, k), np.ones((per_object, 1))])
        rows.append(c @ w)
        owner += [o] * per_object
    order = rng.permutation(len(owner))
    return W, C, Y, np.concatenate(rows)[order], np.asarray(owner)[order]


def test_every_plain_sketch_splits_into_its_objects_parts():
    W, C, Y, Ys, owner = planted()
    sep = separate_objects(Y, Ys)
    assert isinstance(sep, ObjectSeparation)
    assert sep.n_objects == 3 and sep.unassigned.shape[0] == 0
    # each cluster is the sampled sketches of one object, and its part is that object's C W
    for o in range(3):
        (held,) = set(owner[sep.members[o]].tolist())
        assert sorted(sep.members[o]) == sorted(np.flatnonzero(owner == held))
        assert sep.spans[o].shape[0] == W[held].shape[0]
        want = C[held] @ W[held]
        np.testing.assert_allclose(sep.part(o), want, atol=1e-11 * np.abs(want).max())
    parts = sum(sep.parts())
    np.testing.assert_allclose(parts, Y, atol=1e-11 * np.abs(Y).max())


def test_float32_and_memory_mapped_inputs(tmp_path):
    W, C, Y, Ys, owner = planted(seed=1)
    ref = separate_objects(Y, Ys)
    sep32 = separate_objects(Y.astype(np.float32), Ys.astype(np.float32))
    for o in range(3):
        (held,) = set(owner[sep32.members[o]].tolist())
        want = C[held] @ W[held]
        part = sep32.part(o, np.float32, chunk=7)  # odd chunks
        assert part.dtype == np.float32
        assert np.abs(part - want).max() <= 1e-6 * np.abs(want).max()
    np.save(tmp_path / "Y.npy", Y)
    np.save(tmp_path / "Ys.npy", Ys)
    mapped = separate_objects(np.load(tmp_path / "Y.npy", mmap_mode="r"),
                              np.load(tmp_path / "Ys.npy", mmap_mode="r"), chunk=1000)
    for o in range(3):
        np.testing.assert_allclose(mapped.part(o), ref.part(o), rtol=0,
                                   atol=1e-12 * np.abs(Y).max())


def test_the_order_of_the_sampled_sketches_does_not_matter():
    W, C, Y, Ys, owner = planted(seed=8)
    a = separate_objects(Y, Ys)
    perm = np.random.default_rng(0).permutation(len(Ys))
    b = separate_objects(Y, Ys[perm])
    held_a = [owner[m[0]] for m in a.members]
    held_b = [owner[perm][m[0]] for m in b.members]
    for o, h in enumerate(held_a):
        np.testing.assert_allclose(a.part(o), b.part(held_b.index(h)), rtol=0,
                                   atol=1e-12 * np.abs(Y).max())


def test_an_object_no_sampled_sketch_holds_is_unassigned():
    W, C, Y, Ys, owner = planted(seed=2, drop=(1,))
    sep = separate_objects(Y, Ys)
    assert sep.n_objects == 2 and sep.n_parts == 3
    assert sep.unassigned.shape[0] == W[1].shape[0]
    # the held objects' parts carry the dropped object's words only through the orthogonal
    # complement, and its words are not orthogonal to theirs (cosines ~1/sqrt(d) = 0.018):
    # near, not equal (measured 0.035-0.037)
    for o in range(2):
        (held,) = set(owner[sep.members[o]].tolist())
        want = C[held] @ W[held]
        err = np.abs(sep.part(o) - want).max() / np.abs(want).max()
        assert err < 0.08
    np.testing.assert_allclose(sum(sep.parts()), Y, atol=1e-11 * np.abs(Y).max())


def test_an_object_held_no_more_times_than_its_rank_is_left_unassigned():
    """Two sampled sketches of an object whose attributes vary in 4 dimensions (5 words) span
    2 of its directions, and a third could add one: its cluster is set aside, with a warning,
    and its words stay unassigned (a part of 2 of its 5 directions would not be its words)."""
    W, C, Y, Ys, owner = planted(seed=3, dims=(4, 2))
    two = np.flatnonzero(owner == 0)[:2]
    keep = np.concatenate([two, np.flatnonzero(owner == 1)])
    with pytest.warns(RuntimeWarning, match="1 clusters"):
        sep = separate_objects(Y, Ys[keep])
    assert sep.n_objects == 1 and sep.unassigned.shape[0] == 5
    assert sorted(sep.set_aside) == [0, 1]
    want = C[1] @ W[1]
    assert np.abs(sep.part(0) - want).max() < 0.08 * np.abs(want).max()


def test_a_part_the_sketches_do_not_hold_is_empty_and_learn_network_skips_it():
    """An object in three sampled sketches (rank 4: set aside) but in no plain sketch: its
    directions are unassigned and the plain sketches' part there is zero; learn_network must
    not unmix that part (it would at its own scale) nor fail on it."""
    W, C, Y0, Ys, owner = planted(seed=9, dims=(3, 2, 3), d=4140)
    Y = C[0] @ W[0] + C[1] @ W[1]  # object 2 absent from the plain sketches
    keep = np.concatenate([np.flatnonzero(owner < 2), np.flatnonzero(owner == 2)[:3]])
    with pytest.warns(RuntimeWarning, match="left unassigned"):
        sep = separate_objects(Y, Ys[keep])
    assert sep.n_parts == 3 and sep.unassigned.shape[0] == 3
    norms = sep.part_norms
    held = [owner[keep][m[0]] for m in sep.members]
    np.testing.assert_allclose(norms[:2], [np.linalg.norm(C[o] @ W[o]) for o in held],
                               rtol=1e-9)
    assert norms[2] < 1e-12 * norms[:2].max()
    with pytest.warns(RuntimeWarning, match="left unassigned"):
        model = learn_network(None, Y, block_size=69, density=0.01, method="unmix",
                              sampled_sketches=Ys[keep])
    assert [m.id for m in model.modules] == list(range(len(model.modules)))


def test_sampled_sketches_that_hold_two_objects_are_refused():
    """A sampled sketch of object B with a little of A (0.1: its cosine with A's sketches is
    below min_cosine, so it joins B's cluster) puts A's direction in B's span as well."""
    W, C, Y, Ys, owner = planted(seed=4, dims=(3, 3))
    mixed = Ys.copy()
    a = np.flatnonzero(owner == 0)[0]
    for k, i in enumerate(np.flatnonzero(owner == 1)[:5]):
        mixed[i] += 0.1 * (1 + 0.05 * k) * Ys[a]
    with pytest.raises(ValueError, match="one object each"):
        separate_objects(Y, mixed)


def test_too_high_a_min_cosine_is_named():
    """At 0.995 the planted objects' sampled sketches break into small clusters (measured: two
    keep more members than their rank, the rest are set aside): the warning names min_cosine."""
    _, _, Y, Ys, _ = planted(seed=4)
    with pytest.warns(RuntimeWarning, match="min_cosine=0.995"):
        sep = separate_objects(Y, Ys, min_cosine=0.995)
    assert sep.n_objects < 3 and len(sep.set_aside) > 0


def test_sketches_that_separate_nothing_warn():
    _, _, Y, Ys, _ = planted(seed=5)
    with pytest.warns(RuntimeWarning, match="nothing is separated"):
        sep = separate_objects(Y, Y[:30])  # plain sketches passed as sampled ones
    assert sep.n_objects == 1 and sep.n_parts == 1
    np.testing.assert_allclose(sep.part(0), Y, atol=1e-11 * np.abs(Y).max())
    with pytest.warns(RuntimeWarning, match="nothing is separated"):
        sep = separate_objects(Y, np.zeros_like(Ys))
    assert sep.n_objects == 0 and len(sep.set_aside) == len(Ys)
    np.testing.assert_allclose(sep.part(0), Y, atol=1e-11 * np.abs(Y).max())


@pytest.mark.parametrize("bad, err, match", [
    (lambda Y, Ys: (Y.tolist(), Ys), TypeError, "sketches"),
    (lambda Y, Ys: (Y, Ys.astype(np.int64)), TypeError, "sampled_sketches"),
    (lambda Y, Ys: (Y, Ys[:, :-3]), ValueError, "d_sketch"),
    (lambda Y, Ys: (Y, Ys[0]), ValueError, "sampled_sketches"),
    (lambda Y, Ys: (Y[:0], Ys), ValueError, "sketches"),
])
def test_bad_arrays_are_refused(bad, err, match):
    _, _, Y, Ys, _ = planted(seed=6, d=600)
    with pytest.raises(err, match=match):
        separate_objects(*bad(Y, Ys))


@pytest.mark.parametrize("which", ["sketches", "sampled_sketches"])
def test_nan_is_refused_naming_the_array(which):
    _, _, Y, Ys, _ = planted(seed=7, d=600)
    arrays = {"sketches": Y.copy(), "sampled_sketches": Ys.copy()}
    arrays[which][3, 17] = np.inf
    with pytest.raises(ValueError, match=f"^{which} contains NaN"):
        separate_objects(arrays["sketches"], arrays["sampled_sketches"])


def test_bad_options_are_refused():
    _, _, Y, Ys, _ = planted(seed=7, d=600)
    for value in (0, 1, -0.1, float("nan")):
        with pytest.raises(ValueError, match="min_cosine"):
            separate_objects(Y, Ys, min_cosine=value)
    with pytest.raises(TypeError, match="min_cosine"):
        separate_objects(Y, Ys, min_cosine="0.3")
    with pytest.raises(ValueError, match="chunk"):
        separate_objects(Y, Ys, chunk=0)
    sep = separate_objects(Y, Ys)
    with pytest.raises(ValueError, match="o must be"):
        sep.part(sep.n_objects)  # no unassigned part here
    with pytest.raises(TypeError, match="dtype"):
        sep.part(0, np.int32)


# -- real sketches: the deep teacher at a small d ------------------------------------------------
@pytest.fixture(scope="module")
def deep_small():
    d, b, q = rs.suggest_block_sparse(65520, 2e-3)
    sk = rs.Sketcher(d, block_size=b, density=q, seed=11, dtype="float64")
    graphs = build_teacher("deep", 60, 3)[1]
    truth = NetworkTruth.from_graphs(sk, graphs)
    W, labels = tree_words(sk, truth)
    Z = coefficients(truth, labels)
    Y = sk.sketch_many(graphs)
    more = build_teacher("deep", 400, 4)[1]  # other inputs of the same tree
    Ys = sk.sketch_many(more, tuple_sampling=1, sample_seed=range(len(more)))
    return sk, truth, W, labels, Z, Y, Ys


def test_real_sketches_split_into_each_objects_words(deep_small):
    """Every object of the deep teacher (root, 2 mids, 4 leaves) is found and its part is its
    words times its true coefficients, to rounding."""
    sk, truth, W, labels, Z, Y, Ys = deep_small
    sep = separate_objects(Y, Ys)
    names = sorted({n for n, _ in labels})
    assert sep.n_objects == len(names) == 7
    matched = set()
    for o in range(sep.n_objects):
        part = sep.part(o)
        errs = {}
        for n in names:
            rows = [i for i, (m, _) in enumerate(labels) if m == n]
            want = Z[:, rows] @ W[rows]
            errs[n] = np.abs(part - want).max() / np.abs(want).max()
        best = min(errs, key=errs.get)
        assert errs[best] < 1e-6, errs
        matched.add(best)
    assert matched == set(names)


def test_sampled_sketches_of_another_sketcher_are_refused(deep_small):
    """Another seed's matrices: every object's span is off the sketches' row space (principal
    cosines measured 0.02-0.03 against 1.000 for the right seed)."""
    sk, _, _, _, _, Y, _ = deep_small
    other = rs.Sketcher(sk.d_sketch, block_size=sk.block_size, density=sk.density, seed=12,
                        dtype="float64")
    graphs = build_teacher("deep", 400, 4)[1]
    Ys = other.sketch_many(graphs, tuple_sampling=1, sample_seed=range(len(graphs)))
    with pytest.raises(ValueError, match="not in the sketches' row space"):
        separate_objects(Y, Ys)


def test_learn_network_refuses_sampled_sketches_it_cannot_use(deep_small):
    sk, _, _, _, _, Y, Ys = deep_small
    with pytest.raises(ValueError, match="method='unmix'"):
        learn_network(None, Y, sketcher=sk, sampled_sketches=Ys)
    with pytest.raises(ValueError, match="rank"):
        learn_network(None, Y, sketcher=sk, method="unmix", rank=20, sampled_sketches=Ys)
    with pytest.raises(ValueError, match="d_sketch"):
        learn_network(None, Y, sketcher=sk, method="unmix", sampled_sketches=Ys[:, :-69])
    bad = Ys[:5].copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="sampled_sketches"):
        learn_network(None, Y, sketcher=sk, method="unmix", sampled_sketches=bad)
