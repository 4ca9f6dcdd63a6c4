"""The public Python API against bad input, the way tests/test_native_entry_points.py audits the
native core: every case of the table below is a call a user could make, with the exception it
must raise (ValueError or TypeError, never an IndexError, a ZeroDivisionError, a NumPy
broadcasting error or a MemoryError) and a pattern its message must contain (the argument's
name). Calls on a Repository or a Graph also check that nothing was stored or added.

Accepted edge cases (fractions as reals, reversed strides, empty batches, ...) are checked
against an independent computation further down.
"""

import functools
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import recsketch as rs
from recsketch.denoise import SubspaceFitter, fit_subspace
from recsketch.learned import LearnedModule
from test_native_entry_points import small_graph

D = 360
SK = rs.Sketcher(D, block_size=36, density=0.3, seed=1, dtype="float64")


G = small_graph()
S = SK.sketch(G)
SS = SK.sketch_many([G] * 6)
NAN_S = S.copy()
NAN_S[3] = np.nan
INF_SS = SS.copy()
INF_SS[1, 7] = np.inf
Y = np.random.default_rng(0).standard_normal((5, D))
NAN_Y = Y.copy()
NAN_Y[2, 3] = np.nan
HUGE_VIEW = np.broadcast_to(np.float64(1.0), (2**40,))   # 8 TiB if copied


def _graph_with(inputs):
    g = rs.Graph()
    a = g.add("leaf", [1.0])
    return lambda: g.add("top", [1.0], [(a, w) for w in inputs])


# -- the table: id -> (category, call, exception, message pattern) ----------------------------
CASES = {}


def case(category, case_id, call, exc, pattern):
    assert case_id not in CASES
    CASES[case_id] = (category, call, exc, pattern)


# Graph construction
NOT_NUMBERS = "attributes must be an array of numbers"
for label, attrs, exc, pattern in [
        ("NaN", [np.nan, 1.0], ValueError, "NaN"), ("inf", [np.inf, 0.0], ValueError, "NaN"),
        ("negative", [-0.6, 0.8], ValueError, "nonnegative"),
        ("empty", [], ValueError, "empty"), ("2-D", [[0.6, 0.8]], ValueError, "1-D"),
        ("0-D", 1.0, ValueError, "1-D"),
        ("None", None, TypeError, NOT_NUMBERS),
        ("not unit norm", [0.5, 0.5], ValueError, "unit"),
        ("complex", np.array([0.6, 0.8]) + 0j, TypeError, NOT_NUMBERS),
        ("bool", np.array([True, False]), TypeError, NOT_NUMBERS),
        ("str", ["0.6", "0.8"], TypeError, NOT_NUMBERS),
        ("object", np.array([0.6, 0.8], object), TypeError, NOT_NUMBERS),
        ("ragged", [[0.6], [0.8, 0.0]], TypeError, "attributes"),
        ("2**40 broadcast", HUGE_VIEW, ValueError, "allocation limit")]:
    category = {"NaN": "nan/inf", "inf": "nan/inf", "negative": "range", "empty": "zero-size",
                "2**40 broadcast": "huge"}.get(label, "dtype" if exc is TypeError else "shape")
    case(category, f"Graph.add attributes={label}",
         lambda attrs=attrs: rs.Graph().add("m", attrs), exc, pattern)
for label, w, exc in [("NaN", np.nan, ValueError), ("inf", np.inf, ValueError),
                      ("-0.1", -0.1, ValueError), ("1.5", 1.5, ValueError),
                      ("bool", True, TypeError), ("str", "0.5", TypeError),
                      ("complex", 0.5j, TypeError), ("None", None, TypeError),
                      ("Decimal", Decimal("0.5"), TypeError)]:
    case("weights", f"Graph.add weight={label}", _graph_with([w]), exc, "weight")
case("weights", "Graph.add weights sum above 1", _graph_with([0.7, 0.7]), ValueError, "sum")
case("dtype", "Graph.add module=1", lambda: rs.Graph().add(1, [1.0]), TypeError, "module")
case("dtype", "Graph.add normalize=1", lambda: rs.Graph().add("m", [1.0], normalize=1),
     TypeError, "normalize")
case("dtype", "Graph.add inputs not pairs", lambda: rs.Graph().add("m", [1.0], [1, 2]),
     TypeError, "input 1")
case("weights", "Graph.set_output weight NaN",
     lambda: (lambda g: g.set_output([(g.add("l", [1.0]), np.nan)]))(rs.Graph()),
     ValueError, "weight")
case("zero-size", "Graph.set_output empty", lambda: rs.Graph().set_output([]), ValueError,
     "output")
case("weights", "Graph.combine weight NaN", lambda: rs.Graph.combine([G, G], [np.nan, 0.5]),
     ValueError, "weight")
case("weights", "Graph.combine weights sum above 1",
     lambda: rs.Graph.combine([G, G], [0.7, 0.7]), ValueError, "sum")
case("shape", "Graph.combine weights of the wrong length",
     lambda: rs.Graph.combine([G, G], [0.5]), ValueError, "weights")
case("zero-size", "Graph.combine no graph", lambda: rs.Graph.combine([]), ValueError, "graph")
_OBJ = {"module": "a", "attributes": ["x"], "inputs": []}
case("dtype", "Graph.from_dict attributes of strings",
     lambda: rs.Graph.from_dict({"objects": [_OBJ], "output": [[0, 1.0]]}), TypeError,
     "attributes must be an array of numbers")
case("dtype", "Graph.from_dict normalize=1", lambda: rs.Graph.from_dict({"objects": []},
                                                                        normalize=1),
     TypeError, "normalize")
case("range", "Graph.from_dict input index 2**70",
     lambda: rs.Graph.from_dict({"objects": [dict(_OBJ, attributes=[1.0], inputs=[[2**70, 0.5]])],
                                 "output": [[0, 1.0]]}), ValueError, "missing object")
case("range", "Sketcher.register_module attribute_dim=0", lambda: SK.register_module("zz", 2, 0),
     ValueError, "attribute_dim")
case("huge", "Sketcher.register_module attribute_dim=2**40",
     lambda: SK.register_module("zz", 2, 2**40), ValueError, "attribute_dim")
