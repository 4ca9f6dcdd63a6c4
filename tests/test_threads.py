"""A Sketcher shared by threads (issue 12, defects 3 and 4): every public query gives, from
many threads at once, exactly what one thread gives, and the query cache is bounded by bytes
and keeps a rotation of a dozen modules without rebuilding."""

import sys
import threading

import numpy as np
import pytest

import recsketch as rs
from scenes import unit

N_MODULES = 14  # more than the Round-1 cache's 32 entries could hold in rotation
N_THREADS = 6


def run_racing(threads):
    """Starts and joins the threads with the interpreter switching between them as often as
    it can (a 1 us switch interval), so that races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)


def zoo(rng):
    """Objects of N_MODULES modules at depth 2 (three of them with children at depth 3)."""
    g = rs.Graph()
    top = []
    for m in range(N_MODULES):
        kids = [(g.add(f"part{m % 3}", unit(rng, 5)), 0.5)] if m < 3 else []
        top.append(g.add(f"m{m}", unit(rng, 4 + m % 5), kids))
    g.set_output([(h, 1 / len(top)) for h in top])
    return g


def make(cache_bytes=None):
    kw = {} if cache_bytes is None else {"query_cache_bytes": cache_bytes}
    sk = rs.Sketcher(1020, seed=3, dtype="float64", **kw)
    s = sk.sketch_many([zoo(np.random.default_rng(k)) for k in range(3)])
    return sk, s


def queries(s):
    """Every public query, as (name, callable of a Sketcher), over all modules in rotation."""
    w = 1 / N_MODULES
    erased = rs.erase(s, 0.75)
    out = []
    for m in range(N_MODULES):
        mod = f"m{m}"
        out += [
            (f"count {mod}", lambda sk, mod=mod: sk.count(s, mod, w)),
            (f"count paper {mod}", lambda sk, mod=mod: sk.count(s[0], mod, w, method="paper")),
            (f"mass {mod}", lambda sk, mod=mod: sk.mass(s, mod)),
            (f"attributes {mod}", lambda sk, mod=mod: sk.attributes(s, mod, weight=w)),
            (f"attributes path {mod}", lambda sk, m=m, mod=mod: sk.attributes(s, mod, [m + 1])),
            (f"summed {mod}", lambda sk, mod=mod: sk.summed_attributes(s, mod, w)),
            (f"mean {mod}", lambda sk, mod=mod: sk.mean_attributes(s, mod)),
            (f"erased count {mod}", lambda sk, mod=mod: sk.count(erased, mod, w)),
        ]
    for m in range(3):
        out += [
            (f"subsketch {m}", lambda sk, m=m: sk.subsketch(s, [m + 1], f"m{m}").values),
            (f"subsketch then attributes {m}", lambda sk, m=m: sk.attributes(
                sk.subsketch(s, [m + 1], f"m{m}", weight=1 / N_MODULES), f"part{m}", [1],
                weight=0.5)),
        ]
    out += [
        ("similarity", lambda sk: rs.similarity(s, s).cosine),
        ("similarity erased", lambda sk: rs.similarity(erased, s[1]).dot),
        ("erase", lambda sk: rs.erase(s, 100, mode="random", seed=4).values),
    ]
    return out


def as_array(x):
    if isinstance(x, rs.AttributeEstimate):
        return np.concatenate([np.ravel(x.attributes), np.ravel(x.weight)])
    return np.asarray(x, dtype=np.float64)


def run_threaded(sk, work, n_threads=N_THREADS, rounds=3):
    """Each thread runs every query `rounds` times in its own order; returns results, errors."""
    results, errors = [], []
    barrier = threading.Barrier(n_threads)

    def worker(t):
        rng = np.random.default_rng(t)
        barrier.wait()
        for _ in range(rounds):
            for k in rng.permutation(len(work)):
                name, call = work[k]
                try:
                    results.append((name, as_array(call(sk))))
                except Exception as exc:  # noqa: BLE001 - any exception is a failure here
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")

    run_racing([threading.Thread(target=worker, args=(t,)) for t in range(n_threads)])
    return results, errors


@pytest.mark.parametrize("cache_bytes", [None, 200_000], ids=["default budget", "tiny budget"])
def test_every_query_from_many_threads_equals_one_thread(cache_bytes):
    # The reference comes from a separate Sketcher (same seed), queried from one thread.
    ref_sk, s = make()
    work = queries(s)
    expected = {name: as_array(call(ref_sk)) for name, call in work}
    sk, _ = make(cache_bytes)  # a fresh cache: threads race to fill and (tiny) to evict it
    results, errors = run_threaded(sk, work)
    assert not errors, errors[:5]
    assert len(results) == N_THREADS * 3 * len(work)
    for name, value in results:
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_sketching_from_many_threads_equals_one_thread():
    graphs = [zoo(np.random.default_rng(k)) for k in range(8)]
    expected = rs.Sketcher(1020, seed=3).sketch_many(graphs, num_threads=1)
    sk = rs.Sketcher(1020, seed=3)
    out = [None] * len(graphs)
    errors = []

    def worker(k):
        try:
            out[k] = sk.sketch(graphs[k], num_threads=1)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    run_racing([threading.Thread(target=worker, args=(k,)) for k in range(len(graphs))])
    assert not errors, errors
    np.testing.assert_array_equal(np.stack(out), expected)
    assert set(sk.modules) == {f"m{m}" for m in range(N_MODULES)} | {"part0", "part1", "part2"}


def test_query_cache_keeps_a_rotation_of_modules_without_rebuilding():
    sk, s = make()
    names = [f"m{m}" for m in range(12)]
    for name in names:  # first pass: every entry built once
        sk.attributes(s, name, weight=1 / N_MODULES)
        sk.count(s, name, 1 / N_MODULES)
    first = sk.decoder.cache_info()
    for _ in range(3):
        for name in names:
            sk.attributes(s, name, weight=1 / N_MODULES)
            sk.count(s, name, 1 / N_MODULES)
    info = sk.decoder.cache_info()
    assert info["misses"] == first["misses"], "a rotation of 12 modules rebuilt probes"
    assert info["hits"] > first["hits"]
    assert 0 < info["bytes"] <= info["limit"] == rs.decoder.QUERY_CACHE_BYTES


def test_query_cache_is_bounded_by_bytes():
    sk, s = make(cache_bytes=100_000)
    for m in range(N_MODULES):
        sk.attributes(s, f"m{m}", weight=1 / N_MODULES)
        info = sk.decoder.cache_info()
        assert info["bytes"] <= 100_000
    assert info["entries"] < 4 * N_MODULES  # evictions happened
    # results do not depend on the budget
    ref, _ = make()
    np.testing.assert_array_equal(sk.attributes(s, "m0", weight=0.1), ref.attributes(s, "m0", weight=0.1))
    # the budget can be changed later; shrinking evicts at once; bad budgets are refused
    sk.decoder.cache_bytes = 10_000
    assert sk.decoder.cache_info()["bytes"] <= 10_000
    sk.decoder.cache_bytes = 0
    assert sk.decoder.cache_info()["entries"] == 0
    np.testing.assert_array_equal(sk.attributes(s, "m0", weight=0.1), ref.attributes(s, "m0", weight=0.1))
    with pytest.raises(ValueError, match="cache limit"):
        sk.decoder.cache_bytes = -1
    with pytest.raises(TypeError, match="cache limit"):
        sk.decoder.cache_bytes = 1.5
    with pytest.raises(ValueError, match="cache limit"):
        rs.Sketcher(1020, query_cache_bytes=-5)


def test_concurrent_sketches_cannot_register_a_module_at_two_depths():
    # Registry check and record used to straddle the native call (which releases the GIL):
    # two threads could both pass the check and sketch module "x" at depths 2 and 3.
    def graph(depth_of_x, seed):
        rng = np.random.default_rng(seed)
        g = rs.Graph()
        tops = []
        for _ in range(40):
            x = g.add("x", unit(rng, 8))
            tops.append(x if depth_of_x == 2 else g.add("top", unit(rng, 8), [(x, 1.0)]))
        g.set_output([(h, 1 / len(tops)) for h in tops])
        return g

    for trial in range(4):
        sk = rs.Sketcher(2040, seed=trial)
        graphs = [graph(2, trial), graph(3, trial)]
        outcome = [None, None]
        barrier = threading.Barrier(2)

        def worker(k):
            barrier.wait()
            try:
                sk.sketch(graphs[k], num_threads=1)
                outcome[k] = "ok"
            except ValueError as exc:
                outcome[k] = str(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert outcome.count("ok") == 1, outcome
        loser = outcome[1 - outcome.index("ok")]
        assert "module 'x' is registered at depth" in loser
        assert sk.modules["x"].depth == 2 + outcome.index("ok")
