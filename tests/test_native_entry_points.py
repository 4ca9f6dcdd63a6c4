"""Every native entry point validates what it is given: bad arguments raise ValueError or
TypeError naming the problem, never a hang, an abort or a segfault (issue 12, defects 5 and 6).

Calls that used to crash the process run in a subprocess, so a regression fails one test
instead of killing the run.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import recsketch as rs
from recsketch import _core
from recsketch._checks import MAX_NUM_THREADS
from recsketch.graph import flatten

FAMILY = _core.BlockSparseFamily(360, 36, 0.3)
BS = _core.BlockSparseMatrix(FAMILY, 1, 2)
ORTH = _core.OrthogonalMatrix(256, 1, 2)


def run_isolated(code, timeout=120):
    """Run code in a fresh interpreter; returns (returncode, stdout + stderr)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def sketch_args(sk, graphs, num_threads=1):
    """The arguments Sketcher._sketch hands to _core.sketch_graphs, as a mutable dict."""
    flat = flatten(graphs, sk.d_sketch)
    return dict(
        modules=[tuple(sk.module_matrix(n, k)._native for k in range(3)) for n in flat.modules],
        positions=[sk.position_matrix(i)._native for i in range(1, flat.max_fan_in + 1)],
        d=sk.d_sketch, graph_ptr=flat.graph_ptr.copy(),
        module=flat.module.copy(), attr_ptr=flat.attr_ptr.copy(), attr=flat.attr.copy(),
        input_ptr=flat.input_ptr.copy(), input_row=flat.input_row.copy(),
        input_weight=flat.input_weight.copy(), float64=True, return_objects=False,
        num_threads=num_threads)


def small_graph():
    g = rs.Graph()
    a = g.add("leaf", [0.6, 0.8])
    b = g.add("leaf", [1.0, 0.0])
    top = g.add("top", [1.0], [(a, 0.5), (b, 0.5)])
    g.set_output([(top, 1.0)])
    return g


SK = rs.Sketcher(360, block_size=36, density=0.3, seed=1, dtype="float64")
X = np.random.default_rng(0).random((3, 360))
Y_SCAN = np.random.default_rng(1).standard_normal((4, 360))

# Every native entry point that takes num_threads, as a callable of num_threads.
NATIVE_THREADED = {
    "BlockSparseMatrix.apply": lambda t: BS.apply(X, False, False, t),
    "BlockSparseMatrix.apply(transpose)": lambda t: BS.apply(X, True, False, t),
    "BlockSparseMatrix.column_counts": lambda t: BS.column_counts(t),
    "BlockSparseMatrix.csc": lambda t: BS.csc(True, t),
    "OrthogonalMatrix.apply": lambda t: ORTH.apply(X[:, :256].copy(), False, False, t),
    "sketch_graphs": lambda t: _core.sketch_graphs(**sketch_args(SK, [small_graph()], t)),
    "scan_blocks": lambda t: _core.scan_blocks(Y_SCAN, 36, 0.3, 0.3, 0, t),
}

PYTHON_THREADED = {
    "RandomMatrix.matvec": lambda t: SK.module_matrix("a", 0).matvec(X[0], num_threads=t),
    "Sketcher.sketch": lambda t: SK.sketch(small_graph(), num_threads=t),
    "Sketcher.sketch_many": lambda t: SK.sketch_many([small_graph()], num_threads=t),
    "DictionaryLearner": lambda t: rs.DictionaryLearner(360, block_size=36, density=0.3,
                                                        num_threads=t),
}


def test_max_num_threads_is_documented_and_shared():
    assert MAX_NUM_THREADS == _core.MAX_NUM_THREADS >= 64
    assert str(MAX_NUM_THREADS) in rs.Sketcher.sketch.__doc__ or \
        "MAX_NUM_THREADS" in rs.Sketcher.sketch.__doc__


