"""recsketch.network's public functions called directly with odd input: each bad argument is a
ValueError/TypeError naming it, raised before any work (not an AttributeError, IndexError,
ZeroDivisionError, LinAlgError or a wrong message), and valid but unusual layouts give the
results of the plain call. Found by a sweep over varied teachers (session 11, "robust")."""

import warnings

import numpy as np
import pytest

import recsketch as rs
from recsketch.network import depth_from_gain, infer_tree, learn_network
from recsketch.network.unmixing import (block_directions, block_estimates, choose_rank,
                                        rescue_columns,
                                        screen_blocks, sketch_basis, unmix, unmix_coefficients)

D = 8190
B = rs.default_block_size(D)
Q = 2 * B / D


def _unit(z):
    return z / np.linalg.norm(z)


@pytest.fixture(scope="module")
def sketches():
    """40 sketches of output <- root <- midA, midB (3-dim attributes, weights varying)."""
    rng = np.random.default_rng(3)
    W = {m: rng.normal(0, 1.0, (3, 4)) for m in ("midA", "midB", "root")}
    sk = rs.Sketcher(D, block_size=B, density=Q, seed=2)
    graphs = []
    for _ in range(40):
        u = rng.random(4)
        g = rs.Graph()
        a = g.add("midA", _unit(np.logaddexp(0, W["midA"] @ u)))
        b = g.add("midB", _unit(np.logaddexp(0, W["midB"] @ u)))
        w = float(rng.uniform(0.3, 0.7))
        root = g.add("root", _unit(np.logaddexp(0, W["root"] @ u)), [(a, w), (b, 1 - w)])
        g.set_output([(root, 1.0)])
        graphs.append(g)
    return sk.sketch_many(graphs)


@pytest.fixture(scope="module")
def unmixed(sketches):
    return unmix(sketches, B, Q)


# -- magnitudes the Gram route cannot hold ------------------------------------------------------
@pytest.mark.parametrize("call", ["unmix", "sketch_basis", "learn_network"])
def test_sketches_whose_gram_matrix_overflows_are_named_not_called_all_zero(sketches, call):
    Y = sketches.astype(np.float64) * 1e300  # finite; Y Y^T is not
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings on the way to the error
        with pytest.raises(ValueError, match="too large"):
            if call == "unmix":
                unmix(Y, B, Q)
            elif call == "sketch_basis":
                sketch_basis(Y)
            else:
                learn_network(None, Y, block_size=B, density=Q, method="unmix")


def test_sketches_whose_gram_matrix_underflows_are_named_not_called_all_zero(sketches):
    with pytest.raises(ValueError, match="too small"):
        unmix(sketches.astype(np.float64) * 1e-300, B, Q)
    with pytest.raises(ValueError, match="all zero"):
        unmix(np.zeros((3, D)), B, Q)


