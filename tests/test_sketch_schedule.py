"""The level-synchronous sketch schedule: batched products change no bit, whatever the batch, its
order, the thread count or a competing load; deep DAGs with skip edges and many modules match
the dense recursion; memory stays at the frontier."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import recsketch as rs
from reference import DenseMatrices, reference_sketch
from scenes import describe, random_dag, unit

FAMILIES = {
    "orthogonal": (dict(d_sketch=256, family="orthogonal", seed=7, dtype="float64"),
                   lambda: DenseMatrices("orthogonal", 256, 7)),
    "block_sparse": (dict(d_sketch=360, block_size=36, density=0.3, seed=7, dtype="float64"),
                     lambda: DenseMatrices("block_sparse", 360, 7, 36, 0.3)),
}


def skip_dag(rng, depth=7, width=5, dim=None):
    """Objects at depths 2..depth, each taking 0-4 inputs from the depth below: objects without
    inputs sit at every depth, so an object's level from the leaves differs from its depth
    (parents mix a leaf with a deep subtree: the level schedule skips levels), children are
    shared by several parents at different positions, and a module's objects sit at several
    levels."""
    g = rs.Graph()
    dim = {} if dim is None else dim
    below = []
    for h in range(depth, 1, -1):
        n = int(rng.integers(2, width + 1))
        picks = [[] for _ in range(n)]
        for k in range(len(below)):  # every lower object feeds at least one parent
            picks[int(rng.integers(0, n))].append(k)
        row = []
        for k in range(n):
            extra = [c for c in range(len(below)) if c not in picks[k]]
            more = int(rng.integers(0, min(2, len(extra)) + 1)) if extra and rng.random() < 0.5 else 0
            chosen = picks[k][:3] + [int(c) for c in rng.choice(extra, size=more, replace=False)] \
                if more else picks[k]
            for c in picks[k][3:]:  # keep fan-in small: overflow goes to a sibling
                picks[(k + 1) % n].append(c)
            if k == n - 1:
                chosen = picks[k]
            chosen = [chosen[o] for o in rng.permutation(len(chosen))]
            w = rng.dirichlet(np.ones(len(chosen))) if chosen else []
            module = f"d{h}m{k % 2}"
            m = dim.setdefault(module, int(rng.integers(2, 20)))
            row.append(g.add(module, unit(rng, m), [(below[c], float(x)) for c, x in zip(chosen, w)]))
        below = row
    g.set_output([(b, 1.0 / len(below)) for b in below])
    return g


def many_module_graph(rng, n_modules=40, objects=120, dim=None, depth=5):
    """Mostly distinct modules (a pool of n_modules names spread over the depths, so graphs
    sharing a dim dict share some modules), objects spread over depths 2..depth."""
    g = rs.Graph()
    dim = {} if dim is None else dim
    per_depth = max(1, n_modules // (depth - 1))
    below = []
    for h in range(depth, 1, -1):
        n = max(1, objects // (depth - 1)) if h > 2 else min(8, max(1, len(below)))
        parent_of = rng.integers(0, n, size=len(below))
        row = []
        for k in range(n):
            kids = [below[c] for c in np.flatnonzero(parent_of == k)]
            module = f"d{h}mod{int(rng.integers(0, per_depth))}"
            m = dim.setdefault(module, int(rng.integers(1, 40)))
            row.append(g.add(module, unit(rng, m), [(c, 1.0 / len(kids)) for c in kids]))
        below = row
    g.set_output([(b, 1.0 / len(below)) for b in below])
    return g


@pytest.mark.parametrize("family", FAMILIES)
def test_deep_dags_with_skip_edges_match_the_dense_recursion(family):
    config, make_ref = FAMILIES[family]
    ref_mats = make_ref()
    sk = rs.Sketcher(**config)
    dims: dict = {}
    for seed in range(3):
        g = skip_dag(np.random.default_rng(seed), dim=dims)
        s, objs = sk.sketch(g, return_objects=True)
        ref, ref_objs = reference_sketch(*describe(g), ref_mats)
        scale = np.linalg.norm(ref)
        assert scale > 0
        np.testing.assert_allclose(s, ref, rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(objs, np.array(ref_objs), rtol=0, atol=1e-10)


def test_many_modules_match_the_dense_recursion():
    config, make_ref = FAMILIES["orthogonal"]
    sk = rs.Sketcher(**config)
    ref_mats = make_ref()
    g = many_module_graph(np.random.default_rng(5), n_modules=40, objects=150)
    assert len({h.module for h in g}) >= 30
    s, objs = sk.sketch(g, return_objects=True)
    ref, ref_objs = reference_sketch(*describe(g), ref_mats)
    np.testing.assert_allclose(s, ref, rtol=0, atol=1e-10 * np.linalg.norm(ref))
    np.testing.assert_allclose(objs, np.array(ref_objs), rtol=0, atol=1e-10)


def _graphs(dims):
    rngs = [np.random.default_rng(100 + k) for k in range(9)]
    return ([skip_dag(r, dim=dims) for r in rngs[:3]]
            + [random_dag(r, depth=5, dim=dims)[0] for r in rngs[3:6]]
            + [many_module_graph(r, dim=dims) for r in rngs[6:]])


@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bits_do_not_depend_on_batch_composition_or_threads(family, dtype):
    sk = (rs.Sketcher(1024, family="orthogonal", seed=3, dtype=dtype) if family == "orthogonal"
          else rs.Sketcher(1008, block_size=42, density=0.25, seed=3, dtype=dtype))
    graphs = _graphs({})
    alone = np.array([sk.sketch(g, num_threads=1) for g in graphs])
    order = np.random.default_rng(0).permutation(len(graphs))
    for threads in (1, 2, 3, 8):
        assert np.array_equal(sk.sketch_many(graphs, num_threads=threads), alone)
        shuffled = sk.sketch_many([graphs[k] for k in order], num_threads=threads)
        assert np.array_equal(shuffled, alone[order])
        # a graph repeated in a batch, next to other graphs sharing its modules
        twice = sk.sketch_many([graphs[0], graphs[6], graphs[0]], num_threads=threads)
        assert np.array_equal(twice, alone[[0, 6, 0]])
    for g in graphs[:3]:
        s1, o1 = sk.sketch(g, return_objects=True, num_threads=1)
        s2, o2 = sk.sketch(g, return_objects=True, num_threads=3)
        assert np.array_equal(s1, s2) and np.array_equal(o1, o2)


def test_a_batch_larger_than_the_working_budget_is_cut_without_changing_bits():
    # d = 65536: the 256 MiB working budget holds ~380 object sketches, so 12 graphs of ~120
    # objects are sketched in several groups (and wide levels in several slices).
    sk = rs.Sketcher(65536, family="orthogonal", seed=1)
    dims: dict = {}
    graphs = [many_module_graph(np.random.default_rng(k), n_modules=20, objects=120, dim=dims)
              for k in range(12)]
    many = sk.sketch_many(graphs, num_threads=2)
    for k in (0, 5, 11):
        assert np.array_equal(many[k], sk.sketch(graphs[k], num_threads=1))


def test_concurrent_callers_get_the_same_bits():
    sk = rs.Sketcher(1008, block_size=42, density=0.25, seed=4)
    graphs = _graphs({})
    expect = sk.sketch_many(graphs, num_threads=1)
    out = {}

    def work(t):
        out[t] = sk.sketch_many(graphs, num_threads=2)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for t in range(4):
        assert np.array_equal(out[t], expect)


_BUSY = "import time\nt = time.time()\nwhile time.time() - t < 120: pass\n"


def test_bits_are_the_same_under_a_competing_load():
    # Two busy processes compete for the machine's cores while the pool runs; results must be
    # bit-identical to an unloaded single-thread run. (Speed under load is the benchmark's job:
    # bench/bench_many_modules.py.)
    sk = rs.Sketcher(2040, block_size=51, density=0.12, seed=6)
    graphs = _graphs({})
    expect = sk.sketch_many(graphs, num_threads=1)
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(2)]
    try:
        for threads in (2, 4):
            for _ in range(3):
                assert np.array_equal(sk.sketch_many(graphs, num_threads=threads), expect)
    finally:
        for p in busy:
            p.kill()
            p.wait()


_FORK = textwrap.dedent("""
    import os, sys, numpy as np, recsketch as rs
    sys.path.insert(0, {tests!r})
    from test_sketch_schedule import _graphs
    sk = rs.Sketcher(1024, family="orthogonal", seed=3)
    graphs = _graphs({{}})
    expect = sk.sketch_many(graphs, num_threads=2)   # the pool has threads now
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(sk.sketch_many(graphs, num_threads=2), expect)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_sketches_in_parallel():
    code = _FORK.format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "0"