@pytest.mark.parametrize("name", sorted(NATIVE_THREADED))
def test_native_num_threads_bounds(name):
    call = NATIVE_THREADED[name]
    reference = call(1)
    for bad in (MAX_NUM_THREADS + 1, 100_000, -1):
        with pytest.raises(ValueError, match="num_threads"):
            call(bad)
    # 0 (every thread) and the maximum itself are accepted and change no bit
    for ok in (0, 2, MAX_NUM_THREADS):
        out = call(ok)
        for a, b in zip(out if isinstance(out, tuple) else (out,),
                        reference if isinstance(reference, tuple) else (reference,)):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(PYTHON_THREADED))
def test_python_num_threads_bounds(name):
    call = PYTHON_THREADED[name]
    for bad in (MAX_NUM_THREADS + 1, 2000, 100_000):
        with pytest.raises(ValueError, match=rf"num_threads must be <= {MAX_NUM_THREADS}"):
            call(bad)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        call(0)


def test_csc_refuses_bools_and_non_integers():
    # bool is a subclass of int, and pybind11's int caster converts NumPy bools: the Python
    # layer refuses both as integers, so the native entry point does too
    reference = BS.csc(True, 1, 5)
    for bad in (True, False, np.True_, np.bool_(False)):
        with pytest.raises(TypeError, match="num_threads must be an integer, got a bool"):
            BS.csc(True, bad)
        with pytest.raises(TypeError, match="columns must be an integer, got a bool"):
            BS.csc(True, 0, bad)
    for bad in (1.0, "1", None):
        with pytest.raises(TypeError, match="num_threads must be an integer"):
            BS.csc(True, bad)
        with pytest.raises(TypeError, match="columns must be an integer"):
            BS.csc(True, 0, bad)
    with pytest.raises(ValueError, match="num_threads is out of range"):
        BS.csc(True, 2**40)
    with pytest.raises(ValueError, match="columns is out of range"):
        BS.csc(True, 0, 2**70)
    # float64 is a flag: a bool (Python or NumPy), not any object with a truth value
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError):
            BS.csc(bad, 0, 5)
    # NumPy integers are integers, and a NumPy bool is a flag
    for a, b in zip(BS.csc(np.True_, np.int64(1), np.int32(5)), reference):
        np.testing.assert_array_equal(a, b)


def test_huge_thread_counts_do_not_crash_the_process():
    # 2,000 aborted the process and 100,000 segfaulted it (issue 12, defect 5)
    code, out = run_isolated("""
        import numpy as np
        from recsketch import _core
        m = _core.BlockSparseMatrix(_core.BlockSparseFamily(360, 36, 0.3), 1, 2)
        x = np.ones((64, 360))
        for t in (2000, 100000):
            try:
                m.apply(x, False, False, t)
            except ValueError as exc:
                print("ValueError", exc)
    """)
    assert code == 0, out
    assert out.count("ValueError") == 2, out


def test_huge_d_sketch_is_refused_not_a_hang():
    # ceil_log2 shifted past 64 bits and looped forever with the GIL held (defect 6)
    code, out = run_isolated("""
        import recsketch as rs
        from recsketch import _core
        for call in (lambda: rs.Sketcher(2**62 + 1), lambda: rs.Sketcher(2**40),
                     lambda: rs.min_block_size(2**62 + 1), lambda: rs.default_block_size(2**63 - 1),
                     lambda: _core.min_block_size(2**62 + 1), lambda: _core.ceil_log2(0),
                     lambda: _core.paper_density(2**62), lambda: _core.min_block_size(0)):
            try:
                print("returned", call())
            except ValueError as exc:
                print("ValueError", exc)
    """, timeout=60)
    assert code == 0, out
    assert out.count("ValueError") == 8, out
    assert "d_sketch" in out


def test_ceil_log2_is_exact_over_its_range():
    for n in [1, 2, 3, 4, 5, 1023, 1024, 1025, 2**31 - 1, 2**31, 2**62, 2**62 + 1, 2**63 - 1]:
        assert _core.ceil_log2(n) == (n - 1).bit_length()


def test_block_sparse_matrix_needs_a_family():
    # segfaulted on a null family (defect 6)
    code, out = run_isolated("""
        from recsketch import _core
        try:
            _core.BlockSparseMatrix(None, 0, 0)
        except (TypeError, ValueError) as exc:
            print(type(exc).__name__, exc)
    """)
    assert code == 0, out
    assert "family" in out and ("TypeError" in out or "ValueError" in out), out


