"""The benchmark regression gate (bench/compare.py): ratio extraction and comparison on
synthetic pytest-benchmark documents, then the whole gate on a real benchmark whose measured
function is deliberately slowed."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import compare  # noqa: E402


def _doc(times):
    """A pytest-benchmark document: {(group, impl): min seconds}."""
    return {"benchmarks": [{"name": f"test[{impl}]", "group": group, "params": {"impl": impl},
                            "stats": {"min": t}} for (group, impl), t in times.items()]}


def test_ratios_are_baseline_over_implementation_per_group():
    # "recsketch" (the default thread count against a one-thread baseline) is not gated
    doc = _doc({("k d=4", "scipy_csr"): 2.0, ("k d=4", "recsketch_1thread"): 0.5,
                ("k d=4", "recsketch"): 0.25,
                ("q", "numpy_paper"): 1.0, ("q", "recsketch_matched"): 4.0,
                ("no baseline here", "recsketch_1thread"): 1.0})
    assert compare.ratios_of(doc) == {"k d=4 :: recsketch_1thread": 4.0,
                                      "q :: recsketch_matched": 0.25}


def test_tolerance_comes_from_the_spread_with_a_floor():
    runs = [{"a": 10.0, "b": 1.0}, {"a": 10.5, "b": 1.5}, {"a": 9.9, "b": 1.2}]
    s = compare.summarise(runs)
    assert s["a"]["ratio"] == 10.0 and s["b"]["ratio"] == 1.2
    assert s["a"]["tolerance"] == compare.FLOOR  # spread 6%: the floor wins
    assert s["b"]["spread"] == pytest.approx(0.5)
    assert s["b"]["tolerance"] == compare.CEILING  # 2 x 50% spread: capped...
    assert s["a"]["gated"] and not s["b"]["gated"]  # ... and too noisy to fail a build on
    assert s["b"]["runs"] == [1.0, 1.5, 1.2]


def test_compare_fails_on_a_drop_beyond_tolerance_and_on_missing_ratios():
    base = {"a": {"ratio": 10.0, "tolerance": 0.3, "gated": True},
            "b": {"ratio": 2.0, "tolerance": 0.3, "gated": True},
            "n": {"ratio": 2.0, "tolerance": 0.5, "gated": False}}
    assert compare.compare(base, {"a": 7.1, "b": 2.5, "n": 2.0})[:2] == ([], [])  # -29%, rise
    regressions, missing, lines = compare.compare(base, {"a": 6.9, "c": 1.0, "n": 0.1})
    assert regressions == ["a"] and missing == ["b"]  # the noisy "n" drop is only reported
    assert any(ln.startswith("low, noisy") and " n:" in ln for ln in lines)
    assert any(ln.startswith("new") and "c" in ln for ln in lines)


# The gate's benchmark runs on a fake clock (pytest-benchmark's --benchmark-timer): each call
# of the timer advances it by one nanosecond (pytest-benchmark reads it until it moves), and
# each unit of "work" by one millisecond. The ratios are then exact, whatever the machine's
# load: this test checks the gate's logic, not this machine's timing.
FAKE_CLOCK = textwrap.dedent('''
    NOW = [0.0]


    def now():
        NOW[0] += 1e-9
        return NOW[0]


    def work(units):
        NOW[0] += 1e-3 * units
''')

BENCH = textwrap.dedent('''
    import os

    import pytest

    import fake_clock


    @pytest.mark.parametrize("impl", ["numpy_sum", "candidate"])
    def test_op(benchmark, impl):
        benchmark.group = "gate demo"
        # the candidate does the baseline's work SLOW times: a deliberately slowed kernel
        units = int(os.environ.get("SLOW", "1")) if impl == "candidate" else 1
        benchmark.pedantic(fake_clock.work, args=(units,), rounds=5, iterations=1,
                           warmup_rounds=1)
''')


def test_gate_passes_on_the_baseline_and_fails_on_a_slowed_function(tmp_path, monkeypatch,
                                                                     capsys):
    bench = tmp_path / "bench_gate.py"
    bench.write_text(BENCH)
    (tmp_path / "fake_clock.py").write_text(FAKE_CLOCK)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    timer = ["--benchmark-timer=fake_clock.now"]
    baseline = tmp_path / "baseline.json"
    monkeypatch.setenv("SLOW", "1")
    doc = compare.update(baseline, 2, [str(bench), *timer])
    assert list(doc["ratios"]) == ["gate demo :: candidate"]
    assert json.loads(baseline.read_text())["ratios"] == doc["ratios"]
    entry = doc["ratios"]["gate demo :: candidate"]
    assert entry["ratio"] == pytest.approx(1.0, rel=1e-4)  # same work on the fake clock
    assert entry["tolerance"] == compare.FLOOR and entry["gated"]

    def gate():
        result = tmp_path / "run.json"
        result.write_text(json.dumps(compare.run_subset([str(bench), *timer])))
        return compare.main(["check", "--json", str(result), "--baseline", str(baseline)])

    assert gate() == 0
    capsys.readouterr()
    monkeypatch.setenv("SLOW", "2")  # twice the work: the ratio halves, beyond any tolerance
    assert gate() == 1                # (at most CEILING = 50%)
    assert "REGRESSION  gate demo :: candidate" in capsys.readouterr().out


def test_check_without_a_baseline_says_how_to_make_one(tmp_path):
    with pytest.raises(SystemExit, match="python bench/compare.py update"):
        compare.main(["check", "--json", str(tmp_path / "x.json"),
                      "--baseline", str(tmp_path / "none.json")])


def test_a_regression_must_hold_in_every_run_of_the_subset():
    """A slowdown in one run only (another process on the machine) passes on the rerun; one in
    every run fails; a clean first run is not repeated."""
    baseline = {"g :: impl": {"ratio": 1.0, "tolerance": 0.3, "gated": True}}

    def runs_of(values):
        it = iter(values)
        calls = []

        def run():
            calls.append(1)
            return {"g :: impl": next(it)}
        return run, calls

    run, calls = runs_of([0.5, 0.98, 0.2])  # busy, then quiet: passes on the second run
    regressions, missing, lines = compare.gate(baseline, run, 3)
    assert (regressions, missing, len(calls)) == ([], [], 2)
    assert any("0.98" in line and line.startswith("ok") for line in lines)

    run, calls = runs_of([0.5, 0.6, 0.55])  # slow every time: a real regression
    regressions, _, lines = compare.gate(baseline, run, 3)
    assert (regressions, len(calls)) == (["g :: impl"], 3)
    assert any("0.6 " in line and line.startswith("REGRESSION") for line in lines)

    run, calls = runs_of([1.01])
    assert compare.gate(baseline, run, 3)[0] == [] and len(calls) == 1