def test_native_entry_refuses_absurd_thread_counts():
    sk = rs.Sketcher(1024, family="orthogonal", seed=3)
    g = _graphs({})[0]
    from recsketch._native import _core
    from recsketch.graph import flatten
    flat = flatten([g], 1024)
    args = ([tuple(sk.module_matrix(n, k)._native for k in range(3)) for n in flat.modules],
            [sk.position_matrix(i)._native for i in range(1, flat.max_fan_in + 1)], 1024,
            flat.graph_ptr, flat.module, flat.attr_ptr, flat.attr, flat.input_ptr,
            flat.input_row, flat.input_weight, False, False)
    with pytest.raises(ValueError, match="num_threads"):
        _core.sketch_graphs(*args, _core.MAX_NUM_THREADS + 1)
    ok, _ = _core.sketch_graphs(*args, _core.MAX_NUM_THREADS)
    assert np.array_equal(ok[0], sk.sketch(g, num_threads=1))
    # a graph_ptr that goes back and forth is refused before any row is read
    bad = flat.graph_ptr.copy()
    bad = np.array([0, bad[-1] + 100, bad[-1]], dtype=np.int64)
    with pytest.raises(ValueError, match="graph_ptr"):
        _core.sketch_graphs(*args[:3], bad, *args[4:], 1)