case("range", "Sketcher.register_module depth=0", lambda: SK.register_module("zz", 0, 2),
     ValueError, "depth")
case("range", "Sketcher.sketch tuple_sampling=0", lambda: SK.sketch(G, tuple_sampling=0),
     ValueError, "tuple_sampling")
case("huge", "Sketcher.sketch tuple_sampling=2**40", lambda: SK.sketch(G, tuple_sampling=2**40),
     ValueError, "tuple_sampling")
case("range", "Sketcher.sketch sample_seed=-1",
     lambda: SK.sketch(G, tuple_sampling=2, sample_seed=-1), ValueError, "sample_seed")

# Sketcher construction
for label, kw, exc, pattern in [
        ("d_sketch=0", dict(d_sketch=0), ValueError, "d_sketch"),
        ("d_sketch=-1", dict(d_sketch=-1), ValueError, "d_sketch"),
        ("d_sketch=2**40", dict(d_sketch=2**40), ValueError, "d_sketch"),
        ("d_sketch=1.5", dict(d_sketch=1.5), TypeError, "d_sketch"),
        ("d_sketch=True", dict(d_sketch=True), TypeError, "d_sketch"),
        ("density=NaN", dict(d_sketch=D, block_size=36, density=np.nan), ValueError, "density"),
        ("density=2", dict(d_sketch=D, block_size=36, density=2.0), ValueError, "density"),
        ("density=Decimal", dict(d_sketch=D, block_size=36, density=Decimal("0.3")), TypeError,
         "density"),
        ("density=str", dict(d_sketch=D, block_size=36, density="0.3"), ValueError, "density"),
        ("dtype=int32", dict(d_sketch=D, dtype="int32"), ValueError, "dtype"),
        ("dtype=complex", dict(d_sketch=D, dtype=complex), ValueError, "dtype"),
        ("family=nope", dict(d_sketch=D, family="nope"), ValueError, "family"),
        ("seed=-1", dict(d_sketch=D, seed=-1), ValueError, "seed"),
        ("seed=2**64", dict(d_sketch=D, seed=2**64), ValueError, "seed"),
        ("seed=1.5", dict(d_sketch=D, seed=1.5), TypeError, "seed")]:
    category = ("huge" if "2**" in label else "nan/inf" if "NaN" in label else
                "dtype" if exc is TypeError or "dtype" in label else "range")
    case(category, f"Sketcher({label})", lambda kw=kw: rs.Sketcher(**kw), exc, pattern)

# Sketching
case("dtype", "Sketcher.sketch(str)", lambda: SK.sketch("g"), TypeError, "Graph")
case("dtype", "Sketcher.sketch_many(3)", lambda: SK.sketch_many(3), TypeError, "sketch_many")
case("dtype", "Sketcher.sketch_many with a str", lambda: SK.sketch_many([G, "x"]), TypeError,
     "graph 1")
case("dtype", "Sketcher.sketch return_objects=1", lambda: SK.sketch(G, return_objects=1),
     TypeError, "return_objects")
case("range", "Sketcher.sketch_many num_threads=-1",
     lambda: SK.sketch_many([G], num_threads=-1), ValueError, "num_threads")
case("shape", "Sketcher.sketch attributes longer than d_sketch",
     lambda: (lambda g: (g.set_output([(g.add("l", np.ones(400) / 20), 1.0)]), SK.sketch(g)))(
         rs.Graph()), ValueError, "d_sketch")
case("huge", "Sketcher.sketch at d_sketch=2**30 (8 GiB output)",
     lambda: rs.Sketcher(2**30, family="orthogonal", dtype="float64").sketch(G), ValueError,
     "allocation limit")
case("huge", "Sketcher.sketch_many of 100 graphs at d_sketch=2**24",
     lambda: rs.Sketcher(2**24, family="orthogonal").sketch_many([G] * 100), ValueError,
     "100 sketches")

# Queries
for query in ("attributes", "mass"):
    for label, s, exc, pattern, category in [
            ("NaN", NAN_S, ValueError, "NaN", "nan/inf"),
            ("too short", S[:10], ValueError, "sketch", "shape"),
            ("3-D", S[None, None], ValueError, "sketch", "shape"),
            ("empty", np.zeros(0), ValueError, "sketch", "zero-size"),
            ("complex", S + 0j, TypeError, "sketch", "dtype"),
            ("int64", S.astype(np.int64), TypeError, "sketch", "dtype"),
            ("object", S.astype(object), TypeError, "sketch", "dtype"),
            ("bool", S > 0, TypeError, "sketch", "dtype"),
            ("str", "s", TypeError, "sketch", "dtype")]:
        case(category, f"Sketcher.{query}(s={label})",
             lambda query=query, s=s: getattr(SK, query)(s, "leaf"), exc, pattern)
case("range", "Sketcher.attributes unknown module", lambda: SK.attributes(S, "nope"),
     ValueError, "module")
case("dtype", "Sketcher.attributes module=3", lambda: SK.attributes(S, 3), TypeError, "module")
for label, w, exc, category in [("NaN", np.nan, ValueError, "nan/inf"),
                                ("0", 0.0, ValueError, "weights"),
                                ("-1", -1.0, ValueError, "weights"),
                                ("2", 2.0, ValueError, "weights"),
                                ("str", "x", TypeError, "dtype"),
                                ("bool", True, TypeError, "dtype"),
                                ("Decimal", Decimal("0.5"), TypeError, "dtype")]:
    case(category, f"Sketcher.count(weight={label})", lambda w=w: SK.count(S, "leaf", w), exc,
         "weight")
case("range", "Sketcher.count method=nope", lambda: SK.count(S, "leaf", 0.5, "nope"),
     ValueError, "method")
case("dtype", "Sketcher.subsketch path=['a']", lambda: SK.subsketch(S, ["a"]), TypeError, "path")
case("range", "Sketcher.subsketch path=[-1]", lambda: SK.subsketch(S, [-1]), ValueError, "path")
case("huge", "Sketcher.subsketch path=[2**70]", lambda: SK.subsketch(S, [2**70]), ValueError,
     "path")
