"""Every native entry point validates what it is given: bad arguments raise ValueError or
TypeError naming the problem, never a hang, an abort or a segfault (issue 12, defects 5 and 6).

Calls that used to crash the process run in a subprocess, so a regression fails one test
instead of killing the run.
"""

import os
import subprocess
import sys
import textwrap

from decimal import Decimal
from fractions import Fraction

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
    "BlockSparseMatrix.dense": lambda t: BS.dense(t),
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
    yield "input_row a self-loop", dict(input_row=np.array([0, 2, 2]))
    yield "input_row a later row (cycle)", dict(input_row=np.array([0, 3, 2]))
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


# -- every entry point of recsketch._core against bad arguments -------------------------------
#
# Each entry point has a valid call (ENTRY_POINTS: callable, keyword arguments, and the kind of
# each argument); bad_argument_cases() derives the bad calls from the kinds, so a new argument
# of a known kind is covered by listing it. All cases run in child interpreters (one child
# runs the cases in order until one kills it; the next child resumes after it), so an abort,
# a segfault or a hang fails that case, not the test run.

INT, UINT, REAL, FLAG, THREADS, ARRAY, STR = ("int", "uint", "real", "flag", "threads", "array",
                                             "str")

X256 = X[:, :256].copy()
Y_DECODE = np.ones((3, 36), np.int8)


def _sketch_call(**changes):
    args = sketch_args(SK, [small_graph()])
    args.update(changes)
    return _core.sketch_graphs(**args)


def _embedded_leaf_args():
    """sketch_graphs arguments with a leaf embedding for module "leaf" (k = 2) and its two
    leaves flagged embedded."""
    args = sketch_args(SK, [small_graph()])
    A = np.random.default_rng(3).standard_normal((3, SK.d_sketch))
    embedded = np.zeros(4, np.uint8)
    embedded[:2] = 1
    args.update(leaf_embed=[A, None], embedded=embedded)
    return args