@pytest.mark.parametrize("factor", [1e155, 1e-156])
def test_sketches_near_the_float64_limits_give_the_basis_of_the_plain_ones(sketches, factor):
    """G finite but its eigensolve overflowing (1e155: was "too small"), G subnormal (1e-156:
    was a wrong rank, silently): the singular values and the row space of an SVD of the
    plain sketches (NumPy, independent of the Gram route), scaled."""
    Y = sketches.astype(np.float64)
    s_ref = np.linalg.svd(Y, compute_uv=False)
    Vt_ref = np.linalg.svd(Y, full_matrices=False)[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, V, K = sketch_basis(Y * factor)
    assert K == int(np.sum(s_ref > 2.0 ** -23 * s_ref[0]))
    np.testing.assert_allclose(s[:K] / factor, s_ref[:K], rtol=0, atol=1e-10 * s_ref[0])
    # same row space: the principal angles between the two K-dimensional spans are 0
    np.testing.assert_allclose(np.linalg.svd(Vt_ref[:K] @ V, compute_uv=False), 1.0,
                               atol=1e-6)


class _WholeArrayUfuncs(np.ndarray):
    """Sketches that record every ufunc applied to all of them at once (``np.isfinite(Y)``,
    ``np.abs(Y)``, ``Y != 0``): a memory map of gigabytes must be read in chunks."""

    calls: list = []
    full_size = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        cls = _WholeArrayUfuncs
        if any(isinstance(x, cls) and x.size >= cls.full_size for x in inputs):
            cls.calls.append(ufunc.__name__)
        inputs = tuple(x.view(np.ndarray) if isinstance(x, cls) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


def test_sketches_are_never_scanned_whole(sketches, unmixed):
    """sketch_basis checks the Gram matrix, unmix_coefficients Y V and the rows it reads:
    no ufunc over the whole of Y (the reviewer's recording subclass)."""
    Y = sketches.view(_WholeArrayUfuncs)
    _WholeArrayUfuncs.full_size = Y.size
    _WholeArrayUfuncs.calls = []
    u = unmixed
    s, V, K = sketch_basis(Y, chunk=1024)
    unmix_coefficients(Y, u.basis, u.matrices, u.block_strength, u.block_left, u.block_right,
                       chunk=1024)
    r = unmix(Y, B, Q)
    assert _WholeArrayUfuncs.calls == []
    np.testing.assert_array_equal(r.coefficients, u.coefficients)
    with pytest.raises(ValueError, match="NaN"):  # found from the Gram matrix
        sketch_basis(np.where(np.arange(D) == 7, np.inf, sketches).view(_WholeArrayUfuncs),
                     chunk=1024)
    with pytest.raises(ValueError, match="NaN"):  # found from Y V (no refinement: no reads)
        Yn = sketches.copy()
        Yn[3, 11] = np.nan
        unmix_coefficients(Yn.view(_WholeArrayUfuncs), u.basis, u.matrices, u.block_strength,
                           u.block_left, u.block_right, refine=0, chunk=1024)


# -- sketch_basis, choose_rank -----------------------------------------------------------------
@pytest.mark.parametrize("Y, kwargs, exc, match", [
    ("list", {}, TypeError, "float32 or float64"),
    ("int", {}, TypeError, "float32 or float64"),
    ("1-D", {}, ValueError, "2-D"),
    ("nan", {}, ValueError, "NaN"),
    (None, {"rank": 1.5}, TypeError, "rank"),
    (None, {"rank": -1}, ValueError, "rank"),
    (None, {"chunk": 0}, ValueError, "chunk"),
])
def test_sketch_basis_checks_its_arguments(sketches, Y, kwargs, exc, match):
    arg = {"list": sketches.tolist(), "int": np.ones((3, D), np.int64), "1-D": sketches[0],
           "nan": np.where(np.arange(D) == 5, np.nan, sketches), None: sketches}[Y]
    with pytest.raises(exc, match=match):
        sketch_basis(arg, **kwargs)


def test_sketch_basis_is_numpys_svd(sketches):
    """Independent of the Gram route: NumPy's SVD of the sketches gives the same singular
    values of the K words (to 1e-10 of the largest; the noise values below the floor are
    resolved only to ~sqrt(eps64) of it by the Gram route) and the same row space."""
    s, V, K = sketch_basis(sketches)
    Y = sketches.astype(np.float64)
    _, s_ref, Vt_ref = np.linalg.svd(Y, full_matrices=False)
    assert K == int(np.sum(s_ref > 2.0 ** -23 * s_ref[0]))
    np.testing.assert_allclose(s[:K], s_ref[:K], rtol=0, atol=1e-10 * s_ref[0])
    np.testing.assert_allclose(s[K:], s_ref[K:], rtol=0, atol=1e-7 * s_ref[0])
    np.testing.assert_allclose(V.T @ V, np.eye(K), atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(Vt_ref[:K] @ V, compute_uv=False), 1.0,
                               atol=1e-6)


def test_sketch_basis_of_any_layout_is_the_plain_one(sketches):
    s, V, K = sketch_basis(sketches)
    for other in (np.asfortranarray(sketches), np.repeat(sketches, 2, axis=1)[:, ::2]):
        s2, V2, K2 = sketch_basis(other)
        assert K2 == K
        np.testing.assert_array_equal(s2, s)
        np.testing.assert_array_equal(V2, V)


@pytest.mark.parametrize("values, floor, exc, match", [
    (np.ones((2, 2)), 2.0 ** -23, ValueError, "1-D"),
    (np.array([1.0, np.nan]), 2.0 ** -23, ValueError, "NaN"),
    (np.array([1.0, -0.5]), 2.0 ** -23, ValueError, "nonnegative"),
    ("abc", 2.0 ** -23, TypeError, "singular_values"),
    (np.array([1.0, 0.5]), -1.0, ValueError, "floor"),
    (np.array([1.0, 0.5]), "x", TypeError, "floor"),
    (np.array([1e-12, 3.0, 1.0]), 2.0 ** -23, ValueError, "non-increasing"),  # was 3
])
def test_choose_rank_checks_its_arguments(values, floor, exc, match):
    with pytest.raises(exc, match=match):
        choose_rank(values, floor=floor)


def test_choose_rank_counts_values_above_the_floor():
    assert choose_rank([3.0, 1.0, 1e-12]) == 2  # a list is an array of numbers
    assert choose_rank(np.array([])) == 0
    assert choose_rank(np.zeros(3)) == 0


# -- block_directions --------------------------------------------------------------------------
@pytest.mark.parametrize("kind, block_size, kwargs, exc, match", [
    ("ok", 0, {}, ValueError, "block_size"),       # was ZeroDivisionError
    ("ok", 50, {}, ValueError, "block_size"),      # was a reshape error
    ("list", B, {}, TypeError, "V must be"),       # was AttributeError
    ("nan", B, {}, ValueError, "NaN"),             # was LinAlgError
    ("1-D", B, {}, ValueError, "V must be 2-D"),
    ("ok", B, {"chunk_blocks": 0}, ValueError, "chunk_blocks"),
])
def test_block_directions_checks_its_arguments(unmixed, kind, block_size, kwargs, exc, match):
    V = unmixed.basis
    arg = {"ok": V, "list": V.tolist(), "nan": np.full_like(V, np.nan), "1-D": V[:, 0]}[kind]
    with pytest.raises(exc, match=match):
        block_directions(arg, block_size, **kwargs)


def test_block_directions_are_numpys_svd_of_each_block(unmixed):
    """Independent: the top singular triple of each block of the basis from NumPy's SVD (the
    vectors up to one sign per block, on blocks whose top singular value is separated)."""
    strength, left, right = block_directions(unmixed.basis, B)
    blocks = unmixed.basis.reshape(-1, B, unmixed.basis.shape[1])
    checked = 0
    for l in range(0, blocks.shape[0], 7):
        u, sv, vt = np.linalg.svd(blocks[l], full_matrices=False)
        assert strength[l] == pytest.approx(sv[0], rel=1e-10, abs=1e-14)
        if sv.size > 1 and sv[1] > 0.9 * sv[0]:
            continue  # nearly tied: the top vectors are not defined to this precision
        sign = np.sign(u[:, 0] @ left[l])
        np.testing.assert_allclose(left[l], sign * u[:, 0], atol=1e-7)
        np.testing.assert_allclose(right[l], sign * vt[0], atol=1e-7)
        checked += 1
    assert checked > 10


def test_block_directions_are_the_ones_unmix_used(unmixed):
    strength, left, right = block_directions(np.asfortranarray(unmixed.basis), B)
    np.testing.assert_array_equal(strength, unmixed.block_strength)
    np.testing.assert_array_equal(left, unmixed.block_left)
    np.testing.assert_array_equal(right, unmixed.block_right)


# -- unmix_coefficients ------------------------------------------------------------------------
def test_unmix_coefficients_are_the_ones_unmix_returned(sketches, unmixed):
    u = unmixed
    assert u.coefficients.shape[1] > 0
    C = unmix_coefficients(sketches, u.basis, u.matrices, u.block_strength, u.block_left,
                           u.block_right)
    np.testing.assert_array_equal(C, u.coefficients)
    # Values stored from main e24c54e before the session-12 changes (computed once by running
    # main's unmix and unmix_coefficients on this fixture; atoms (0, 2) and (1, 0), samples 0
    # and 17): the checks added since must not change a valid call's answer.
    main_refined = [[0.023476318808305415, 0.0316377121508574],
                    [0.016121257317667115, 0.03177953589897881]]
    main_unrefined = [[0.023835407568637394, 0.032101325123496796],
                      [0.016441598224293315, 0.03204196814940561]]
    assert u.atoms[:2].tolist() == [[0, 2], [1, 0]]
    np.testing.assert_allclose(C[[0, 17], :2], main_refined, rtol=1e-12)
    C0 = unmix_coefficients(sketches, u.basis, u.matrices, u.block_strength, u.block_left,
                            u.block_right, refine=0)
    np.testing.assert_allclose(C0[[0, 17], :2], main_unrefined, rtol=1e-12)


@pytest.mark.parametrize("change, exc, match", [
    ({"Y": "list"}, TypeError, "Y must be"),                 # was AttributeError
    ({"V": "short"}, ValueError, "V has"),                   # was a matmul error
    ({"matrices": "one"}, TypeError, "matrices must be"),
    ({"left": "short"}, ValueError, "left must be"),
    ({"right": "short"}, ValueError, "right must be"),
    ({"strength": "short"}, ValueError, "strength must be"),
    ({"refine": -1}, ValueError, "refine"),
    ({"chunk": 0}, ValueError, "chunk"),
    ({"YV": "short"}, ValueError, "YV must be"),
])
def test_unmix_coefficients_checks_its_arguments(sketches, unmixed, change, exc, match):
    u = unmixed
    args = dict(Y=sketches, V=u.basis, matrices=u.matrices, strength=u.block_strength,
                left=u.block_left, right=u.block_right)
    kw = {}
    for k, v in change.items():
        if k in ("refine", "chunk"):
            kw[k] = v
        elif k == "YV":
            kw["YV"] = u.projections[:-1]
        elif v == "list":
            args[k] = args[k].tolist()
        elif v == "one":
            args[k] = args[k][0]
        else:
            args[k] = args[k][:-1]
    with pytest.raises(exc, match=match):
        unmix_coefficients(*args.values(), **kw)


def test_unmix_coefficients_refuse_nan_in_the_sketches(sketches, unmixed):
    u = unmixed
    mat = u.matrices[0]
    Y = sketches.copy()
    Y[0, int(mat.blocks[0][0]) * B] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        unmix_coefficients(Y, u.basis, u.matrices, u.block_strength, u.block_left,
                           u.block_right)


# -- block_estimates, screen_blocks ------------------------------------------------------------
def test_block_estimates_check_the_column_index(sketches, unmixed):
    mat = unmixed.matrices[0]
    last = mat.columns.size - 1
    with pytest.raises(ValueError, match="c must be <="):  # was IndexError
        block_estimates(sketches, mat, last + 1)
    with pytest.raises(ValueError, match="c must be >="):  # was read as the last column
        block_estimates(sketches, mat, -1)


@pytest.mark.parametrize("kind, exc, match", [
    ("narrow", ValueError, "d_sketch"),       # was IndexError
    ("list", TypeError, "Y must be"),         # was AttributeError
    ("1-D", ValueError, "2-D"),               # was IndexError
    ("nan", ValueError, "NaN"),               # was NaN estimates
    ("mat", TypeError, "mat must be"),        # was AttributeError
])
def test_block_estimates_check_sketches_and_matrix(sketches, unmixed, kind, exc, match):
    mat = unmixed.matrices[0]
    Y = {"narrow": sketches[:, :D // 2], "list": sketches.tolist(), "1-D": sketches[0],
         "nan": np.full_like(sketches, np.nan), "mat": sketches}[kind]
    with pytest.raises(exc, match=match):
        block_estimates(Y, None if kind == "mat" else mat, 0)


def test_block_estimates_are_the_blocks_reads(sketches, unmixed):
    """Independent read: each block's rows of the sketches dotted with the stored signs,
    divided by b / sqrt(d q)."""
    mat = unmixed.matrices[0]
    est = block_estimates(np.asfortranarray(sketches), mat, 0)
    for i, (blk, pat) in enumerate(zip(mat.blocks[0], mat.patterns[0])):
        rows = sketches[:, int(blk) * B:(int(blk) + 1) * B].astype(np.float64)
        np.testing.assert_allclose(est[i], rows @ pat / (B / np.sqrt(D * Q)), rtol=1e-12)


@pytest.mark.parametrize("est, agree, exc, match", [
    (np.ones(5), 1.5, ValueError, "2-D"),                      # was AxisError
    (np.zeros((0, 5)), 1.5, ValueError, "non-empty"),
    (np.zeros((3, 0)), 1.5, ValueError, "non-empty"),          # was RuntimeWarnings
    (np.full((3, 5), np.nan), 1.5, ValueError, "NaN"),         # was a silent answer
    (np.ones((3, 5)), 0.0, ValueError, "agree"),
    (np.ones((3, 5)), float("nan"), ValueError, "agree"),
    (np.ones((3, 5)), "x", TypeError, "agree"),
])
def test_screen_blocks_checks_its_arguments(est, agree, exc, match):
    with pytest.raises(exc, match=match):
        screen_blocks(est, agree=agree)


def test_screen_blocks_keeps_the_blocks_near_the_median():
    est = np.array([[1.0, 1.1], [1.05, 0.95], [3.0, 3.2], [-1.0, -0.9]])
    np.testing.assert_array_equal(screen_blocks(est), [True, True, False, False])


# -- infer_tree, depth_from_gain ---------------------------------------------------------------
def _tree_args(n=12, seed=0):
    rng = np.random.default_rng(seed)
    child = rng.random((n, 2))
    parent = np.hstack([child @ rng.random((2, 2)), rng.random((n, 1)) * 0.01])
    return ({"p": parent, "c": child}, {"p": 2, "c": 3},
            {"p": np.ones(n), "c": np.full(n, 0.5)})


@pytest.mark.parametrize("edit, exc, match", [
    (lambda a, h, w: (a, h, {"p": w["p"]}), ValueError, "same keys"),          # was KeyError
    (lambda a, h, w: ({"p": a["p"], "c": a["c"][:5]}, h, w), ValueError, "rows"),  # LinAlgError
    (lambda a, h, w: ({"p": a["p"] * np.nan, "c": a["c"]}, h, w), ValueError, "NaN"),
    (lambda a, h, w: ({"p": a["p"][:, 0], "c": a["c"]}, h, w), ValueError, "2-D"),
    (lambda a, h, w: (a, {"p": "2", "c": 3}, w), TypeError, "depths"),
    (lambda a, h, w: (a, h, {"p": w["p"], "c": -w["c"]}), ValueError, "nonnegative"),
    (lambda a, h, w: (list(a.values()), h, w), TypeError, "attributes must be a mapping"),
])
def test_infer_tree_checks_its_arguments(edit, exc, match):
    with pytest.raises(exc, match=match):
        infer_tree(*edit(*_tree_args()))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"min_r2_gain": float("nan")}, ValueError, "min_r2_gain"),
    ({"min_r2_gain": 2.0}, ValueError, "min_r2_gain"),
    ({"weight_slack": -1.0}, ValueError, "weight_slack"),
    ({"weight_slack": "1"}, TypeError, "weight_slack"),
])
def test_infer_tree_checks_its_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        infer_tree(*_tree_args(), **kwargs)