case("huge", "Sketcher.position_matrix(2**70)", lambda: SK.position_matrix(2**70), ValueError,
     "i must be")
case("range", "Sketcher.module_matrix k=3", lambda: SK.module_matrix("a", 3), ValueError, "k")
case("nan/inf", "similarity NaN", lambda: rs.similarity(NAN_S, S), ValueError, "s1")
case("shape", "similarity mismatched d", lambda: rs.similarity(S, S[:10]), ValueError,
     "dimensions")
case("dtype", "similarity str", lambda: rs.similarity("a", S), TypeError, "s1")
case("nan/inf", "erase NaN sketch", lambda: rs.erase(NAN_S, 0.5), ValueError, "s contains")
case("nan/inf", "erase keep=NaN", lambda: rs.erase(S, np.nan), ValueError, "keep")
case("range", "erase keep=2.0", lambda: rs.erase(S, 2.0), ValueError, "keep")
case("range", "erase keep=400", lambda: rs.erase(S, 400), ValueError, "keep")
case("dtype", "erase s=str", lambda: rs.erase("s", 0.5), TypeError, "s must be")
case("huge", "ErasedSketch.to_dense of 2**20 rows at d_sketch=2**31-1",
     lambda: rs.ErasedSketch(np.ones((2**20, 2)), np.arange(2), 2**31 - 1, "prefix",
                             0).to_dense(),
     ValueError, "allocation limit")
# An ErasedSketch built by hand was not checked: queries then failed deep inside NumPy (or
# read wrong coordinates in silence)
E = rs.erase(S, 100, mode="random", seed=3)
for label, args, exc, pattern, category in [
        ("d_sketch=2**40", (np.ones(2), np.arange(2), 2**40, "prefix", 0), ValueError,
         "d_sketch", "range"),
        ("d_sketch=0", (np.ones(2), np.arange(2), 0, "prefix", 0), ValueError, "d_sketch",
         "range"),
        ("d_sketch=1.5", (np.ones(2), np.arange(2), 1.5, "prefix", 0), TypeError, "d_sketch",
         "dtype"),
        ("mode='first'", (np.ones(2), np.arange(2), D, "first", 0), ValueError, "mode",
         "range"),
        ("seed=-1", (E.values, E.indices, D, "random", -1), ValueError, "seed", "range"),
        ("indices float", (np.ones(2), np.array([0.0, 1.0]), D, "prefix", 0), TypeError,
         "indices", "dtype"),
        ("indices bool", (np.ones(2), np.array([True, True]), D, "prefix", 0), TypeError,
         "indices", "dtype"),
        ("indices 2-D", (np.ones(2), np.arange(2).reshape(1, 2), D, "prefix", 0), ValueError,
         "indices", "shape"),
        ("no indices", (np.ones(0), np.arange(0), D, "prefix", 0), ValueError, "indices",
         "zero-size"),
        ("indices out of range", (np.ones(2), np.array([0, D]), D, "prefix", 0), ValueError,
         "indices", "range"),
        ("indices not the prefix", (np.ones(2), np.array([1, 0]), D, "prefix", 0),
         ValueError, "indices", "range"),
        ("indices of another seed", (E.values, E.indices, D, "random", 4), ValueError,
         "indices", "range"),
        ("values int", (np.ones(2, np.int64), np.arange(2), D, "prefix", 0), TypeError,
         "values", "dtype"),
        ("values str", ("ab", np.arange(2), D, "prefix", 0), TypeError, "values", "dtype"),
        ("values of another length", (np.ones(3), np.arange(2), D, "prefix", 0), ValueError,
         "values", "shape"),
        ("values 3-D", (np.ones((1, 1, 2)), np.arange(2), D, "prefix", 0), ValueError,
         "values", "shape"),
        ("values NaN", (np.array([1.0, np.nan]), np.arange(2), D, "prefix", 0), ValueError,
         "values", "nan/inf")]:
    case(category, f"ErasedSketch({label})", lambda args=args: rs.ErasedSketch(*args), exc,
         pattern)

# Matrices
R = SK.module_matrix("leaf", 0)
case("zero-size", "RandomMatrix.apply_short of length 0", lambda: R.apply_short(np.zeros(0)),
     ValueError, "x")
case("huge", "RandomMatrix.apply_short of 2**40 broadcast rows",
     lambda: R.apply_short(np.broadcast_to(np.ones(1), (2**40, 1))), ValueError, "x must be")
case("dtype", "RandomMatrix.matvec of strings", lambda: R.matvec(["a"] * D), TypeError, "x")
case("range", "RandomMatrix.to_dense num_threads=0", lambda: R.to_dense(num_threads=0),
     ValueError, "num_threads")
case("huge", "RandomMatrix.to_dense at d_sketch=2**20",
     lambda: rs.Sketcher(2**20, family="orthogonal").position_matrix(1).to_dense(), ValueError,
     "allocation limit")
case("huge", "RandomMatrix.column_block_counts at d=1.7e9",
     lambda: rs.Sketcher(102 * 2**24, block_size=102, density=0.01).module_matrix(
         "a", 0).column_block_counts(), ValueError, "columns=1711276032")
case("range", "set_alloc_limit(-1)", lambda: rs.set_alloc_limit(-1), ValueError, "nbytes")
case("dtype", "set_alloc_limit(1.5)", lambda: rs.set_alloc_limit(1.5), TypeError, "nbytes")

# DictionaryLearner
for label, kw, exc, pattern, category in [
        ("d_sketch=0", dict(d_sketch=0, block_size=36, density=0.3), ValueError, "d_sketch",
         "range"),
        ("tau=NaN", dict(d_sketch=D, block_size=36, density=0.3, tau=np.nan), ValueError, "tau",
         "nan/inf"),
        ("tau=1", dict(d_sketch=D, block_size=36, density=0.3, tau=1.0), ValueError, "tau",
         "range"),
        ("density=str", dict(d_sketch=D, block_size=36, density="0.3"), TypeError, "density",
         "dtype"),
        ("block_size=35", dict(d_sketch=D, block_size=35, density=0.3), ValueError,
         "block_size", "range"),
        ("progress='yes'", dict(d_sketch=D, block_size=36, density=0.3, progress="yes"),
         TypeError, "progress", "dtype")]:
    case(category, f"DictionaryLearner({label})", lambda kw=kw: rs.DictionaryLearner(**kw), exc,
         pattern)
