"""sketch_graphs' allocation estimate (sketch_graphs_peak_bytes in recsketch/sketch.hpp plus the
binding's index copies: the number a refusal names) over batches, d, thread counts, dtypes, object
outputs and working budgets: the sketches, slices and products' scratch as the binding computed
them before the estimate moved next to the kernel (the formula written out here for the
orthogonal family; a table recorded from the build of the binding's last version, commit
9f78f1c, for the block-sparse one), plus the per-row bookkeeping and index copies counted since
(written out here, :func:`_bookkeeping`). Measured peaks against the estimate:
tests/test_alloc_limit.py."""

import re

import numpy as np
import pytest

import recsketch as rs
from recsketch import _core
from recsketch.graph import flatten


def _args(sk, graphs):
    flat = flatten(graphs, sk.d_sketch)
    return dict(
        modules=[tuple(sk.module_matrix(n, k)._native for k in range(3)) for n in flat.modules],
        positions=[sk.position_matrix(i)._native for i in range(1, flat.max_fan_in + 1)],
        d=sk.d_sketch, graph_ptr=flat.graph_ptr, module=flat.module, attr_ptr=flat.attr_ptr,
        attr=flat.attr, input_ptr=flat.input_ptr, input_row=flat.input_row,
        input_weight=flat.input_weight), flat


def _small():
    g = rs.Graph()
    a = g.add("leaf", [0.6, 0.8])
    b = g.add("leaf", [1.0, 0.0])
    g.set_output([(g.add("top", [1.0], [(a, 0.5), (b, 0.5)]), 1.0)])
    return g


def _wide(n):
    g = rs.Graph()
    leaves = [g.add("wleaf", [1.0]) for _ in range(n)]
    g.set_output([(g.add("top", [1.0], [(h, 1 / n) for h in leaves]), 1.0)])
    return g


def _chain(n):
    g = rs.Graph()
    h = g.add("cleaf", [1.0])
    for k in range(n):
        h = g.add(f"m{k}", [0.6, 0.8], [(h, 1.0)])
    g.set_output([(h, 1.0)])
    return g


BATCHES = {"small*50": lambda: [_small()] * 50, "wide300": lambda: [_wide(300)],
           "mixed": lambda: [_small(), _wide(70), _chain(9), _small()],
           "chain40": lambda: [_chain(40)]}


def _estimate(args, float64, return_objects, threads, work):
    previous = _core._set_sketch_working_bytes(work)
    try:
        with rs.alloc_limit_set(0):
            with pytest.raises(ValueError, match="^sketch_graphs: ") as info:
                _core.sketch_graphs(**args, float64=float64, return_objects=return_objects,
                                    num_threads=threads)
    finally:
        _core._set_sketch_working_bytes(previous)
    return int(re.search(r"would need (\d+) bytes", str(info.value)).group(1))