def test_infer_tree_takes_lists_and_finds_the_edge():
    attrs, depths, weights = _tree_args()
    edges = infer_tree({k: v.tolist() for k, v in attrs.items()}, depths,
                       {k: v.tolist() for k, v in weights.items()})
    assert [(e.parent, e.child) for e in edges] == [("p", "c")]


@pytest.mark.parametrize("gain, w0, exc, match", [
    (float("inf"), 2.0 ** -3.5, ValueError, "gain"),         # was OverflowError
    ("1", 2.0 ** -3.5, TypeError, "gain"),                   # was a comparison TypeError
    (np.array([0.1, 0.2]), 2.0 ** -3.5, TypeError, "gain"),  # was "truth value ambiguous"
    (0.1, 0.0, ValueError, "min_path_weight"),               # was "math domain error"
    (0.1, float("nan"), ValueError, "min_path_weight"),
])
def test_depth_from_gain_checks_its_arguments(gain, w0, exc, match):
    with pytest.raises(exc, match=match):
        depth_from_gain(gain, w0)


# -- NetworkModel.report -----------------------------------------------------------------------
def _wide_teacher(n, seed=0, n_leaves=3):
    """output <- root <- ``n_leaves`` leaves (2-dim attributes, weights varying per input)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n):
        g = rs.Graph()
        leaves = [g.add(f"leaf{i}", _unit(rng.random(2) + 0.1)) for i in range(n_leaves)]
        w = rng.dirichlet(np.full(n_leaves, 8.0))
        root = g.add("root", _unit(rng.random(3) + 0.1),
                     [(h, float(x)) for h, x in zip(leaves, w)])
        g.set_output([(root, 1.0)])
        graphs.append(g)
    return graphs


@pytest.fixture(scope="module")
def wide_model():
    """A model learned from 60 sketches of _wide_teacher, its truth, sketcher and graphs."""
    d = 32760
    b = rs.default_block_size(d)
    sk = rs.Sketcher(d, block_size=b, density=2 * b / d, seed=101)
    graphs = _wide_teacher(60)
    model = learn_network(None, sk.sketch_many(graphs), sketcher=sk, method="unmix")
    return model, rs.NetworkTruth.from_graphs(sk, graphs), sk, graphs


def test_report_refuses_the_truth_of_other_sketches(wide_model):
    model, _, sk, graphs = wide_model
    d, b = sk.d_sketch, sk.block_size
    assert model.modules  # the root is learned: the sample-by-sample scoring is reached
    full = model.report(rs.NetworkTruth.from_graphs(sk, graphs))
    assert full.levels[2].modules_identified == 1
    with pytest.raises(ValueError, match="samples"):  # was IndexError
        model.report(rs.NetworkTruth.from_graphs(sk, graphs[:59]))
    other = rs.Sketcher(d // 2, block_size=b, density=2 * b / d, seed=101)
    with pytest.raises(ValueError, match="d_sketch"):
        model.report(rs.NetworkTruth.from_graphs(other, graphs))


def test_unmix_with_fewer_samples_than_words_returns_no_module_without_gain():
    """Five sketches of a root with five leaves (fewer samples than words: the words are not
    separated). The leak correction once read a depth-3 module's every coefficient as 0, and
    the module came back with zero gains and depth 0 (``levels[0]``); the uncorrected read is
    kept instead."""
    d = 98280
    b = rs.default_block_size(d)
    sk = rs.Sketcher(d, block_size=b, density=2 * b / d, seed=1)
    Y = sk.sketch_many(_wide_teacher(5, seed=1, n_leaves=5))
    with pytest.warns(RuntimeWarning, match="not low-rank"):
        model = learn_network(None, Y, sketcher=sk, method="unmix")
    assert len(model.modules) >= 2  # the root and a deeper module: the case is reached
    for m in model.modules:
        assert m.depth >= 2
        assert np.any(m.gains > 0) and np.all(np.isfinite(m.gains))
    assert min(model.levels) >= 2
    deeper = [m for m in model.modules if m.depth > 2]
    assert deeper
    # the fix: the deeper module kept the uncorrected read, the one learn_network returns
    # without the leak correction
    with pytest.warns(RuntimeWarning, match="not low-rank"):
        plain = learn_network(None, Y, sketcher=sk, method="unmix", correct_leaks=False)
    for m in deeper:
        assert m.leak_corrected is not None and not m.leak_corrected.any()
        same = [p for p in plain.modules
                if p.depth == m.depth and np.array_equal(p.columns, m.columns)]
        assert len(same) == 1
        np.testing.assert_array_equal(m.attributes, same[0].attributes)
        np.testing.assert_array_equal(m.gains, same[0].gains)


def test_column_reads_take_a_matrix_with_unsorted_columns(sketches, unmixed):
    """learn_network's modules can hold unsorted columns (the per-sample learner's columns are
    appended to the unmixed ones): the column reads take them; a rescue that adds columns
    (inserted in order) refuses them, one that only completes takes them."""
    u = unmixed
    mat, other = u.matrices[0], u.matrices[-1]
    col = int(mat.columns[0])
    # a second column (another matrix's blocks) placed before the first: columns [col + 7, col]
    two = rs.RecoveredMatrix(mat.d_sketch, mat.block_size, mat.density, mat.signature,
                             np.array([col + 7, col], dtype=mat.columns.dtype),
                             [other.blocks[0], mat.blocks[0]],
                             [other.patterns[0], mat.patterns[0]])
    np.testing.assert_array_equal(block_estimates(sketches, two, 1),
                                  block_estimates(sketches, mat, 0))
    C = unmix_coefficients(sketches, u.basis, [two], u.block_strength, u.block_left,
                           u.block_right, refine=0)
    C0 = unmix_coefficients(sketches, u.basis, [mat], u.block_strength, u.block_left,
                            u.block_right, refine=0)
    np.testing.assert_allclose(C[:, 1], C0[:, 0], rtol=1e-12)
    args = (u.basis, u.block_left, u.block_right, [two], Q)
    assert rescue_columns(*args, add=False)[0].columns.tolist() == [col + 7, col]
    with pytest.raises(ValueError, match="sorted"):
        rescue_columns(*args, add=True)


# -- recovered matrices: density, block_size, field types ----------------------------------------
def _with(mat, **fields):
    kw = dict(d_sketch=mat.d_sketch, block_size=mat.block_size, density=mat.density,
              signature=mat.signature, columns=mat.columns, blocks=mat.blocks,
              patterns=mat.patterns)
    kw.update(fields)
    return rs.RecoveredMatrix(**kw)


@pytest.mark.parametrize("fields, exc, match", [
    ({"density": 0.0}, ValueError, "density"),             # was ZeroDivisionError
    ({"density": -0.1}, ValueError, "density"),            # was "math domain error"
    ({"density": float("nan")}, ValueError, "density"),    # was blamed on Y / NaN output
    ({"density": 5.0}, ValueError, "density"),             # was silent
    ({"density": "x"}, TypeError, "density"),
    ({"block_size": 0}, ValueError, "block_size"),         # was ZeroDivisionError
    ({"block_size": 64}, ValueError, "block_size"),        # was silent
    ({"block_size": 45.0}, TypeError, "block_size"),
    ({"columns": "list"}, TypeError, "columns must be a numpy array"),
    ({"signature": "list"}, TypeError, "signature must be a numpy array"),
    ({"blocks": "list"}, TypeError, r"blocks\[0\] must be a numpy array"),
    ({"patterns": "list"}, TypeError, r"patterns\[0\] must be a numpy array"),
    ({"blocks": "array"}, TypeError, "blocks must be a list"),
])
def test_recovered_matrices_are_checked_before_any_read(sketches, unmixed, fields, exc, match):
    u = unmixed
    mat = u.matrices[0]
    lists = {"columns": lambda: mat.columns.tolist(), "signature": lambda: mat.signature.tolist(),
             "blocks": lambda: [x.tolist() for x in mat.blocks],
             "patterns": lambda: [x.tolist() for x in mat.patterns]}
    kw = {}
    for k, v in fields.items():
        kw[k] = (lists[k]() if v == "list" else np.array(mat.blocks[0]) if v == "array" else v)
    bad = _with(mat, **kw)
    with pytest.raises(exc, match=match):
        block_estimates(sketches, bad, 0)
    with pytest.raises(exc, match=match):
        unmix_coefficients(sketches, u.basis, [bad], u.block_strength, u.block_left,
                           u.block_right)
    with pytest.raises(exc, match=match):
        rescue_columns(u.basis, u.block_left, u.block_right, [bad], Q)


def test_matrices_of_different_densities_are_refused(sketches, unmixed):
    """The refinement reads every column with the first matrix's spike height."""
    u = unmixed
    assert len(u.matrices) >= 2
    mats = [u.matrices[0], _with(u.matrices[1], density=Q / 2)]
    with pytest.raises(ValueError, match="one density"):
        unmix_coefficients(sketches, u.basis, mats, u.block_strength, u.block_left,
                           u.block_right)