for label, y, exc, pattern, category in [
        ("NaN", NAN_Y, ValueError, "NaN", "nan/inf"), ("1-D", Y[0], ValueError, "Y", "shape"),
        ("3-D", Y[None], ValueError, "Y", "shape"), ("wrong d", Y[:, :300], ValueError, "Y",
                                                     "shape"),
        ("complex", Y + 0j, TypeError, "Y", "dtype"), ("object", Y.astype(object), TypeError,
                                                        "Y", "dtype"),
        ("bool", Y > 0, TypeError, "Y", "dtype"), ("str", "Y", TypeError, "Y", "dtype"),
        ("int", (Y * 10).astype(int), TypeError, "Y", "dtype")]:
    case(category, f"DictionaryLearner.fit(Y={label})",
         lambda y=y: rs.DictionaryLearner(D, block_size=36, density=0.3).fit(y), exc, pattern)

# learn_network
for label, kw, exc, pattern, category in [
        ("sketches NaN", dict(sketches=np.full((4, D), np.nan)), ValueError, "sketches",
         "nan/inf"),
        ("sketches 1-D", dict(sketches=SS[0]), ValueError, "sketches", "shape"),
        ("sketches str", dict(sketches="x"), TypeError, "sketches", "dtype"),
        ("sketches complex", dict(sketches=SS + 0j), TypeError, "sketches", "dtype"),
        ("sketches bool", dict(sketches=SS > 0), TypeError, "sketches", "dtype"),
        ("sketches empty", dict(sketches=SS[:0]), ValueError, "sketches", "zero-size"),
        ("sketches wrong d", dict(sketches=SS[:, :300]), ValueError, "d_sketch", "shape"),
        ("inputs rows", dict(inputs=np.ones((3, 2))), ValueError, "inputs", "shape"),
        ("inputs NaN", dict(inputs=np.full((6, 2), np.nan)), ValueError, "inputs", "nan/inf"),
        ("tau=2", dict(tau=2.0), ValueError, "tau", "range"),
        ("tau=NaN", dict(tau=np.nan), ValueError, "tau", "nan/inf"),
        ("min_votes=0", dict(min_votes=0), ValueError, "min_votes", "range"),
        ("min_votes=1.5", dict(min_votes=1.5), TypeError, "min_votes", "dtype"),
        ("min_path_weight=NaN", dict(min_path_weight=np.nan), ValueError, "min_path_weight",
         "nan/inf"),
        ("method=x", dict(method="x"), ValueError, "method", "range"),
        ("num_threads=0", dict(num_threads=0), ValueError, "num_threads", "range"),
        ("sketcher=str", dict(sketcher="x"), TypeError, "sketcher", "dtype"),
        ("progress='yes'", dict(progress="yes"), TypeError, "progress", "dtype")]:
    args = dict(inputs=None, sketches=SS, sketcher=SK)
    args.update(kw)
    case(category, f"learn_network({label})", lambda args=args: rs.learn_network(**args), exc,
         pattern)

# Repository: each case runs on a fresh repository holding SS, and leaves it as it was


class on_repo:
    """A call of Repository.method on the case's own repository."""

    def __init__(self, method, *args, **kwargs):
        self.method, self.args, self.kwargs = method, args, kwargs

    def __call__(self, repo):
        return getattr(repo, self.method)(*self.args, **self.kwargs)


for label, s, exc, pattern, category in [
        ("NaN", np.where(np.arange(D) == 3, np.nan, SS), ValueError, "NaN", "nan/inf"),
        ("inf", INF_SS, ValueError, "NaN", "nan/inf"),
        ("wrong d", SS[:, :300], ValueError, "sketches", "shape"),
        ("3-D", SS[None], ValueError, "sketches", "shape"),
        ("complex", SS + 0j, TypeError, "sketches", "dtype"),
        ("object", SS.astype(object), TypeError, "sketches", "dtype"),
        ("bool", SS > 0, TypeError, "sketches", "dtype"),
        ("str", "x", TypeError, "sketches", "dtype")]:
    case(category, f"Repository.add(sketches={label})", on_repo("add", s), exc, pattern)
for label, kw, exc, pattern, category in [
        ("duplicate ids", dict(ids=[100, 100]), ValueError, "ids", "range"),
        ("stored id", dict(ids=[100, 0]), ValueError, "ids", "range"),
        ("negative id", dict(ids=[-1, 5]), ValueError, "ids", "range"),
        ("float ids", dict(ids=[1.5, 5]), ValueError, "ids", "dtype"),
        ("too few ids", dict(ids=[1000]), ValueError, "ids", "shape"),
        ("id 2**70", dict(ids=[2**70, 5000]), ValueError, "ids", "huge"),
        ("timestamp NaN", dict(timestamps=np.nan), ValueError, "timestamp", "nan/inf"),
        ("3 timestamps", dict(timestamps=[1.0, 2.0, 3.0]), ValueError, "timestamps", "shape"),
        ("timestamp junk", dict(timestamps="yesterday"), ValueError, "timestamp", "dtype"),
        ("3 labels", dict(labels=[1, 2, 3]), ValueError, "labels", "shape"),
        ("label not JSON", dict(labels=object()), TypeError, "labels", "dtype")]:
    case(category, f"Repository.add({label})", on_repo("add", SS[:2], **kw), exc, pattern)
case("dtype", "Repository.add_graphs with a str", on_repo("add_graphs", [G, "x"]), TypeError,
     "graph 1")
case("range", "Repository.add_graphs make_room=x", on_repo("add_graphs", [G], make_room="x"),
     ValueError, "make_room")
case("nan/inf", "Repository.search NaN query", on_repo("search", NAN_S), ValueError, "query")
case("shape", "Repository.search short query", on_repo("search", S[:5]), ValueError, "query")
case("dtype", "Repository.search str query", on_repo("search", "x"), TypeError, "query")
case("range", "Repository.search k=0", on_repo("search", S, 0), ValueError, "k")
case("dtype", "Repository.search k=2.0", on_repo("search", S, 2.0), ValueError, "k")
case("range", "Repository.search unknown id", on_repo("search", 12345), ValueError, "12345")
case("range", "Repository.search candidates=0", on_repo("search", S, candidates=0), ValueError,
     "candidates")