def _bookkeeping(d, flat, float64, work):
    """What the estimate adds to the sketches and scratch: per row in flight (a group's rows, or
    the widest graph's, never more than the batch's) its four int64 indices, its sketch's vector
    header (24) and allocation overhead (32), its entries in two row lists (2 x 2 x 8 with their
    spare capacity) and two lists' own header and allocation (2 x 56); per slice row four int64
    (order, gather, module runs); and the binding's copies of the index arrays (int64 offsets
    and input rows, int32 modules). No leaf embeddings in these batches."""
    item = 8 if float64 else 4
    rows = len(flat.module)
    edges = len(flat.input_row)
    n_graphs = len(flat.graph_ptr) - 1
    widest = int(np.diff(flat.graph_ptr).max())
    row = d * item
    flight_rows = min(max(1, rows), max(max(1, (work // 4 * 3) // row), widest))
    slice_rows = min(max(1, (work // 4) // (5 * row)), max(1, rows))
    per_row = 4 * 8 + (24 + 32) + 2 * 2 * 8 + 2 * (24 + 32)
    copies = (n_graphs + 1 + 2 * (rows + 1) + edges) * 8 + rows * 4
    return flight_rows * per_row + slice_rows * 4 * 8 + copies


def _old_formula_orthogonal(d, flat, float64, return_objects, threads, work):
    """The binding's estimate as it was written before (orthogonal matrices: three sign
    bit-vectors and one d-vector of float64 per running task)."""
    item = 8 if float64 else 4
    rows = len(flat.module)
    n_graphs = len(flat.graph_ptr) - 1
    task_vectors = min(64, max(1, rows))
    running = max(1, min(threads, rows))

    def scratch(n, t):
        return 3 * ((d + 63) // 64) * 8 + max(1, min(t, n)) * d * 8
    product = max(running * scratch(task_vectors, 1), scratch(task_vectors, threads))
    widest = int(np.diff(flat.graph_ptr).max())
    row = d * item
    # a group's 3/4 of the budget and a slice's five buffers in the other quarter, in rows, but
    # never more rows than the batch has
    group_rows = max(1, (work // 4 * 3) // row)
    slice_rows = max(1, (work // 4) // (5 * row))
    slice_buffers = 5 * min(slice_rows, max(1, rows)) * row
    in_flight = (min(max(1, rows), max(group_rows, widest)) * row + slice_buffers
                 + slice_buffers // 5 + running * row)
    outputs = (n_graphs + (rows if return_objects else 0)) * d * item
    return outputs + in_flight + product


@pytest.mark.parametrize("d", [256, 4096])
def test_orthogonal_estimate_is_the_old_formula(d):
    sk = rs.Sketcher(d, family="orthogonal", seed=1)
    for name, make in BATCHES.items():
        args, flat = _args(sk, make())
        for work in (1 << 28, 1 << 20, 4096):
            for threads in (1, 2, 3, 8):
                for float64 in (False, True):
                    for return_objects in (False, True):
                        assert _estimate(args, float64, return_objects, threads, work) == \
                            _old_formula_orthogonal(d, flat, float64, return_objects, threads,
                                                    work) + \
                            _bookkeeping(d, flat, float64, work), (name, work, threads, float64)


# (sketcher, batch, working bytes, threads, float64, return_objects): bytes, as the build of
# 9f78f1c named them (before the bookkeeping and the index copies were counted).
RECORDED = {
    ("bs360", "small*50", 268435456, 1, False, False): 2164960,
    ("bs360", "small*50", 268435456, 1, True, True): 4830400,
    ("bs360", "small*50", 268435456, 3, False, False): 2351520,
    ("bs360", "small*50", 268435456, 3, True, True): 5019840,
    ("bs360", "small*50", 4096, 1, False, False): 163360,
    ("bs360", "small*50", 4096, 1, True, True): 827200,
    ("bs360", "small*50", 4096, 3, False, False): 349920,
    ("bs360", "small*50", 4096, 3, True, True): 1016640,
    ("bs360", "wide300", 268435456, 1, False, False): 3122560,
    ("bs360", "wide300", 268435456, 1, True, True): 7039360,
    ("bs360", "wide300", 268435456, 3, False, False): 3309120,
    ("bs360", "wide300", 268435456, 3, True, True): 7228800,
    ("bs360", "wide300", 4096, 1, False, False): 521920,
    ("bs360", "wide300", 4096, 1, True, True): 1838080,
    ("bs360", "wide300", 4096, 3, False, False): 708480,
    ("bs360", "wide300", 4096, 3, True, True): 2027520,
    ("bs360", "mixed", 268435456, 1, False, False): 1000000,
    ("bs360", "mixed", 268435456, 1, True, True): 2186560,
    ("bs360", "mixed", 268435456, 3, False, False): 1186560,
    ("bs360", "mixed", 268435456, 3, True, True): 2376000,
    ("bs360", "mixed", 4096, 1, False, False): 195040,
    ("bs360", "mixed", 4096, 1, True, True): 576640,
    ("bs360", "mixed", 4096, 3, False, False): 381600,
    ("bs360", "mixed", 4096, 3, True, True): 766080,
    ("bs4096", "small*50", 268435456, 1, False, False): 24576916,
    ("bs4096", "small*50", 268435456, 1, True, True): 54896296,
    ("bs4096", "small*50", 268435456, 3, False, False): 26525772,
    ("bs4096", "small*50", 268435456, 3, True, True): 56877912,
    ("bs4096", "small*50", 4096, 1, False, False): 1808716,
    ("bs4096", "small*50", 4096, 1, True, True): 9359896,
    ("bs4096", "small*50", 4096, 3, False, False): 3757572,
    ("bs4096", "small*50", 4096, 3, True, True): 11341512,
    ("bs4096", "wide300", 268435456, 1, False, False): 35469616,
    ("bs4096", "wide300", 268435456, 1, True, True): 80023216,
    ("bs4096", "wide300", 268435456, 3, False, False): 37418472,
    ("bs4096", "wide300", 268435456, 3, True, True): 82004832,
    ("bs4096", "wide300", 4096, 1, False, False): 5887336,
    ("bs4096", "wide300", 4096, 1, True, True): 20858656,
    ("bs4096", "wide300", 4096, 3, False, False): 7836192,
    ("bs4096", "wide300", 4096, 3, True, True): 22840272,
    ("bs4096", "mixed", 268435456, 1, False, False): 11325496,
    ("bs4096", "mixed", 268435456, 1, True, True): 24822616,
    ("bs4096", "mixed", 268435456, 3, False, False): 13274352,
    ("bs4096", "mixed", 268435456, 3, True, True): 26804232,
    ("bs4096", "mixed", 4096, 1, False, False): 2169076,
    ("bs4096", "mixed", 4096, 1, True, True): 6509776,
    ("bs4096", "mixed", 4096, 3, False, False): 4117932,
    ("bs4096", "mixed", 4096, 3, True, True): 8491392,

}


def test_block_sparse_estimate_is_the_recorded_one():
    sketchers = {"bs360": rs.Sketcher(360, block_size=36, density=0.3, seed=1),
                 "bs4096": rs.Sketcher(rs.suggest_block_sparse(4096).d_sketch, seed=1)}
    args = {(s, b): _args(sk, BATCHES[b]()) for s, sk in sketchers.items() for b in BATCHES}
    for (s, b, work, threads, float64, return_objects), recorded in RECORDED.items():
        (batch, flat), d = args[s, b], sketchers[s].d_sketch
        assert _estimate(batch, float64, return_objects, threads, work) == \
            recorded + _bookkeeping(d, flat, float64, work), \
            (s, b, work, threads, float64, return_objects)