@pytest.mark.parametrize("change, exc, match", [
    ({}, None, None),
    ({"right": "narrow"}, ValueError, "right must be"),
    ({"right": "list"}, TypeError, "right must be"),
    ({"left": "1-D"}, ValueError, "left must be"),
    ({"strength": "short"}, ValueError, "strength must be"),
])
def test_unmix_coefficients_check_the_blocks_without_matrices(sketches, unmixed, change, exc,
                                                              match):
    """matrices=[] used to skip the checks of strength, left and right."""
    u = unmixed
    args = dict(strength=u.block_strength, left=u.block_left, right=u.block_right)
    edit = {"narrow": lambda a: a[:, :-1], "list": lambda a: a.tolist(),
            "1-D": lambda a: a[0], "short": lambda a: a[:-1]}
    for k, v in change.items():
        args[k] = edit[v](args[k])
    if exc is None:
        C = unmix_coefficients(sketches, u.basis, [], **args)
        assert C.shape == (sketches.shape[0], 0)
        return
    with pytest.raises(exc, match=match):
        unmix_coefficients(sketches, u.basis, [], **args)


@pytest.mark.parametrize("edit, exc, match", [
    (lambda t: t.path_weights.update(root=t.path_weights["root"][:59]), ValueError,
     "59 path weights"),                                                  # was IndexError
    (lambda t: t.path_weights.update(root=t.path_weights["root"][:, None]), ValueError,
     "1-D"),                                                              # was IndexError
    (lambda t: t.path_weights.update(root=-t.path_weights["root"]), ValueError, "nonnegative"),
    (lambda t: t.path_weights.update(root=t.path_weights["root"] * np.nan), ValueError, "NaN"),
    (lambda t: t.attributes.pop("leaf0"), ValueError, "same modules"),    # was KeyError
    (lambda t: t.attributes.update(root=t.attributes["root"] * np.nan), ValueError,
     "NaN"),                                                              # was a silent nan
    (lambda t: t.attributes.update(root="x"), TypeError, "attributes"),
])
def test_report_checks_the_truth(wide_model, edit, exc, match):
    import copy
    model, truth = wide_model[:2]
    bad = copy.deepcopy(truth)
    edit(bad)
    with pytest.raises(exc, match=match):
        model.report(bad)
    with pytest.raises(exc, match=match):
        rs.network.evaluate.score(model, bad)