# name -> (callable, valid keyword arguments, {argument: kind})
ENTRY_POINTS = {
    "BlockSparseFamily": (_core.BlockSparseFamily,
                          dict(d_sketch=360, block_size=36, density=0.3),
                          dict(d_sketch=INT, block_size=INT, density=REAL)),
    "BlockSparseFamily.gap": (FAMILY.gap, dict(u32=5), dict(u32=UINT)),
    "BlockSparseMatrix": (_core.BlockSparseMatrix, dict(family=FAMILY, seed=1, key=2),
                          dict(seed=UINT, key=UINT)),
    "BlockSparseMatrix.apply": (BS.apply, dict(x=X, transpose=False, half=False, num_threads=1),
                                dict(x=ARRAY, transpose=FLAG, half=FLAG, num_threads=THREADS)),
    "BlockSparseMatrix.column_counts": (BS.column_counts, dict(num_threads=1, columns=-1),
                                        dict(num_threads=THREADS, columns=INT)),
    "BlockSparseMatrix.csc": (BS.csc, dict(float64=True, num_threads=1, columns=5),
                              dict(float64=FLAG, num_threads=THREADS, columns=INT)),
    "BlockSparseMatrix.dense": (BS.dense, dict(num_threads=1), dict(num_threads=THREADS)),
    "BlockSparseMatrix.random_string": (BS.random_string, dict(column=3), dict(column=INT)),
    "BlockSparseMatrix.signature": (BS.signature, {}, {}),
    "OrthogonalMatrix": (_core.OrthogonalMatrix, dict(d_sketch=256, seed=1, key=2),
                         dict(d_sketch=INT, seed=UINT, key=UINT)),
    "OrthogonalMatrix.apply": (ORTH.apply, dict(x=X256, transpose=False, half=False,
                                                num_threads=1),
                               dict(x=ARRAY, transpose=FLAG, half=FLAG, num_threads=THREADS)),
    "OrthogonalMatrix.signs": (ORTH.signs, dict(round=2), dict(round=INT)),
    "_parallel_probe": (_core._parallel_probe, dict(n=4, num_threads=1, throw_from=-1),
                        dict(n=INT, num_threads=THREADS, throw_from=INT)),
    "_pool_stats": (_core._pool_stats, {}, {}),
    "_set_baseline_isa": (_core._set_baseline_isa, dict(forced=False), dict(forced=FLAG)),
    "_set_sketch_working_bytes": (_core._set_sketch_working_bytes,
                                  dict(n=_core._set_sketch_working_bytes(1 << 28)), dict(n=INT)),
    "add_rate_probe": (_core.add_rate_probe, dict(rounds=10), dict(rounds=INT)),
    "alloc_limit": (_core.alloc_limit, {}, {}),
    "set_alloc_limit": (_core.set_alloc_limit, dict(nbytes=_core.alloc_limit()),
                        dict(nbytes=UINT)),
    "build_info": (_core.build_info, {}, {}),
    "check_alloc": (_core.check_alloc, dict(nbytes=8, what="x", hint=""),
                    dict(nbytes=UINT, what=STR, hint=STR)),
    "ceil_log2": (_core.ceil_log2, dict(n=5), dict(n=INT)),
    "clear_walk_cache": (_core.clear_walk_cache, {}, {}),
    "decode_blocks": (_core.decode_blocks, dict(blocks=Y_DECODE, d_sketch=360),
                      dict(blocks=ARRAY, d_sketch=INT)),
    "enc_pattern": (_core.enc_pattern, dict(column=7, b_m=1, b_s=-1, d_sketch=360, block_size=36),
                    dict(column=INT, b_m=INT, b_s=INT, d_sketch=INT, block_size=INT)),
    "min_block_size": (_core.min_block_size, dict(d_sketch=360), dict(d_sketch=INT)),
    "mix64": (_core.mix64, dict(z=12345), dict(z=UINT)),
    "module_key": (_core.module_key, dict(name="a", slot=1), dict(name=STR, slot=UINT)),
    "paper_density": (_core.paper_density, dict(d_sketch=360), dict(d_sketch=INT)),
    "position_key": (_core.position_key, dict(i=3), dict(i=UINT)),
    "scan_blocks": (_core.scan_blocks, dict(Y=Y_SCAN, block_size=36, density=0.3, tau=0.3,
                                            first_sample=0, num_threads=1),
                    dict(Y=ARRAY, block_size=INT, density=REAL, tau=REAL, first_sample=INT,
                         num_threads=THREADS)),
    "set_walk_cache_limit": (_core.set_walk_cache_limit,
                             dict(bytes=_core.walk_cache_info()["limit"]), dict(bytes=UINT)),
    "set_wht_path": (_core.set_wht_path, dict(path="auto"), dict(path=STR)),
    "sketch_graphs": (_sketch_call, dict(d=360, float64=True, return_objects=False, num_threads=1),
                      dict(d=INT, float64=FLAG, return_objects=FLAG, num_threads=THREADS)),
    "walk_cache_info": (_core.walk_cache_info, {}, {}),
}


def native_entry_points():
    """Every function of recsketch._core and every method (constructors included) of its
    classes, by introspection."""
    names = set()
    for name, obj in vars(_core).items():
        if name.startswith("__"):
            continue
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if attr == "__init__":
                    names.add(name)
                elif not attr.startswith("_") and callable(member):
                    names.add(f"{name}.{attr}")
        elif callable(obj):
            names.add(name)
    return names


def test_every_native_entry_point_is_listed():
    # a new entry point must join ENTRY_POINTS (and so the bad-argument cases below)
    assert native_entry_points() == set(ENTRY_POINTS)


# Bad values by kind: (label, value, exception, message pattern).
_NOT_INTEGERS = [("True", True, "a bool"), ("np.True_", np.True_, "a bool"),
                 ("False", False, "a bool"), ("1.0", 1.0, "float"),
                 ("np.float32", np.float32(2.0), "float32"),
                 ("np.float64", np.float64(2.0), "float"),
                 ("str", "1", "str"), ("None", None, "NoneType"), ("complex", 1 + 0j, "complex"),
                 ("array", np.array([1]), "ndarray")]