case("dtype", "Repository.search exclude=['a']", on_repo("search", S, exclude=["a"]),
     TypeError, "exclude")
case("dtype", "Repository.delete(['a'])", on_repo("delete", ["a"]), TypeError, "ids")
case("dtype", "Repository.delete([0.5])", on_repo("delete", [0.5]), ValueError, "ids must be integers, got 0.5")
case("huge", "Repository.delete(uint64 2**63)", on_repo("delete", np.array([2**63], np.uint64)),
     ValueError, "ids")
case("range", "Repository.delete unknown id", on_repo("delete", [999]), ValueError, "999")
case("dtype", "Repository.explain(0.5, 1)", on_repo("explain", 0.5, 1), ValueError, "ids")
case("dtype", "Repository.labels([0.5])", on_repo("labels", [0.5]), ValueError, "ids")
case("nan/inf", "Repository.labels([nan])", on_repo("labels", [np.nan]), ValueError, "ids")
case("huge", "Repository.get([2**64])", on_repo("get", [2**64]), ValueError, "ids must fit int64")
case("dtype", "Repository.search exclude=[0.5]", on_repo("search", S, exclude=[0.5]),
     ValueError, "exclude must be integers")
case("dtype", "Repository.forget fraction '0.5'", on_repo("forget", [(1.0, "0.5")]), TypeError,
     "fraction")
case("dtype", "Repository.forget fraction True", on_repo("forget", [(1.0, True)]), TypeError,
     "fraction")
case("dtype", "Repository.timestamps(['a'])", on_repo("timestamps", ["a"]), TypeError, "ids")
case("dtype", "Repository.object_sketches(0.5)", on_repo("object_sketches", 0.5), ValueError,
     "graph_id must be integers, got 0.5")
case("dtype", "Repository.object_sketches('a')", on_repo("object_sketches", "a"), TypeError,
     "graph_id")
case("dtype", "Repository.search query=0.5", on_repo("search", 0.5), ValueError,
     "query must be integers, got 0.5")
case("dtype", "Repository.select(where=3)", on_repo("select", where=3), TypeError, "where")
case("dtype", "Repository.compact(force=1)", on_repo("compact", force=1), TypeError, "force")
case("range", "Repository.denoiser(rank=-1)", on_repo("denoiser", rank=-1), ValueError, "rank")
case("huge", "Repository.get of 2**40 broadcast ids",
     on_repo("get", np.broadcast_to(np.int32(0), (2**40,))), ValueError, "ids: a copy")
case("huge", "Repository.get of 2**40 broadcast uint64 ids beyond int64",   # size first
     on_repo("get", np.broadcast_to(np.uint64(2**64 - 1), (2**40,))), ValueError, "ids: a copy")
case("huge", "Repository.delete of 2**40 broadcast float ids",
     on_repo("delete", np.broadcast_to(np.float64(0.5), (2**40,))), ValueError, "ids: a copy")


def get_under_limit(repo, ids, nbytes):
    previous = rs.set_alloc_limit(nbytes)
    try:
        return repo.get(ids)
    finally:
        rs.set_alloc_limit(previous)


case("huge", "Repository.get of 1000 repeated ids, limit one byte short",
     lambda repo: get_under_limit(repo, np.zeros(1000, np.int64), 1000 * D * 4 - 1), ValueError,
     "reading 1000 sketches of 360 float32 values")
case("dtype", "Repository.get([0.5])", on_repo("get", [0.5]), ValueError, "ids")
case("range", "Repository.forget fraction 2", on_repo("forget", [(1.0, 2.0)]), ValueError,
     "fraction")
case("nan/inf", "Repository.forget age NaN", on_repo("forget", [(np.nan, 0.5)]), ValueError,
     "ages")
case("range", "Repository.forget negative age", on_repo("forget", [(-5.0, 0.5)]), ValueError,
     "ages")
case("range", "Repository.forget ages decreasing",
     on_repo("forget", [(10.0, 0.5), (1.0, 0.25)]), ValueError, "ages")
case("range", "Repository.clusters k=0", on_repo("clusters", 0), ValueError, "k")
case("range", "Repository.clusters k above the count", on_repo("clusters", 100), ValueError, "k")
case("range", "Repository.clusters seed=-1", on_repo("clusters", 2, seed=-1), ValueError, "seed")
case("dtype", "Repository.clusters seed=1.5", on_repo("clusters", 2, seed=1.5), TypeError,
     "seed")
case("nan/inf", "Repository.count weight=NaN", on_repo("count", "leaf", np.nan), ValueError,
     "weight")
case("dtype", "Repository.count module=3", on_repo("count", 3, 0.5), TypeError, "module")
case("range", "Repository.chunk_bytes=0", on_repo("__setattr__", "chunk_bytes", 0), ValueError,
     "chunk_bytes")
case("range", "Repository.find_object k=0", on_repo("find_object", S, "leaf", 0), ValueError, "k")
case("nan/inf", "Repository.find_object NaN sketch", on_repo("find_object", NAN_S, "leaf"),
     ValueError, "NaN")
case("range", "Repository.create index_dim=0",
     lambda repo: rs.Repository.create(repo.path.parent / "r2", SK, index_dim=0), ValueError,
     "index_dim")
case("dtype", "Repository.create sketcher=str",
     lambda repo: rs.Repository.create(repo.path.parent / "r3", "x"), TypeError, "sketcher")