def test_score_refuses_what_is_not_a_model(wide_model):
    with pytest.raises(TypeError, match="model must be a NetworkModel"):  # was AttributeError
        rs.network.evaluate.score(None, wide_model[1])


# -- NetworkTruth.from_graphs ------------------------------------------------------------------
def test_truth_from_graphs_takes_any_iterable():
    sk = rs.Sketcher(8190, block_size=B, density=Q, seed=2)
    graphs = _wide_teacher(4)
    t = rs.NetworkTruth.from_graphs(sk, (g for g in graphs))  # was a TypeError about len()
    t0 = rs.NetworkTruth.from_graphs(sk, graphs)
    assert sorted(t.depths) == sorted(t0.depths)
    for k in t0.attributes:
        np.testing.assert_array_equal(t.attributes[k], t0.attributes[k])
    with pytest.raises(TypeError, match="graphs must be an iterable"):
        rs.NetworkTruth.from_graphs(sk, 3)


def test_truth_from_graphs_names_a_module_whose_attribute_length_varies():
    sk = rs.Sketcher(8190, block_size=B, density=Q, seed=2)
    graphs = _wide_teacher(3)
    g = rs.Graph()
    leaves = [g.add(f"leaf{i}", _unit(np.ones(2))) for i in range(2)]
    leaves.append(g.add("leaf2", _unit(np.ones(4))))  # 4 coordinates, 2 in the others
    root = g.add("root", _unit(np.ones(3)), [(h, 1 / 3) for h in leaves])
    g.set_output([(root, 1.0)])
    with pytest.raises(ValueError, match=r"graphs\[3\]: module 'leaf2'"):  # was numpy's stack
        rs.NetworkTruth.from_graphs(sk, graphs + [g])