_RSS = textwrap.dedent("""
    import resource, numpy as np, recsketch as rs
    d, n = 4096, 6000
    g = rs.Graph()
    prev = g.add("first", [1.0])
    for k in range(n):
        prev = g.add(f"link{k}", [1.0], [(prev, 1.0)])
    g.set_output([(prev, 1.0)])
    sk = rs.Sketcher(d, family="orthogonal", seed=1)
    small = rs.Graph()
    small.set_output([(small.add("warmup", [1.0]), 1.0)])
    sk.sketch(small)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sk.sketch(g, num_threads=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
""")


def test_a_long_chain_keeps_only_its_frontier():
    # 6,000 objects (and modules) in a chain at d = 4096: all their sketches would take 197 MB
    # (float64); the frontier is one object, so the peak grows by far less.
    out = subprocess.run([sys.executable, "-c", _RSS], capture_output=True, text=True,
                         timeout=300, check=True)
    grew = int(out.stdout.strip())
    assert grew < 40 << 20, grew


def leafy_graph(rng, n_leaves, module="leafy", k=4, dim=None):
    """A top object over n_leaves leaves of one short-attribute module (plus a few others)."""
    g = rs.Graph()
    leaves = [g.add(module, unit(rng, k)) for _ in range(n_leaves)]
    others = [g.add("other", unit(rng, 3)) for _ in range(2)]
    kids = leaves + others
    tops = [g.add("top", unit(rng, 5), [(c, 1.0 / len(kids[i::3])) for c in kids[i::3]])
            for i in range(3)]
    g.set_output([(t, 1.0 / 3) for t in tops])
    return g