# torch capture (optional extra)
try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
if torch is not None:
    def capture(inputs=None, **kw):
        import recsketch.torch as rt
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
                                    torch.nn.Linear(3, 2))
        return rt.capture(model, torch.randn(5, 4) if inputs is None else inputs, **kw)

    for label, kw, exc, pattern, category in [
            ("objects=x", dict(objects="x"), ValueError, "objects", "range"),
            ("edges=x", dict(edges="x"), ValueError, "edges", "range"),
            ("weights=x", dict(weights="x"), ValueError, "weights", "range"),
            ("top_k=0", dict(top_k=0), ValueError, "top_k", "range"),
            ("batch_size=0", dict(batch_size=0), ValueError, "batch_size", "range"),
            ("d_sketch=0", dict(d_sketch=0), ValueError, "d_sketch", "range"),
            ("d_sketch=2**40", dict(d_sketch=2**40), ValueError, "d_sketch", "huge"),
            ("seed=-1", dict(seed=-1), ValueError, "seed", "range"),
            ("layers=['nope']", dict(layers=["nope"]), ValueError, "nope", "range"),
            ("layers=3", dict(layers=3), TypeError, "layers", "dtype"),
            ("signed=1", dict(signed=1), TypeError, "signed", "dtype"),
            ("target=3", dict(target=3), TypeError, "target", "dtype"),
            ("inputs NaN", dict(inputs=torch.full((2, 4), float("nan"))), ValueError, "NaN",
             "nan/inf"),
            ("inputs with no rows", dict(inputs=torch.zeros(0, 4)), ValueError, "inputs",
             "zero-size"),
            # was the model's RuntimeError from inside torch (mat1 and mat2 shapes ...)
            ("inputs of width 5", dict(inputs=torch.randn(2, 5)), ValueError,
             "layer '0' (Linear) expects 4 features on the last axis, got an input of shape "
             "(2, 5)", "shape")]:
        case(category, f"torch.capture({label})", lambda kw=kw: capture(**kw), exc, pattern)


# A list mixing bools with numbers: NumPy reads [True, 1.0] as floats, so it passed where an
# array of bools (and a bool alone) is refused. One rule: a bool is not a real number.
MIXED_S = [True] + S[1:].tolist()                  # a sketch's length, one entry a bool
MIXED_SS = [[np.True_] + row[1:].tolist() for row in SS]
SUBSPACE = fit_subspace(SS, rank=2)
for label, call, pattern in [
        ("Graph.add attributes", lambda: rs.Graph().add("m", [True, 0.0]), "attributes"),
        ("Graph.add attributes (nested array)",
         lambda: rs.Graph().add("m", [np.array(True), 0.0]), "attributes"),
        ("Sketcher.attributes s", lambda: SK.attributes(MIXED_S, "leaf"), "sketch"),
        ("Sketcher.count s", lambda: SK.count(MIXED_SS, "leaf", 0.5), "sketch"),
        ("similarity s1", lambda: rs.similarity(MIXED_S, S), "s1"),
        ("erase s", lambda: rs.erase(MIXED_S, 0.5), "s"),
        ("ErasedSketch values", lambda: rs.ErasedSketch([True, 0.5], [0, 1], D, "prefix"),
         "values"),
        ("RandomMatrix.matvec x", lambda: R.matvec(MIXED_S), "x"),
        ("RandomMatrix.apply_short x", lambda: R.apply_short([True, 0.5]), "x"),
        ("DictionaryLearner.fit Y",
         lambda: rs.DictionaryLearner(D, block_size=36, density=0.3).fit(MIXED_SS), "Y"),
        ("Subspace.project s", lambda: SUBSPACE.project(MIXED_S), "sketch"),
        ("SubspaceFitter.add sketches",
         lambda: SubspaceFitter(D).add(MIXED_SS), "sketches"),
        ("LearnedModule.fit members",
         lambda: LearnedModule.fit("l", MIXED_SS, SS), "members"),
        ("Repository.add sketches", on_repo("add", MIXED_SS), "sketches"),
        ("Repository.search query", on_repo("search", MIXED_S, 2), "query")]:
    case("dtype", f"{label}=[True, numbers...]", call, TypeError, pattern)

# The same rule where a list was converted on its own (np.asarray: bools read as 0/1, strings
# parsed): rows of a fit_subspace batch, learn_network's inputs, LearnedModule's matrices.
LEARNED = LearnedModule.fit("l", Y[:3], Y[3:])
STR_SS = [[str(v) for v in row] for row in SS]
MIXED_X = [[True, 0.5], [0.25, 1.0], [0.0, 0.5], [1.0, 1.0], [0.5, 0.5], [0.0, 0.0]]
for label, call, pattern in [
        ("fit_subspace rows [True, numbers...]", lambda: fit_subspace(MIXED_SS, rank=2),
         "sketches"),
        ("fit_subspace rows of str", lambda: fit_subspace(STR_SS, rank=2), "sketches"),
        ("fit_subspace chunk [True, numbers...]", lambda: fit_subspace(iter([MIXED_SS]), rank=2),
         "sketches"),
        ("learn_network inputs [True, numbers...]",
         lambda: rs.learn_network(MIXED_X, SS, sketcher=SK), "inputs"),
        ("learn_network inputs str",
         lambda: rs.learn_network([["0.5", "1"]] * 6, SS, sketcher=SK), "inputs"),
        ("learn_network sketches [True, numbers...]",
         lambda: rs.learn_network(None, MIXED_SS, sketcher=SK), "sketches"),
        ("Subspace.project s str", lambda: SUBSPACE.project([str(v) for v in S]), "sketch"),
        ("LearnedModule.fit members str", lambda: LearnedModule.fit("l", STR_SS, SS), "members"),
        ("LearnedModule.fit past [True, numbers...]",
         lambda: LearnedModule.fit("l", SS, MIXED_SS), "past"),
        ("LearnedModule.scores sketches str", lambda: LEARNED.scores(STR_SS), "sketches"),
        ("LearnedModule.scores sketches [True, numbers...]",
         lambda: LEARNED.scores(MIXED_S), "sketches")]:
    case("dtype", label, call, TypeError, pattern)


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_refused_naming_the_argument(case_id, tmp_path):
    _, call, exc, pattern = CASES[case_id]
    repo = None
    if case_id.startswith("Repository"):
        repo = rs.Repository.create(tmp_path / "r", SK)
        stored = repo.add(SS)
        call = functools.partial(call, repo)
    with pytest.raises(exc) as info:
        call()
    assert pattern in str(info.value), str(info.value)
    if repo is not None:   # nothing stored, nothing lost
        np.testing.assert_array_equal(repo.ids(), stored)
        np.testing.assert_array_equal(repo.get(stored), SS.astype(np.float32))
        repo.close()