def _bad_values(kind, arg):
    if kind in (INT, UINT, THREADS):
        for label, value, what in _NOT_INTEGERS:
            yield label, value, TypeError, f"{arg} must be an integer, got {what}"
        for huge in (2**64, 2**70, -(2**70)):
            yield str(huge), huge, ValueError, f"{arg} is out of range"
    if kind == UINT:
        yield "-1", -1, ValueError, f"{arg} is out of range"
    if kind == THREADS:
        for bad in (-1, MAX_NUM_THREADS + 1, 2**31 - 1, 2**62):
            yield str(bad), bad, ValueError, "num_threads"
    if kind == REAL:
        for label, value, what in [("True", True, "a bool"), ("np.True_", np.True_, "a bool"),
                                   ("str", "0.3", "str"), ("None", None, "NoneType"),
                                   ("complex", 0.3 + 0j, "complex"),
                                   ("array", np.array([0.3]), "ndarray"),
                                   # not a numbers.Real (Python keeps it apart from floats)
                                   ("Decimal", Decimal("0.3"), "Decimal")]:
            yield label, value, TypeError, f"{arg} must be a real number, got {what}"
        for label, value in [("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf), ("-0.3", -0.3),
                             ("0", 0.0), ("1e400", 10**400), ("Fraction(-3, 10)", Fraction(-3, 10)),
                             ("Fraction(10**400)", Fraction(10**400))]:
            yield label, value, ValueError, arg
    if kind == STR:
        for label, value, what in [("bytes", b"auto", "bytes"), ("int", 1, "int"),
                                   ("None", None, "NoneType")]:
            yield label, value, TypeError, f"{arg} must be a str, got {what}"
        yield "lone surrogate", "\ud800", ValueError, f"{arg} is not encodable as UTF-8"
    if kind == FLAG:
        # a flag is True/False (or a NumPy bool), not any object with a truth value
        for label, value in [("2", 2), ("1", 1), ("0", 0), ("None", None), ("1.0", 1.0),
                             ("str", "yes"), ("array", np.array([True]))]:
            yield label, value, TypeError, f"{arg} must be a bool, got {type(value).__name__}"


# Out-of-range integers of the right type, per entry point and argument.
_OUT_OF_RANGE = {
    ("BlockSparseFamily", "d_sketch"): [0, -360, 2**31, 2**62],
    ("BlockSparseFamily", "block_size"): [0, -36, 35, 33, 2**62],
    ("BlockSparseFamily.gap", "u32"): [2**32],
    ("BlockSparseMatrix.column_counts", "columns"): [-2, 361, 2**62],
    ("BlockSparseMatrix.csc", "columns"): [-2, 361, 2**62],
    ("BlockSparseMatrix.random_string", "column"): [-1, 360, 2**62],
    ("OrthogonalMatrix", "d_sketch"): [0, -256, 255, 2**31, 2**62],
    ("OrthogonalMatrix.signs", "round"): [0, 4, -1, 2**40],
    ("_parallel_probe", "n"): [-1, 2**21, 2**62],
    ("_set_sketch_working_bytes", "n"): [0, -1],
    ("add_rate_probe", "rounds"): [-1, 2**31, 2**62],
    ("ceil_log2", "n"): [0, -1],
    ("decode_blocks", "d_sketch"): [0, -360, 2**31, 2**62, 361],
    ("enc_pattern", "column"): [-1, 360, 2**62],
    ("enc_pattern", "b_m"): [0, 2, -2],
    ("enc_pattern", "b_s"): [0, 3],
    ("enc_pattern", "d_sketch"): [0, 2**31, 2**62],
    ("enc_pattern", "block_size"): [0, 35, 2**62],
    ("min_block_size", "d_sketch"): [0, -1, 2**31, 2**62],
    ("paper_density", "d_sketch"): [0, -1, 2**31, 2**62],
    ("scan_blocks", "block_size"): [0, 35, 195, 2**62],
    ("scan_blocks", "first_sample"): [-1, 2**63 - 1],
    ("sketch_graphs", "d"): [0, -360, 512, 2**31, 2**62],
    ("set_wht_path", "path"): ["AVX2", "", "auto\0"],
}

# Bad reals of the right type, beyond the generic ones.
_REAL_OUT_OF_RANGE = {
    ("BlockSparseFamily", "density"): [1.5, 2.0**-33],
    ("scan_blocks", "density"): [1.5],
    ("scan_blocks", "tau"): [1.0, 2.0],
}


def _unaligned(dtype, n, m):
    item = np.dtype(dtype).itemsize
    x = np.frombuffer(bytearray(item * n * m + 1), dtype=dtype, count=n * m, offset=1)
    return x.reshape(n, m)


def _float_matrix_cases(arg, good):
    """Bad float matrices for an argument that takes a C-contiguous float32/float64 (n, d)."""
    n, d = good.shape
    for dt in (np.int64, np.int32, np.float16, np.complex128, np.bool_, object, "U3"):
        yield (f"dtype {np.dtype(dt)}", good.astype(dt), TypeError,
               f"{arg} must be a float32 or float64")
    yield "a list", good.tolist(), TypeError, "incompatible function arguments"
    yield "1-D", good[0].copy(), ValueError, f"{arg} must be 2-D"
    yield "3-D", good[None].copy(), ValueError, f"{arg} must be 2-D"
    yield "0-D", np.float64(1.0), (TypeError, ValueError), arg
    yield "strided", np.repeat(good, 2, axis=1)[:, ::2], ValueError, "C-contiguous"
    yield "negative stride", good[:, ::-1], ValueError, "C-contiguous"
    yield "Fortran order", np.asfortranarray(np.vstack([good, good])), ValueError, "C-contiguous"
    yield "broadcast 2**50 rows", np.broadcast_to(good[0], (2**50, d)), ValueError, "C-contiguous"
    yield "unaligned", _unaligned(np.float64, n, d), ValueError, "aligned"
    for label, value in [("NaN", np.nan), ("inf", np.inf), ("-inf", -np.inf)]:
        bad = good.copy()
        bad[-1, -1] = value
        yield label, bad, ValueError, "NaN or infinity"
        yield f"{label} float32", bad.astype(np.float32), ValueError, "NaN or infinity"


def _array_cases(name):
    if name.endswith(".apply"):
        good = ENTRY_POINTS[name][1]["x"]
        yield from _float_matrix_cases("x", good)
        yield "too many columns", np.zeros((2, good.shape[1] + 1)), ValueError, "columns"
    elif name == "scan_blocks":
        yield from _float_matrix_cases("Y", Y_SCAN)
        yield "no columns", np.zeros((2, 0)), ValueError, "columns"
        yield "columns not a multiple of block_size", np.zeros((2, 350)), ValueError, "block_size"
    elif name == "decode_blocks":
        for dt in (np.float64, np.int64, np.uint8, np.complex128, object):
            yield f"dtype {np.dtype(dt)}", Y_DECODE.astype(dt), TypeError, "Cannot cast"
        yield "1-D", Y_DECODE[0].copy(), ValueError, "2-D"
        yield "3-D", Y_DECODE[None].copy(), ValueError, "2-D"
        yield "width 0", np.ones((3, 0), np.int8), ValueError, "block_size"
        yield "width 33", np.ones((3, 33), np.int8), ValueError, "block_size"
        yield "width 2**62 (broadcast)", np.broadcast_to(np.int8(1), (1, 2**62)), ValueError, \
            "block_size"


def bad_argument_cases():
    """(id, entry point, keyword changes, exception, message pattern)."""
    for name, (_, good, kinds) in ENTRY_POINTS.items():
        for arg, kind in kinds.items():
            if kind == ARRAY:
                for label, value, exc, pattern in _array_cases(name):
                    yield f"{name}:{arg}={label}", name, {arg: value}, exc, pattern
                continue
            for label, value, exc, pattern in _bad_values(kind, arg):
                yield f"{name}:{arg}={label}", name, {arg: value}, exc, pattern
            for value in _OUT_OF_RANGE.get((name, arg), []):
                yield f"{name}:{arg}={value!r}", name, {arg: value}, ValueError, ""
            for value in _REAL_OUT_OF_RANGE.get((name, arg), []):
                yield f"{name}:{arg}={value}", name, {arg: value}, ValueError, arg
        # a keyword nobody takes
        yield f"{name}:unknown keyword", name, {"no_such_argument": 1}, TypeError, ""
    # sketch_graphs' arrays and lists (sizes and orders are in bad_batches above)
    for label, value in [("complex", np.array([0.6, 0.8, 1.0, 0.0, 1.0]) + 0j),
                         ("bool", np.ones(5, bool)), ("object", np.array([0.6] * 5, object)),
                         ("str", np.array(["0.6"] * 5)), ("None", None)]:
        yield f"sketch_graphs:attr={label}", "sketch_graphs", dict(attr=value), TypeError, "attr"
        yield (f"sketch_graphs:input_weight={label}", "sketch_graphs",
               dict(input_weight=value[:3] if value is not None else None), TypeError,
               "input_weight")
    embedded = _embedded_leaf_args()
    for label, value in [("NaN", np.nan), ("inf", np.inf)]:
        bad = embedded["leaf_embed"][0].copy()
        bad[1, 7] = value
        yield (f"sketch_graphs:leaf_embed {label}", "sketch_graphs",
               dict(leaf_embed=[bad, None], embedded=embedded["embedded"]), ValueError,
               "leaf embedding contains NaN or infinity")
    yield ("sketch_graphs:graph_ptr huge", "sketch_graphs", dict(graph_ptr=np.array([0, 2**62])),
           ValueError, "")
    yield ("sketch_graphs:module list", "sketch_graphs", dict(modules=(1, 2)), TypeError, "")
    # honest but huge outputs: refused before allocating (the allocation limit, 4 GiB)
    for case_id, (name, changes, pattern) in HUGE.items():
        yield case_id, name, changes, ValueError, pattern
    # __init__ again on a constructed instance
    for name in AGAIN:
        yield name, name, {}, TypeError, \
            f"{name.split('.')[0]}.__init__ called on an instance already initialised"
    yield ("sketch_graphs:positions not matrices", "sketch_graphs",
           dict(positions=[None, None]), TypeError, "matrix")


def _huge_sketch(**changes):
    args = sketch_args(rs.Sketcher(2**30, family="orthogonal", dtype="float64"),
                       [small_graph()])
    args.update(changes)
    return _core.sketch_graphs(**args)


_HUGE_FAMILY = _core.BlockSparseFamily(102 * 2**24, 102, 0.01)   # d = 1.7e9
_HUGE_BS = _core.BlockSparseMatrix(_HUGE_FAMILY, 1, 2)
_HUGE_ORTH = _core.OrthogonalMatrix(2**30, 1, 2)

# Calls whose output or scratch is a product of their arguments beyond the allocation limit:
# id -> (entry point, keyword changes, message pattern). Entry points listed in HUGE_CALLS.
HUGE_CALLS = {
    "BlockSparseMatrix.column_counts@huge": _HUGE_BS.column_counts,
    "BlockSparseMatrix.csc@huge": _HUGE_BS.csc,
    "BlockSparseMatrix.dense@huge": _HUGE_BS.dense,
    "BlockSparseMatrix.apply@huge": _HUGE_BS.apply,
    "OrthogonalMatrix.apply@huge": _HUGE_ORTH.apply,
    "OrthogonalMatrix.signs@huge": _HUGE_ORTH.signs,
    "sketch_graphs@huge": _huge_sketch,
}
_LIMIT = "above the allocation limit of 4.0 GiB"
HUGE = {
    "column_counts d=1.7e9": ("BlockSparseMatrix.column_counts@huge", dict(num_threads=1),
                              "column_counts(columns=1711276032): a count of 8 bytes per column "
                              "would need 13690208256 bytes (12.8 GiB), " + _LIMIT),
    "csc d=1.7e9": ("BlockSparseMatrix.csc@huge", dict(float64=True), "csc(columns=1711276032)"),
    "dense d=1.7e9": ("BlockSparseMatrix.dense@huge", {}, "a 1711276032 x 1711276032 float64"),
    "block-sparse apply of one short vector, d=1.7e9":
        ("BlockSparseMatrix.apply@huge", dict(x=np.ones((1, 1))), _LIMIT),
    "block-sparse apply of 2**20 short vectors":
        ("BlockSparseMatrix.apply@huge", dict(x=np.ones((2**20, 1), np.float32)), _LIMIT),
    "orthogonal apply, d=2**30": ("OrthogonalMatrix.apply@huge", dict(x=np.ones((1, 1))),
                                  "apply: the product of x (1 rows) with a 1073741824 x "
                                  "1073741824 matrix (output and scratch) would need"),
    "sketch_graphs d=2**30 float64": ("sketch_graphs@huge", {}, "sketch_graphs: 1 sketches of "
                                      "d=1073741824 float64"),
    "sketch_graphs d=2**30 float32 with objects": ("sketch_graphs@huge",
                                                   dict(float64=False, return_objects=True),
                                                   "and 4 object sketches"),
    "decode_blocks of 2**40 broadcast rows": ("decode_blocks", dict(
        blocks=np.broadcast_to(Y_DECODE[0], (2**40, 36))), "decode_blocks: copying blocks"),
}


def _again(cls_name):
    """cls_name.__init__ called again on a constructed instance: refused, and the instance
    keeps what it was built with."""
    call, good, _ = ENTRY_POINTS[cls_name]

    def again(**changes):
        obj = call(**good)
        before = {k: getattr(obj, k) for k in ("d_sketch", "seed", "key", "density")
                  if hasattr(type(obj), k)}
        other = {k: (v + 1 if k in ("seed", "key") else v) for k, v in good.items()}
        try:
            obj.__init__(**other)
        finally:
            assert {k: getattr(obj, k) for k in before} == before
    return again


AGAIN = {f"{name}.__init__ again": (_again(name), {}, {}) for name, (call, _, _) in
         ENTRY_POINTS.items() if isinstance(call, type)}


def valid_argument_cases():
    """(id, entry point, keyword changes) that must be accepted."""
    args = _embedded_leaf_args()
    yield "sketch_graphs:leaf_embed", "sketch_graphs", {k: args[k] for k in ("leaf_embed",
                                                                           "embedded")}
    for name, (_, good, kinds) in ENTRY_POINTS.items():
        yield f"{name}:valid", name, {}
        for arg, kind in kinds.items():
            if kind in (INT, UINT, THREADS) and not isinstance(good[arg], np.ndarray):
                yield f"{name}:{arg}=np.int64", name, {arg: np.int64(good[arg])}
            if kind == REAL:
                yield f"{name}:{arg}=np.float32", name, {arg: np.float32(good[arg])}
                # any numbers.Real, rounded to float64 as float() does
                yield f"{name}:{arg}=Fraction", name, {arg: Fraction(good[arg])}
            if kind == FLAG:
                yield f"{name}:{arg}=np.bool_", name, {arg: np.bool_(good[arg])}
            if kind == ARRAY:
                ro = good[arg].copy()
                ro.flags.writeable = False
                yield f"{name}:{arg}=read-only", name, {arg: ro}
                yield f"{name}:{arg}=no rows", name, {arg: good[arg][:0].copy()}
                if name.endswith(".apply") or name == "scan_blocks":
                    yield f"{name}:{arg}=float32", name, {arg: good[arg].astype(np.float32)}


BAD_CASES = {case[0]: case[1:] for case in bad_argument_cases()}
VALID_CASES = {case[0]: case[1:] for case in valid_argument_cases()}


def _run_case(case_id):
    """Runs one case here; returns "ok" or "raised <type>: <message>"."""
    name, changes = (BAD_CASES.get(case_id) or VALID_CASES[case_id])[:2]
    if name in HUGE_CALLS:
        call, good = HUGE_CALLS[name], {}
    else:
        call, good, _ = {**ENTRY_POINTS, **AGAIN}[name]
    try:
        call(**{**good, **changes})
    except Exception as exc:  # noqa: BLE001  (reported to the parent, which judges it)
        return f"raised {type(exc).__name__}: {' '.join(str(exc).split())}"
    return "ok"


# A case still running after HANG_SECONDS has hung: faulthandler ends its child (exit code 1,
# "Timeout" and the stack on stderr). CHILD_SECONDS bounds a whole child in case that fails.
HANG_SECONDS = 20
CHILD_SECONDS = 1200
_READY = "cases ready"


def _child_main(first):
    """In a child interpreter: run every case from index `first` on, one line each."""
    import faulthandler
    import recsketch as rs
    rs.set_alloc_limit(4 << 30)   # the default's floor, as in the parent (conftest.py)
    ids = list(BAD_CASES) + list(VALID_CASES)
    print(_READY, flush=True)
    for k in range(first, len(ids)):
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        print(f"{k}\t{_run_case(ids[k])}", flush=True)
    faulthandler.cancel_dump_traceback_later()


def _text(out):
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def _run_cases_in_children():
    """Every case's outcome: children run the cases in order; after a child dies or hangs, the
    case after its last reported one is marked with its end, and the next child resumes."""
    ids = list(BAD_CASES) + list(VALID_CASES)
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    first = 0
    while first < len(ids):
        code = (f"import sys; sys.path.insert(0, {here!r}); "
                f"import test_native_entry_points as t; t._child_main({first})")
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=CHILD_SECONDS)
            out, err, code_ = proc.stdout, proc.stderr, proc.returncode
            end = (f"hung (over {HANG_SECONDS} s)" if "Timeout (" in err else
                   f"the child died (exit code {code_})")
        except subprocess.TimeoutExpired as exc:
            out, err, code_ = _text(exc.stdout), _text(exc.stderr), None
            end = f"hung (the child was killed after {CHILD_SECONDS} s)"
        lines = out.splitlines()
        if _READY not in lines:
            # the child could not even import the cases: every case fails with its stderr
            for case_id in ids[first:]:
                results[case_id] = f"no child started ({end}): {err[-3000:]}"
            break
        resumed = first
        for line in lines:
            k, tab, outcome = line.partition("\t")
            if not tab or not k.isdigit() or not resumed <= int(k) < len(ids):
                continue  # not a case line (something the code under test printed)
            results[ids[int(k)]] = outcome
            first = max(first, int(k) + 1)
        if first < len(ids) and (code_ != 0 or first == resumed):
            # the case after the last reported one ended (or stalled) the child
            results[ids[first]] = f"{end}: {err[-3000:]}"
            first += 1
    return results