@pytest.mark.parametrize("family", FAMILIES)
def test_embedded_leaves_match_the_dense_recursion(family):
    config, make_ref = FAMILIES[family]
    sk = rs.Sketcher(**config)
    g = leafy_graph(np.random.default_rng(1), 40)
    flags, chosen = sk._leaf_embeddings.plan(sk, __import__("recsketch").graph.flatten([g], sk.d_sketch))
    assert chosen and flags.sum() == 40   # the 40 leaves of "leafy" are embedded
    s, objs = sk.sketch(g, return_objects=True)
    ref, ref_objs = reference_sketch(*describe(g), make_ref())
    np.testing.assert_allclose(s, ref, rtol=0, atol=1e-10 * np.linalg.norm(ref))
    np.testing.assert_allclose(objs, np.array(ref_objs), rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", ["orthogonal", "block_sparse"])
def test_embedding_choice_is_per_graph_so_batches_do_not_change_bits(family):
    # "leafy" has 2 leaves in the small graph (not worth an embedding) and 60 in the big one
    # (worth it): in one batch, each graph still gets its own path and its own bits.
    sk = (rs.Sketcher(1024, family="orthogonal", seed=3) if family == "orthogonal"
          else rs.Sketcher(1008, block_size=42, density=0.25, seed=3))
    small = leafy_graph(np.random.default_rng(2), 2)
    big = leafy_graph(np.random.default_rng(3), 60)
    from recsketch.graph import flatten
    assert sk._leaf_embeddings.plan(sk, flatten([small], sk.d_sketch))[1] == {}
    assert sk._leaf_embeddings.plan(sk, flatten([big], sk.d_sketch))[1]
    alone = np.array([sk.sketch(small, num_threads=1), sk.sketch(big, num_threads=1)])
    fresh = (rs.Sketcher(1024, family="orthogonal", seed=3) if family == "orthogonal"
             else rs.Sketcher(1008, block_size=42, density=0.25, seed=3))
    for threads in (1, 2):
        assert np.array_equal(fresh.sketch_many([small, big], num_threads=threads), alone)
        assert np.array_equal(fresh.sketch_many([big, small, big], num_threads=threads),
                              alone[[1, 0, 1]])


def test_embeddings_stay_within_their_budget():
    from recsketch.embeddings import LeafEmbeddings
    from recsketch.graph import flatten
    sk = rs.Sketcher(1024, family="orthogonal", seed=3)
    graphs = [leafy_graph(np.random.default_rng(k), 60, module=f"leafy{k}") for k in range(4)]
    expect = sk.sketch_many(graphs)
    one = (4 + 1) * 1024 * 8                      # one embedding: k = 4
    for budget, per_call in [(one - 1, 0), (one, 1), (2 * one, 2), (10 * one, 4)]:
        small = rs.Sketcher(1024, family="orthogonal", seed=3)
        small._leaf_embeddings = LeafEmbeddings(budget)
        flags, chosen = small._leaf_embeddings.plan(small, flatten(graphs[:1], 1024))
        assert len(chosen) == (0 if budget < one else 1)   # never an entry above the budget
        got = small.sketch_many(graphs)                    # split into calls that fit
        held = small._leaf_embeddings._cache.info()["bytes"]
        assert held <= budget
        if budget >= one:
            assert np.array_equal(got, expect)


def test_embedding_builds_use_the_calls_thread_count(monkeypatch):
    # the leaf embeddings are products too: num_threads=1 must reach them (a Dask task or a
    # torch worker given one thread must not start the pool's others)
    from recsketch.matrices import RandomMatrix
    seen = []
    original = RandomMatrix._apply

    def spy(self, x, **kw):
        seen.append(kw["num_threads"])
        return original(self, x, **kw)

    monkeypatch.setattr(RandomMatrix, "_apply", spy)
    sk = rs.Sketcher(1024, family="orthogonal", seed=3)
    g = leafy_graph(np.random.default_rng(3), 60)
    s = sk.sketch(g, num_threads=1)
    assert seen and set(seen) == {1}                 # only the embedding built through Python
    monkeypatch.setattr(RandomMatrix, "_apply", original)
    assert np.array_equal(s, rs.Sketcher(1024, family="orthogonal", seed=3).sketch(g))


def test_halving_checks_the_allocation_limit_once(monkeypatch):
    # A batch whose leaf embeddings do not fit the budget together is sketched in halves,
    # recursively (8 graphs: three levels, seven splits); the halves' buffers are checked
    # against the allocation limit once, at the top (the lower levels hold less), and the bits
    # are those of each graph sketched alone.
    import recsketch.sketcher as sketcher_module
    from recsketch.embeddings import LeafEmbeddings
    graphs = [leafy_graph(np.random.default_rng(k), 60, module=f"leafy{k}") for k in range(8)]
    alone = np.stack([rs.Sketcher(1024, family="orthogonal", seed=3).sketch(g) for g in graphs])
    sk = rs.Sketcher(1024, family="orthogonal", seed=3)
    sk._leaf_embeddings = LeafEmbeddings((4 + 1) * 1024 * 8)   # one graph's embedding
    checked = []
    original = sketcher_module.check_alloc

    def spy(nbytes, what, hint=""):
        checked.append(what)
        return original(nbytes, what, hint)

    monkeypatch.setattr(sketcher_module, "check_alloc", spy)
    splits = []
    original_sketch = rs.Sketcher._sketch

    def count(self, graphs, *args, **kw):
        splits.append(len(graphs))
        return original_sketch(self, graphs, *args, **kw)

    monkeypatch.setattr(rs.Sketcher, "_sketch", count)
    np.testing.assert_array_equal(sk.sketch_many(graphs, num_threads=1), alone)
    assert sorted(splits) == sorted([8, 4, 4] + [2] * 4 + [1] * 8)
    assert [w for w in checked if "in two halves" in w] == [
        "sketch_many: 8 sketches of d=1024 float32 in two halves (the halves and the result)"]
