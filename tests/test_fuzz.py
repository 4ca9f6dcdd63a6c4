"""Property-based fuzzing of the native entry points and of Graph/JSON input (issue 12).

Random shapes, dtypes, strides, NaN/inf, empty, huge and negative values and wrong types.
The only acceptable outcomes are a result equal to an independent reference (dense NumPy
products of the matrices rebuilt by tests/reference.py, the NumPy recursion of the sketch,
Python's integer arithmetic) or a ValueError/TypeError. Example counts are bounded for CI.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import recsketch as rs
from recsketch import _core
from recsketch._checks import MAX_NUM_THREADS
from reference import DenseMatrices, block_sparse_dense, module_key, orthogonal_dense, \
    reference_sketch

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BAD = (ValueError, TypeError)

D_BS, B_BS, Q_BS, SEED, KEY = 360, 36, 0.3, 7, 11
BS = _core.BlockSparseMatrix(_core.BlockSparseFamily(D_BS, B_BS, Q_BS), SEED, KEY)
BS_DENSE = block_sparse_dense(SEED, KEY, D_BS, B_BS, Q_BS)
D_OR = 64
OR = _core.OrthogonalMatrix(D_OR, SEED, KEY)
OR_DENSE = orthogonal_dense(SEED, KEY, D_OR)

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_, np.complex128,
          np.uint8]
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0, -0.0, 1e-310]


@st.composite
def arrays(draw, d):
    """An array of random dtype, rank, shape, layout and values (mostly near-valid)."""
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.sampled_from([2, 2, 2, 1, 0, 3]))
    cols = draw(st.sampled_from([d, d, d, 0, 1, d // 2, d - 1, d + 1, 2 * d]))
    shape = {0: (), 1: (cols,), 2: (draw(st.integers(0, 5)), cols),
             3: (2, 1, cols)}[ndim]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 1e-3, 1e6]))
    if values.size and draw(st.booleans()):
        flat = values.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIAL))
    with np.errstate(all="ignore"):
        a = values.astype(dtype)
    layout = draw(st.sampled_from(["c", "c", "fortran", "strided", "transposed", "unaligned"]))
    if layout == "fortran" and a.ndim == 2:
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim >= 1:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "transposed" and a.ndim == 2:
        a = np.ascontiguousarray(a.T).T
    elif layout == "unaligned" and a.dtype.itemsize > 1:
        # C-contiguous but one byte off its dtype's alignment (review F2)
        buf = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, count=a.size, offset=1)
        buf[...] = a.reshape(-1)
        a = buf.reshape(a.shape)
    return a


def valid_operand(a, d, short_ok):
    """Whether the core must accept ``a`` as x (n, m) for a d x d matrix, per its contract."""
    return (a.dtype in (np.float32, np.float64) and a.ndim == 2 and a.flags.c_contiguous
            and a.flags.aligned
            and bool(np.all(np.isfinite(a)))
            and (0 <= a.shape[1] <= d if short_ok else a.shape[1] == d))


def reference_apply(dense, a, transpose, half):
    x = a.astype(np.float64)
    if transpose:
        y = x @ dense
    else:
        y = x @ dense[:, :a.shape[1]].T
    if half:
        y = 0.5 * (x + y)
    return y


@pytest.mark.parametrize("family", ["block_sparse", "orthogonal"])
@FUZZ
@given(data=st.data())
def test_matrix_apply(family, data):
    m, dense, d = (BS, BS_DENSE, D_BS) if family == "block_sparse" else (OR, OR_DENSE, D_OR)
    a = data.draw(arrays(d))
    transpose, half = data.draw(st.booleans()), data.draw(st.booleans())
    threads = data.draw(st.sampled_from([0, 1, 2, 3, MAX_NUM_THREADS, -1, MAX_NUM_THREADS + 1]))
    must_accept = (valid_operand(a, d, short_ok=not (transpose or half))
                   and 0 <= threads <= MAX_NUM_THREADS)
    try:
        out = m.apply(a, transpose, half, threads)
    except BAD:
        assert not must_accept, "a valid operand was refused"
        return
    assert must_accept, f"accepted an invalid operand {a.dtype} {a.shape} {a.flags.c_contiguous}"
    assert out.dtype == a.dtype and out.shape == (a.shape[0], d)
    want = reference_apply(dense, a, transpose, half)
    tol = 1e-5 if a.dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * scale)


@FUZZ
@given(st.one_of(st.integers(-2**70, 2**70), st.sampled_from(
    [0, 1, 2, 2**31 - 1, 2**31, 2**62, 2**62 + 1, 2**63 - 1, -1])))
def test_integer_helpers(n):
    for fn in (_core.min_block_size, _core.paper_density):
        try:
            out = fn(n)
        except BAD:
            assert not 1 <= n <= 2**31 - 1
            continue
        assert 1 <= n <= 2**31 - 1
        if fn is _core.min_block_size:
            assert out == 3 * ((n - 1).bit_length() + 3)
        else:
            assert out == pytest.approx(min(1.0, math.log2(n) / math.sqrt(n)), rel=1e-12)
    try:
        bits = _core.ceil_log2(n)
    except BAD:
        assert not 1 <= n < 2**63
    else:
        assert bits == (n - 1).bit_length()


@FUZZ
@given(d=st.one_of(st.integers(-5, 2**16), st.sampled_from([2**31 - 1, 2**31, 2**40, -2**40])),
       b=st.integers(-5, 300),
       q=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(1e-3, 1)))
def test_block_sparse_family(d, b, q):
    valid = (1 <= d <= 2**31 - 1 and b >= 3 and b % 3 == 0
             and b >= 3 * ((d - 1).bit_length() + 3) and d % b == 0 and 2.0**-32 <= q <= 1)
    try:
        fam = _core.BlockSparseFamily(d, b, q)
    except BAD:
        assert not valid
        return
    assert valid
    assert (fam.d_sketch, fam.block_size, fam.n_blocks) == (d, b, d // b)
    assert fam.scale == pytest.approx(1 / math.sqrt(d * q))


# Densities near and below the 2^-32 resolution of the gap table (review F1), subnormals
# included: the core must refuse exactly what tests/reference.py refuses and otherwise build
# the reference's matrix.
D_TINY, B_TINY = 72, 36


@FUZZ
@given(q=st.one_of(st.sampled_from([5e-324, 1e-320, 2.2e-308, 1e-300, 1e-20, 1e-17, 1.1e-16,
                                    2.0**-53, 2.0**-33, 2.0**-32, 2.0**-32 * (1 - 2**-52),
                                    2.0**-32 * (1 + 2**-52), 2.0**-31, 1e-9, 1e-6]),
                   st.floats(min_value=0.0, max_value=1e-6, allow_subnormal=True),
                   st.floats(min_value=0.0, max_value=1.0, allow_subnormal=True)))
def test_tiny_densities_match_the_reference(q):
    try:
        want = block_sparse_dense(SEED, KEY, D_TINY, B_TINY, q)
    except ValueError:
        with pytest.raises(ValueError, match="density"):
            _core.BlockSparseFamily(D_TINY, B_TINY, q)
        assert not q >= 2.0**-32
        return
    assert q >= 2.0**-32
    m = _core.BlockSparseMatrix(_core.BlockSparseFamily(D_TINY, B_TINY, q), SEED, KEY)
    got = m.apply(np.eye(D_TINY), False, False, 1).T   # columns R e_j
    np.testing.assert_array_equal(got != 0, want != 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@FUZZ
@given(family=st.sampled_from([None, 0, "family", 1.5, [1]]),
       seed=st.integers(-3, 2**64 + 3), key=st.integers(-3, 2**64 + 3))
def test_block_sparse_matrix_constructor(family, seed, key):
    with pytest.raises(BAD):
        _core.BlockSparseMatrix(family, seed, key)
    try:
        m = _core.BlockSparseMatrix(_core.BlockSparseFamily(D_BS, B_BS, Q_BS), seed, key)
    except BAD:
        assert not (0 <= seed < 2**64 and 0 <= key < 2**64)
    else:
        assert (m.seed, m.key) == (seed, key)


@FUZZ
@given(d=st.integers(-4, 2**31 + 4), seed=st.integers(0, 2**64 - 1))
def test_orthogonal_constructor(d, seed):
    try:
        m = _core.OrthogonalMatrix(d, seed, 1)
    except BAD:
        assert not (2 <= d <= 2**30 and d & (d - 1) == 0)
    else:
        assert 2 <= d <= 2**30 and d & (d - 1) == 0 and m.seed == seed


@FUZZ
@given(name=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
       slot=st.integers(-2, 2**64 + 2))
def test_module_key(name, slot):
    try:
        key = _core.module_key(name, slot)
    except BAD:
        assert not 0 <= slot < 2**64
    else:
        assert key == module_key(name, slot)


@FUZZ
@given(data=st.data())
def test_decode_blocks(data):
    a = data.draw(arrays(B_BS))
    with np.errstate(invalid="ignore"):
        blocks = (np.sign(a).astype(np.int8) if a.dtype.kind == "f" and data.draw(st.booleans())
                  else a)
    d = data.draw(st.sampled_from([D_BS, D_BS, 0, -1, 2**40, 359]))
    try:
        status, column, b_m, b_s, sign = _core.decode_blocks(blocks, d)
    except BAD:
        return
    # accepted: int8 (or safely castable bool) blocks (n, b) of a valid D(b, q, d) layout
    assert blocks.dtype in (np.int8, np.bool_) and blocks.ndim == 2 and d == D_BS
    assert D_BS % blocks.shape[1] == 0 and blocks.shape[1] >= B_BS
    n = blocks.shape[0]
    for arr in (status, column, b_m, b_s, sign):
        assert arr.shape == (n,)


@FUZZ
@given(data=st.data())
def test_scan_blocks(data):
    y = data.draw(arrays(D_BS))
    b = data.draw(st.sampled_from([B_BS, B_BS, 0, 3, 35, 195, -3]))
    q = data.draw(st.sampled_from([Q_BS, 0.0, 1.0, float("nan"), -0.5, 2.0]))
    tau = data.draw(st.sampled_from([0.3, 0.0, 1.0, float("nan")]))
    threads = data.draw(st.sampled_from([1, 0, 2, -4, MAX_NUM_THREADS + 1]))
    try:
        records = _core.scan_blocks(y, b, q, tau, 0, threads)
    except BAD:
        return
    assert y.dtype in (np.float32, np.float64) and y.ndim == 2 and y.flags.c_contiguous
    assert np.all(np.isfinite(y)) and 0 < q <= 1 and 0 < tau < 1
    assert 0 <= threads <= MAX_NUM_THREADS and b == B_BS
    assert np.all((records["sample"] >= 0) & (records["sample"] < y.shape[0]))
    assert np.all((records["column"] >= 0) & (records["column"] < y.shape[1]))


@FUZZ
@given(first=st.one_of(st.integers(-2**63, 2**63 - 1),
                       st.sampled_from([0, -1, 2**63 - 1, 2**63 - 4, 2**63 - 5, 2**62])))
def test_scan_blocks_first_sample(first):
    y = np.ascontiguousarray(BS.apply(np.eye(D_BS)[:4], False, False, 1))
    try:
        records = _core.scan_blocks(y, B_BS, Q_BS, 0.3, first, 1)
    except BAD:
        assert not 0 <= first <= 2**63 - 1 - 4
        return
    assert 0 <= first <= 2**63 - 1 - 4
    assert len(records) and set(records["sample"].tolist()) <= {first + k for k in range(4)}


# -- sketch_graphs and Graph/JSON ------------------------------------------------------------

@st.composite
def graph_dicts(draw, max_objects=7):
    """A valid graph as a dict: modules at one depth each, any listing order (parents may come
    before their children), random attribute lengths and weights."""
    n_levels = draw(st.integers(1, 3))
    per_level = [draw(st.integers(1, 3)) for _ in range(n_levels)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dims = {}
    levels = []  # levels[0] deepest; objects are dicts, edges name them by (level, k)
    for lv, count in enumerate(per_level):
        row = []
        for k in range(count):
            module = f"L{lv}m{k % 2}"
            dim = dims.setdefault(module, int(rng.integers(1, 6)))
            x = rng.random(dim) + 0.01
            kids = []
            if lv > 0:
                n_below = len(levels[lv - 1])
                pick = rng.choice(n_below, size=int(rng.integers(1, n_below + 1)), replace=False)
                w = rng.dirichlet(np.ones(len(pick))) * rng.uniform(0.3, 1.0)
                kids = [[(lv - 1, int(p)), float(v)] for p, v in zip(pick, w)]
            row.append({"module": module, "attributes": (x / np.linalg.norm(x)).tolist(),
                        "kids": kids})
        levels.append(row)
    # every non-top object must feed a parent: give orphans to the first parent above
    for lv in range(n_levels - 1):
        fed = {c for obj in levels[lv + 1] for c, _ in obj["kids"]}
        for k in range(len(levels[lv])):
            if (lv, k) not in fed:
                kids = levels[lv + 1][0]["kids"]
                kids.append([(lv, k), max(0.0, 1.0 - sum(w for _, w in kids)) * 0.5])
    names = [(lv, k) for lv, row in enumerate(levels) for k in range(len(row))]
    order = rng.permutation(len(names)) if draw(st.booleans()) else np.arange(len(names))
    listed = [names[i] for i in order]
    index = {name: i for i, name in enumerate(listed)}
    top = len(levels) - 1
    w_out = rng.dirichlet(np.ones(len(levels[top])))
    objects = []
    for lv, k in listed:
        obj = levels[lv][k]
        objects.append({"module": obj["module"], "attributes": obj["attributes"],
                        "inputs": [[index[c], w] for c, w in obj["kids"]]})
    return {"objects": objects,
            "output": [[index[(top, k)], float(w)] for k, w in enumerate(w_out)]}


def described(data):
    objects = [(o["module"], np.asarray(o["attributes"]), [(c, w) for c, w in o["inputs"]])
               for o in data["objects"]]
    return objects, [(c, w) for c, w in data["output"]]


SK_REF = DenseMatrices("orthogonal", 64, 5)


@settings(FUZZ, max_examples=40)
@given(data=graph_dicts())
def test_graph_dicts_sketch_like_the_numpy_recursion(data):
    data = json.loads(json.dumps(data))  # through JSON, as the command line reads it
    g = rs.Graph.from_dict(data)
    sk = rs.Sketcher(64, family="orthogonal", seed=5, dtype="float64")
    s, objects = sk.sketch(g, return_objects=True)
    # the reference recursion needs children listed first: relist by depth, deepest first
    ref_objects, ref_output = described(data)
    want, want_objects = reference_sketch_any_order(ref_objects, ref_output)
    np.testing.assert_allclose(s, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(objects, want_objects, rtol=0, atol=1e-12)


def reference_sketch_any_order(objects, output):
    """reference_sketch on a children-first relisting, results mapped back to the listing."""
    order, seen = [], set()

    def visit(k):
        if k in seen:
            return
        seen.add(k)
        for c, _ in objects[k][2]:
            visit(c)
        order.append(k)

    for k in range(len(objects)):
        visit(k)
    new = {k: i for i, k in enumerate(order)}
    relisted = [(objects[k][0], objects[k][1], [(new[c], w) for c, w in objects[k][2]])
                for k in order]
    s, objs = reference_sketch(relisted, [(new[c], w) for c, w in output], SK_REF)
    return s, [objs[new[k]] for k in range(len(objects))]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.floats(allow_nan=True) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["objects", "output", "module", "attributes", "inputs", "x"]), inner,
        max_size=4),
    max_leaves=25)


@settings(FUZZ, max_examples=150)
@given(junk=JSON, normalize=st.booleans())
def test_junk_json_is_refused_or_a_valid_graph(junk, normalize):
    try:
        g = rs.Graph.from_dict(junk, normalize=normalize)
    except BAD:
        return
    # accepted: it must round-trip and sketch (or refuse to sketch with a ValueError)
    again = rs.Graph.from_dict(g.to_dict())
    assert again.to_dict() == g.to_dict()
    try:
        rs.Sketcher(64, family="orthogonal").sketch(g)
    except BAD:
        pass


@settings(FUZZ, max_examples=60)
@given(data=graph_dicts(), which=st.integers(0, 10), value=st.sampled_from(
    [-1, 10**6, 2**40, -(2**40), 0.5, float("nan"), float("inf"), -0.25]))
def test_corrupted_flat_batches_are_refused(data, which, value):
    from recsketch.graph import flatten
    g = rs.Graph.from_dict(data)
    sk = rs.Sketcher(64, family="orthogonal", seed=5, dtype="float64")
    flat = flatten([g], 64)
    args = dict(graph_ptr=flat.graph_ptr.copy(), module=flat.module.copy(),
                attr_ptr=flat.attr_ptr.copy(), attr=flat.attr.copy(),
                input_ptr=flat.input_ptr.copy(), input_row=flat.input_row.copy(),
                input_weight=flat.input_weight.copy())
    mods = [tuple(sk.module_matrix(n, k)._native for k in range(3)) for n in flat.modules]
    pos = [sk.position_matrix(i)._native for i in range(1, flat.max_fan_in + 1)]
    name = sorted(args)[which % len(args)]
    arr = args[name]
    assume(arr.size > 0)
    if arr.dtype.kind in "iu" and not float(value).is_integer():
        return  # only values that break an index array's contract
    k = which % arr.size
    old = arr[k]
    with np.errstate(all="ignore"):
        try:
            arr[k] = value
        except (OverflowError, ValueError):
            return
    assume(arr[k] != old)
    if name == "attr" and np.isfinite(arr[k]):
        return  # any finite attribute value is a valid input of the core (not a unit vector)
    if name == "input_weight" and 0 <= arr[k] <= 1:
        return  # a weight in [0, 1] is valid
    with pytest.raises(BAD):
        _core.sketch_graphs(mods, pos, [], [], 64, num_threads=1, float64=True,
                            return_objects=False, **args)


@FUZZ
@given(data=st.data())
def test_queries_on_junk_sketches(data):
    sk = rs.Sketcher(64, family="orthogonal", seed=5, dtype="float64")
    sk.register_module("cat", 2, 2)
    s = data.draw(arrays(64))
    valid = (s.dtype in (np.float32, np.float64) and s.ndim in (1, 2) and s.shape[-1] == 64
             and bool(np.all(np.isfinite(s))))
    try:
        est = sk.attributes(s, "cat", weight=0.5, method="paper")
    except BAD:
        assert not valid
        return
    assert valid
    # the paper's case (i) read-out at depth 2 (MATH.md §3): x = 2^(4h-3) / w * R[cat,1]^T s,
    # first attribute_dim coordinates, with the dense matrix rebuilt by tests/reference.py
    want = (np.atleast_2d(s).astype(np.float64) @ SK_REF.module("cat", 1))[:, :2] * 32 / 0.5
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    tol = 1e-5 if s.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(np.atleast_2d(est), want, rtol=tol, atol=tol * scale)