_CHILD_RESULTS = {}


def child_result(case_id):
    """The outcome of a case, run in child interpreters (all cases at once, on first use)."""
    if not _CHILD_RESULTS:
        _CHILD_RESULTS.update(_run_cases_in_children())
    return _CHILD_RESULTS[case_id]


@pytest.mark.parametrize("case_id", list(BAD_CASES))
def test_native_entry_point_refuses_bad_arguments(case_id):
    _, _, exc, pattern = BAD_CASES[case_id]
    outcome = child_result(case_id)
    names = tuple(e.__name__ for e in (exc if isinstance(exc, tuple) else (exc,)))
    assert outcome.startswith("raised "), outcome
    raised, message = outcome[len("raised "):].split(": ", 1)
    assert raised in names, outcome
    assert pattern in message, outcome


@pytest.mark.parametrize("case_id", list(VALID_CASES))
def test_native_entry_point_accepts_valid_arguments(case_id):
    assert child_result(case_id) == "ok"


def test_sketch_graphs_holds_its_matrices_while_the_kernel_runs():
    # The kernel runs without the GIL; another thread that empties the caller's lists then
    # freed the matrices (and leaf embeddings) under it: a use after free (AddressSanitizer:
    # heap-use-after-free), or sketches of freed memory. Run in a child: it may crash.
    code, out = run_isolated("""
        import threading, time
        import numpy as np
        import recsketch as rs
        from recsketch import _core
        from recsketch.graph import flatten

        d = 3072
        def graph(k):
            g = rs.Graph()
            a = g.add("leaf", np.eye(4)[k % 4])
            b = g.add("mid", [0.6, 0.8], [(a, 1.0)])
            g.set_output([(b, 1.0)])
            return g
        flat = flatten([graph(k) for k in range(64)], d)

        def fresh_lists():
            # matrices referenced by these lists only
            family = _core.BlockSparseFamily(d, 96, 0.5)
            mats = lambda key: tuple(_core.BlockSparseMatrix(family, 7, key + c) for c in range(3))
            return ([mats(10 * (k + 1)) for k in range(len(flat.modules))],
                    [_core.BlockSparseMatrix(family, 7, 1000 + i) for i in range(2)])

        def run(modules, positions):
            return _core.sketch_graphs(modules, positions, d, flat.graph_ptr, flat.module,
                                       flat.attr_ptr, flat.attr, flat.input_ptr, flat.input_row,
                                       flat.input_weight, True, True, 1)

        reference = run(*fresh_lists())
        for trial in range(3):
            modules, positions = fresh_lists()
            started = threading.Event()
            def empty_the_lists():
                started.wait()
                time.sleep(0.001)   # takes the GIL once the kernel has released it
                modules.clear()
                positions.clear()
            t = threading.Thread(target=empty_the_lists)
            t.start()
            started.set()
            out = run(modules, positions)
            t.join()
            assert not modules
            for a, b in zip(out, reference):
                np.testing.assert_array_equal(a, b)
        print("same sketches")
    """)
    assert code == 0, out
    assert "same sketches" in out, out