# -- word_blocks ---------------------------------------------------------------------------------
def test_word_blocks_checks_column_block_size_and_scale(unmixed):
    from fractions import Fraction

    from recsketch.network.unmixing import word_blocks
    u = unmixed
    mat = u.matrices[0]
    word = u.block_right[int(mat.blocks[0][0])]
    col = int(mat.columns[0])
    with pytest.raises(ValueError, match="column must be <="):  # was empty arrays, silently
        word_blocks(u.basis, word, D, mat.signature, mat.scale)
    with pytest.raises(ValueError, match="at least"):  # b = 3: was an error inside decode_blocks
        word_blocks(u.basis, word, col, mat.signature[:1], mat.scale)
    with pytest.raises(TypeError, match="scale"):
        word_blocks(u.basis, word, col, mat.signature, "1")
    # a Fraction is a real number (check_real): the same blocks as the float
    idx, pats = word_blocks(u.basis, word, col, mat.signature, Fraction(1, 100))
    idx2, pats2 = word_blocks(u.basis, word, col, mat.signature, 0.01)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(pats, pats2)


# -- min_r2_gain: one range for learn_network and infer_tree --------------------------------------
@pytest.mark.parametrize("gain, exc", [(0, None), (0.0, None), (1.0, None), (-0.1, ValueError),
                                       (1.5, ValueError), (float("nan"), ValueError),
                                       ("0", TypeError)])
def test_min_r2_gain_is_in_0_1_for_learn_network_and_infer_tree(sketches, gain, exc):
    """learn_network refused 0 (check_fraction, (0, 1]) where infer_tree took [0, 1]."""
    calls = [lambda: infer_tree(*_tree_args(), min_r2_gain=gain),
             lambda: learn_network(None, sketches, block_size=B, density=Q, method="unmix",
                                   min_r2_gain=gain)]
    for call in calls:
        if exc is None:
            call()
        else:
            with pytest.raises(exc, match="min_r2_gain"):
                call()