def bad_batches():
    """(description, changes to the arguments of sketch_graphs) that must be refused."""
    n_rows = 4  # leaf, leaf, top, output
    yield "graph_ptr past the rows", dict(graph_ptr=np.array([0, 1000, n_rows]))
    yield "graph_ptr not monotone", dict(graph_ptr=np.array([0, 3, 2, n_rows]))
    yield "graph_ptr negative", dict(graph_ptr=np.array([0, -5]))
    yield "graph_ptr empty", dict(graph_ptr=np.zeros(0, dtype=np.int64))
    yield "module index", dict(module=np.array([0, 0, 7, -1], dtype=np.int32))
    yield "attr_ptr decreasing", dict(attr_ptr=np.array([0, 2, 1, 5, 5]))
    yield "input_ptr decreasing", dict(input_ptr=np.array([0, 0, 0, 3, 2]))
    yield "input_row out of range", dict(input_row=np.array([0, 99, 2]))
    yield "input_row negative", dict(input_row=np.array([0, -1, 2]))
    yield "weights NaN", dict(input_weight=np.array([0.5, np.nan, 1.0]))
    yield "weights negative", dict(input_weight=np.array([0.5, -0.5, 1.0]))
    yield "attributes infinite", dict(attr=np.array([0.6, np.inf, 1.0, 0.0, 1.0]))
    yield "d mismatch", dict(d=512)
    yield "d huge", dict(d=2**40)
    yield "d negative", dict(d=-360)
    yield "module entry not a tuple", dict(modules=[[BS, BS, BS], [BS, BS, BS]])
    yield "module entry too short", dict(modules=[(BS, BS), (BS, BS, BS)])
    yield "module entry not matrices", dict(modules=[(1, 2, 3), (BS, BS, BS)])
    yield "no positions", dict(positions=[])
    yield "leaf_embed not an array", dict(leaf_embed=[5, None])
    yield "leaf_embed too few entries", dict(leaf_embed=[None])
    yield "leaf_embed wrong shape", dict(leaf_embed=[np.zeros((3, 5)), None])
    yield "leaf_embed wrong dtype", dict(leaf_embed=[np.zeros((3, 360), np.float32), None])
    yield "leaf_embed not contiguous", dict(leaf_embed=[np.zeros((3, 720))[:, ::2], None])
    yield "embedded flags wrong length", dict(embedded=np.zeros(2, np.uint8))
    yield "embedded flags wrong dtype", dict(embedded=np.zeros(4, np.float64))
    yield "graph_ptr of floats", dict(graph_ptr=np.array([0.0, 2.9]))
    yield "module of int64 beyond int32", dict(module=np.array([0, 0, 2**32 + 1, -1]))
    yield "input_row of floats", dict(input_row=np.array([0.0, 0.7, 2.0]))


@pytest.mark.parametrize("desc,change", list(bad_batches()), ids=[d for d, _ in bad_batches()])
def test_sketch_graphs_validates_the_batch(desc, change):
    # flatten() orders modules as first seen: "leaf" (0), "top" (1)
    args = sketch_args(SK, [small_graph()])
    args.update(change)
    with pytest.raises((ValueError, TypeError)):
        _core.sketch_graphs(**args)


def test_sketch_graphs_refuses_an_out_of_range_graph_in_a_subprocess():
    # graph_ptr[k + 1] beyond the rows read past the arrays before any check (defect 6)
    code, out = run_isolated("""
        import numpy as np
        import recsketch as rs
        from recsketch import _core
        sk = rs.Sketcher(360, block_size=36, density=0.3, seed=1, dtype="float64")
        m = tuple(sk.module_matrix("a", k)._native for k in range(3))
        pos = [sk.position_matrix(i)._native for i in (1, 2)]
        try:
            _core.sketch_graphs([m], pos, 360, np.array([0, 10**9, 1]),
                                np.array([0], dtype=np.int32), np.array([0, 1]), np.ones(1),
                                np.array([0, 0]), np.zeros(0, dtype=np.int64), np.zeros(0),
                                True, False, 1)
        except ValueError as exc:
            print("ValueError", exc)
    """)
    assert code == 0, out
    assert "ValueError" in out and "graph_ptr" in out, out