def test_a_torch_bool_among_numbers_is_a_bool():
    # NumPy reads [torch.tensor(True), 0.5, ...] as floats (the tensor's __array__/__float__)
    torch = pytest.importorskip("torch")
    for name, call in [("s1", lambda x: rs.similarity(x, S)),
                       ("attributes", lambda x: rs.Graph().add("m", [x[0], 0.0])),
                       ("sketches", lambda x: fit_subspace([x, S.tolist()], rank=1))]:
        with pytest.raises(TypeError, match=f"{name} must be an array of numbers, got a list "
                                            "holding a bool"):
            call([torch.tensor(True)] + S[1:].tolist())
    # a torch float or int tensor among numbers is a number, as before
    np.testing.assert_allclose(rs.similarity([torch.tensor(S[0])] + S[1:].tolist(), S),
                               rs.similarity(S, S))


def _any_bool_leaf(x):
    """Brute force: walk every leaf (the reference for holds_bool)."""
    if isinstance(x, (list, tuple)):
        return any(_any_bool_leaf(v) for v in x)
    if isinstance(x, np.ndarray):
        return x.dtype == bool or (x.dtype == object and any(map(_any_bool_leaf, x.flat)))
    return isinstance(x, (bool, np.bool_))


def test_holds_bool_agrees_with_a_walk_of_every_leaf():
    from recsketch._checks import holds_bool
    rng = np.random.default_rng(3)
    leaves = [0.5, 1, np.float32(2.0), np.int64(3), Fraction(1, 3), "0.5", True, np.True_,
              np.array(True), np.array([0.5, 1.0]), np.array([False]), 2**70]

    def nested(depth):
        if depth == 0 or rng.random() < 0.3:
            return leaves[rng.integers(len(leaves))]
        kind = list if rng.random() < 0.7 else tuple
        return kind(nested(depth - 1) for _ in range(rng.integers(0, 4)))

    cases = [nested(4) for _ in range(3000)]
    # rows of numbers with one bool (or nested list) in one place: the one-pass path
    rows = np.random.default_rng(0).random((50, 3)).tolist()
    for k, v in [(0, True), (49, np.False_), (25, [0.5]), (10, [[True]]), (30, (1.0, 2.0))]:
        r = [list(row) for row in rows]
        r[k] = r[k][:2] + [v]
        cases += [r, tuple(map(tuple, r)), [r[0], tuple(r[1])] + r[2:]]
    cases += [rows, [], [[]], [[], [True]], [[1.0], ()]]
    got = [holds_bool(c) for c in cases]
    assert got == [_any_bool_leaf(c) for c in cases]
    assert 200 < sum(got) < len(got) - 200          # both answers well represented


def test_the_table_covers_every_category():
    categories = {c for c, *_ in CASES.values()}
    assert categories >= {"nan/inf", "range", "dtype", "shape", "zero-size", "huge", "weights"}


def test_a_refused_graph_add_leaves_the_graph_unchanged():
    g = rs.Graph()
    a = g.add("leaf", [1.0])
    for bad in ([np.nan], [-1.0], np.array([1 + 0j]), HUGE_VIEW):
        with pytest.raises((TypeError, ValueError)):
            g.add("top", bad, [(a, 0.5)])
    with pytest.raises(ValueError):
        g.add("top", [1.0], [(a, 1.5)])
    assert g.modules == ["leaf"]
    top = g.add("top", [1.0], [(a, 0.5)])   # the next object gets the next index
    assert top.index == 1


def test_a_refused_sketch_registers_no_module():
    sk = rs.Sketcher(D, block_size=36, density=0.3, seed=1)
    g = rs.Graph()
    g.set_output([(g.add("fresh", np.ones(400) / 20), 1.0)])
    with pytest.raises(ValueError, match="d_sketch"):
        sk.sketch(g)
    assert "fresh" not in sk.modules


# -- accepted edge cases, each against an independent computation -------------------------------

def test_a_fraction_is_a_real_number_everywhere():
    # one rule, both layers: any numbers.Real, rounded to float64 as float() does
    # (a decimal.Decimal is refused: see the table)
    third = Fraction(1, 3)
    g_frac, g_float = rs.Graph(), rs.Graph()
    for g, w in ((g_frac, third), (g_float, 1 / 3)):
        a = g.add("leaf", [0.6, 0.8])
        b = g.add("leaf", [1.0, 0.0])
        g.set_output([(g.add("top", [1.0], [(a, w), (b, w)]), 1.0)])
    np.testing.assert_array_equal(SK.sketch(g_frac), SK.sketch(g_float))
    sk_frac = rs.Sketcher(D, block_size=36, density=Fraction(3, 10), seed=1, dtype="float64")
    assert sk_frac.density == 0.3
    np.testing.assert_array_equal(sk_frac.sketch(G), S)
    assert SK.count(S, "leaf", Fraction(1, 2)) == SK.count(S, "leaf", 0.5)
    from recsketch import _core
    fam = _core.BlockSparseFamily(D, 36, Fraction(3, 10))
    assert fam.density == 0.3 and fam.scale == 1 / np.sqrt(D * 0.3)
    with pytest.raises(ValueError, match="density is out of range"):
        _core.BlockSparseFamily(D, 36, Fraction(10**400))
    with pytest.raises(TypeError, match="density must be a real number, got Decimal"):
        _core.BlockSparseFamily(D, 36, Decimal("0.3"))


def test_reversed_and_strided_sketches_read_like_their_contiguous_copies():
    rev = np.ascontiguousarray(S[::-1])[::-1]   # a negative-stride view with S's values
    assert rev.strides[0] < 0
    strided = np.repeat(S, 2)[::2]
    for s in (rev, strided):
        assert not s.flags.c_contiguous
        np.testing.assert_array_equal(SK.attributes(s, "leaf").attributes,
                                      SK.attributes(S.copy(), "leaf").attributes)
    # a reversed sketch is another vector: its mass is the one of that vector's copy
    flipped = S[::-1]
    assert SK.mass(flipped, "leaf") == SK.mass(np.ascontiguousarray(flipped), "leaf")