def test_sketch_graphs_reads_its_own_copy_of_the_index_arrays():
    # The index arrays were checked with the GIL held and read again by the kernel without it:
    # another thread writing an out-of-range index in between segfaulted the process. Every
    # call must now either refuse the batch (the check saw a bad index) or return exactly the
    # sketches of the unmodified batch. Run in a child: it may crash.
    code, out = run_isolated("""
        import sys, threading
        import numpy as np
        sys.path.insert(0, %r)
        from test_native_entry_points import sketch_args, SK, small_graph
        from recsketch import _core

        args = sketch_args(SK, [small_graph() for _ in range(3000)], num_threads=1)
        args["embedded"] = np.zeros(len(args["module"]), dtype=np.uint8)
        reference = _core.sketch_graphs(**args)[0]
        names = ["graph_ptr", "module", "attr_ptr", "input_ptr", "input_row", "embedded"]
        good = {n: args[n].copy() for n in names}
        bad = {n: np.full_like(good[n], np.iinfo(good[n].dtype).max) for n in names}
        bad["embedded"][:] = 1     # a flagged row with no leaf embedding
        stop = threading.Event()
        def mutate():
            while not stop.is_set():
                for n in names:
                    args[n][:] = bad[n]
                    args[n][:] = good[n]
        refused = same = 0
        t = threading.Thread(target=mutate)
        t.start()
        try:
            for trial in range(30):
                try:
                    overall = _core.sketch_graphs(**args)[0]
                except ValueError:
                    refused += 1
                    continue
                np.testing.assert_array_equal(overall, reference)
                same += 1
        finally:
            stop.set()
            t.join()
        print("refused", refused, "same", same)
    """ % os.path.dirname(os.path.abspath(__file__)), timeout=300)
    assert code == 0, out
    assert "same" in out, out