# -- review F1: densities below what the 32-bit gap table can represent ---------------------

def test_density_below_the_table_resolution_is_refused():
    # Gaps are drawn from 32-bit words, so a block's probability of being nonzero is a multiple
    # of 2^-32; below that q is not representable (and below ~1.1e-16, 1 - q == 1 overflowed
    # the table: every block came out nonzero).
    assert rs.MIN_DENSITY == _core.MIN_DENSITY == 2.0**-32
    for q in (1e-17, 1e-20, 5e-324, 2.0**-33, 2.0**-32 * 0.999):
        with pytest.raises(ValueError, match="density"):
            _core.BlockSparseFamily(360, 36, q)
        with pytest.raises(ValueError, match="density"):
            rs.Sketcher(360, block_size=36, density=q, seed=1)
    # the smallest accepted density gives (almost surely) no nonzero block, like the reference
    sk = rs.Sketcher(360, block_size=36, density=2.0**-32, seed=1)
    assert sk.module_matrix("a", 0).column_block_counts().max() == 0


# -- review F3: scan_blocks' first_sample ----------------------------------------------------

def test_scan_blocks_validates_first_sample():
    R = _core.BlockSparseMatrix(_core.BlockSparseFamily(360, 36, 0.3), 1, 2)
    e = np.zeros((3, 360))
    e[0, 5] = e[1, 17] = e[2, 200] = 1.0
    Y = np.ascontiguousarray(R.apply(e, False, False, 1))
    top = 2**63 - 1 - 3
    r = _core.scan_blocks(Y, 36, 0.3, 0.3, top, 1)
    assert len(r) and set(r["sample"].tolist()) <= {top, top + 1, top + 2}
    for bad in (-1, -5, top + 1, 2**63 - 2, 2**63 - 1):
        with pytest.raises(ValueError, match="first_sample"):
            _core.scan_blocks(Y, 36, 0.3, 0.3, bad, 1)


# -- review F2 (alignment): matrix operands must be aligned -----------------------------------

def _unaligned(dtype, n, m):
    item = np.dtype(dtype).itemsize
    x = np.frombuffer(bytearray(item * n * m + 1), dtype=dtype, count=n * m, offset=1)
    x = x.reshape(n, m)
    assert x.flags.c_contiguous and not x.flags.aligned
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_operands_are_refused(dtype):
    bs = _core.BlockSparseMatrix(_core.BlockSparseFamily(360, 36, 0.3), 1, 2)
    orth = _core.OrthogonalMatrix(256, 1, 2)
    for m, d in ((bs, 360), (orth, 256)):
        x = _unaligned(dtype, 2, d)
        for transpose in (False, True):
            with pytest.raises(ValueError, match="x must be aligned"):
                m.apply(x, transpose, False, 1)
    sk = rs.Sketcher(360, block_size=36, density=0.3, dtype=dtype)
    with pytest.raises(ValueError, match="aligned"):
        sk.module_matrix("a", 0).matvec(_unaligned(dtype, 2, 360))


# -- review F9: OMP_THREAD_LIMIT ------------------------------------------------------------

def test_num_threads_above_the_openmp_thread_limit_is_refused():
    if not _core.build_info().get("openmp"):
        pytest.skip("serial build")
    code = textwrap.dedent("""
        import numpy as np
        from recsketch import _core
        m = _core.BlockSparseMatrix(_core.BlockSparseFamily(360, 36, 0.3), 1, 2)
        x = np.ones((4, 360))
        m.apply(x, False, False, 3)
        try:
            m.apply(x, False, False, 4)
        except ValueError as e:
            print("refused:", e)
        else:
            print("accepted")
    """)
    env = dict(os.environ, OMP_THREAD_LIMIT="3")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "refused:" in p.stdout and "OMP_THREAD_LIMIT" in p.stdout, p.stdout


# -- review F10: one source for the core's limits -------------------------------------------

def test_max_d_sketch_comes_from_the_core():
    from recsketch import _checks
    assert _checks.MAX_D_SKETCH == _core.MAX_D_SKETCH == 2**31 - 1