def test_a_repository_stores_a_reversed_batch_as_its_copy(tmp_path):
    r = rs.Repository.create(tmp_path / "r", SK)
    ids = r.add(SS[::-1])
    np.testing.assert_array_equal(r.get(ids), SS[::-1].astype(np.float32))
    assert r.add(SS[:0]).size == 0 and r.ids().size == len(SS)
    assert r.delete([]) == 0 and r.ids().size == len(SS)


def test_integral_float_ids_name_the_same_sketches_everywhere(tmp_path):
    # 1.0 is the id 1 at every id entry point (as before the allocation limit); 1.5 is a
    # ValueError naming the argument (see the table)
    r = rs.Repository.create(tmp_path / "r", SK)
    ids = r.add(SS[:3], ids=[10.0, 11, 12.0], labels=["a", "b", "c"])
    assert ids.tolist() == [10, 11, 12]
    np.testing.assert_array_equal(r.get([10.0, 12.0]), r.get([10, 12]))
    assert r.labels([11.0]) == r.labels([11]) == ["b"]
    found, _ = r.search(SS[0], 3, exclude=[10.0])
    assert 10 not in found.tolist() and sorted(found.tolist()) == [11, 12]
    by_float, _ = r.search(10.0, 2)
    np.testing.assert_array_equal(by_float, r.search(10, 2)[0])
    assert r.delete(12.0) == 1 and r.ids().tolist() == [10, 11]
    with pytest.raises(ValueError, match="ids must be integers, got 1.5"):
        r.add(SS[:1], ids=[1.5])


def test_graph_attributes_given_as_fractions_are_reals():
    g = rs.Graph()
    h = g.add("m", [Fraction(3, 5), Fraction(4, 5)])
    np.testing.assert_array_equal(g.attributes(h), [0.6, 0.8])
    for bad in ([Decimal("0.6"), Decimal("0.8")], [0.6 + 0j, 0.8], ["0.6", "0.8"]):
        with pytest.raises(TypeError, match="attributes must be"):
            g.add("m", bad)


def test_an_empty_fit_sees_no_sample():
    learner = rs.DictionaryLearner(D, block_size=36, density=0.3).fit(Y[:0])
    assert learner.n_samples_seen_ == 0


def test_graph_attributes_of_integer_dtype_are_reals():
    g = rs.Graph()
    h = g.add("m", np.array([0, 1], np.int64))
    np.testing.assert_array_equal(g.attributes(h), [0.0, 1.0])


def test_an_erased_sketch_from_its_parts_reads_like_the_one_erase_made():
    # the parts erase returns (as a user may store them) make an equal erased sketch, checked
    for mode, seed in (("prefix", 0), ("random", 7)):
        e = rs.erase(SS, 200, mode=mode, seed=seed)
        again = rs.ErasedSketch(e.values, e.indices.tolist(), e.d_sketch, e.mode, e.seed)
        assert again.indices.dtype == np.int64 and again.d_kept == 200
        np.testing.assert_array_equal(again.to_dense(), e.to_dense())
        want = SK.attributes(e, "leaf").attributes
        np.testing.assert_array_equal(SK.attributes(again, "leaf").attributes, want)
        # against an independent reading: the full sketches with the erased coordinates zeroed
        kept = np.zeros(D, bool)
        kept[again.indices] = True
        np.testing.assert_array_equal(again.to_dense(), np.where(kept, SS, 0.0))


def test_an_erased_sketch_reads_the_same_whatever_the_layout_of_its_values():
    # float32 values in Fortran order gave attributes 1 ulp off the C-ordered ones
    sk32 = rs.Sketcher(D, block_size=36, density=0.3, seed=1)
    e = rs.erase(sk32.sketch_many([G] * 3), 100)
    wide = np.zeros((3, 200), np.float32)
    wide[:, ::2] = e.values
    for values in (np.asfortranarray(e.values), wide[:, ::2]):
        other = rs.ErasedSketch(values, e.indices, D, "prefix")
        assert other.values.flags.c_contiguous
        for query in (lambda x: sk32.attributes(x, "leaf").attributes,
                      lambda x: sk32.mass(x, "leaf"),
                      lambda x: sk32.count(x, "leaf", 1.0),
                      lambda x: rs.similarity(x, SS[0].astype(np.float32))):
            np.testing.assert_array_equal(query(other), query(e))


def test_an_erased_sketch_keeps_no_view_of_the_callers_array():
    # the checks (finite values) hold for good: a later write into the caller's array, or into
    # the sketch erase() read, does not reach the erased sketch
    values = SS[:2, :100].copy()
    e = rs.ErasedSketch(values, np.arange(100), D, "prefix")
    s = SS[0].copy()
    f = rs.erase(s, 100)
    values[0, 0] = np.nan
    s[0] = np.nan
    assert not np.shares_memory(e.values, values) and not np.shares_memory(f.values, s)
    assert np.isfinite(e.values).all() and np.isfinite(f.values).all()
    np.testing.assert_array_equal(f.values, SS[0, :100])


def test_the_parts_of_an_erased_sketch_are_read_only():
    import pickle
    values = SS[:2, :100].copy()
    e = rs.ErasedSketch(values, np.arange(100), D, "prefix")
    before = SK.attributes(e, "leaf").attributes
    for part, new in (("values", np.full(100, np.nan)), ("indices", -np.arange(1, 101)),
                      ("d_sketch", 0), ("mode", "random"), ("seed", 3)):
        with pytest.raises(AttributeError):
            setattr(e, part, new)
    for arr in (e.values, e.indices):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 5
    assert values.flags.writeable          # the caller's own array is left as it was
    assert rs.erase(SS, 100).values.flags.writeable is False
    np.testing.assert_array_equal(SK.attributes(e, "leaf").attributes, before)
    back = pickle.loads(pickle.dumps(e))
    assert back.indices.flags.writeable is False and back.d_sketch == D
    np.testing.assert_array_equal(back.values, values)
    np.testing.assert_array_equal(SK.attributes(back, "leaf").attributes, before)