def test_an_uninitialised_instance_is_refused():
    # Cls.__new__(Cls) skips __init__; pybind11 then handed methods unconstructed storage:
    # OrthogonalMatrix.apply tried to allocate 688 TiB, BlockSparseFamily.gap segfaulted.
    code, out = run_isolated("""
        import numpy as np
        from recsketch import _core
        import test_native_entry_points as t

        def blank(cls):
            return cls.__new__(cls)

        calls = {}
        for name, (call, good, _) in t.ENTRY_POINTS.items():
            cls_name, _, method = name.partition(".")
            cls = getattr(_core, cls_name)
            if method and isinstance(cls, type):
                calls[name] = lambda cls=cls, method=method, good=good: \\
                    getattr(blank(cls), method)(**good)
        for cls, props in [(_core.BlockSparseFamily, ["d_sketch", "block_size", "density",
                                                      "n_blocks", "index_bits", "scale"]),
                           (_core.BlockSparseMatrix, ["seed", "key", "block_size", "density"]),
                           (_core.OrthogonalMatrix, ["seed", "key"])]:
            for p in props:
                calls[f"{cls.__name__}.{p}"] = lambda cls=cls, p=p: getattr(blank(cls), p)
        calls["BlockSparseMatrix(blank family)"] = \\
            lambda: _core.BlockSparseMatrix(blank(_core.BlockSparseFamily), 1, 2)
        calls["sketch_graphs(blank matrix)"] = lambda: t._sketch_call(
            modules=[(blank(_core.BlockSparseMatrix),) * 3] * 2)
        for name, call in calls.items():
            try:
                call()
            except (TypeError, ValueError, RuntimeError) as exc:
                print(name, "refused:", type(exc).__name__, exc, flush=True)
            else:
                print(name, "ACCEPTED", flush=True)
        print("done", len(calls))
    """.replace("import test_native_entry_points",
                f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                "import test_native_entry_points"))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1].startswith("done"), out
    n = int(lines[-1].split()[1])
    refused = [line for line in lines if " refused: TypeError" in line
               and "is not initialised" in line]
    assert len(refused) == n, out
