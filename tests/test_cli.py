"""The command line: sketch graph files, manage a repository, run a short demo."""

import json

import numpy as np
import pytest

import recsketch as rs
from recsketch.__main__ import main
from scenes import room


def test_sketch_command_matches_the_library(tmp_path, capsys):
    g, _ = room(np.random.default_rng(0))
    (tmp_path / "g.json").write_text(json.dumps(g.to_dict()))
    out = tmp_path / "s.npy"
    assert main(["sketch", str(tmp_path / "g.json"), "-o", str(out), "--d", "1024",
                 "--family", "orthogonal", "--seed", "3"]) == 0
    expect = rs.Sketcher(1024, family="orthogonal", seed=3).sketch(g)
    assert np.array_equal(np.load(out), expect)
    config = rs.Sketcher.from_json((tmp_path / "s.sketcher.json").read_text())
    assert config.modules["edge"].depth == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"objects": [{"module": "a", "attributes": [2.0]}],
                               "output": [[0, 1.0]]}))
    with pytest.raises(SystemExit, match="unit l2 norm"):
        main(["sketch", str(bad), "-o", str(out)])


def test_repo_commands(tmp_path, capsys):
    sk = rs.Sketcher(1024, family="orthogonal", seed=3)
    (tmp_path / "sk.json").write_text(sk.to_json())
    S = sk.sketch_many([room(np.random.default_rng(k))[0] for k in range(6)])
    np.save(tmp_path / "S.npy", S)
    repo = str(tmp_path / "repo")
    assert main(["repo", "create", repo, "--config", str(tmp_path / "sk.json")]) == 0
    assert main(["repo", "add", repo, str(tmp_path / "S.npy"), "--time", "2025-01-01",
                 "--labels", '{"room": "kitchen"}']) == 0
    assert "added 6 sketches" in capsys.readouterr().out
    assert main(["repo", "search", repo, "--id", "2", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "2\t" not in "".join(line[:2] for line in lines)
    assert main(["repo", "stats", repo]) == 0
    assert json.loads(capsys.readouterr().out)["sketches"] == 6
    assert main(["repo", "forget", repo, "--policy", "1d:1,inf:0.5", "--now", "2025-06-01"]) == 0
    assert json.loads(capsys.readouterr().out)["truncated"] == 6
    with pytest.raises(SystemExit, match="not a recsketch repository"):
        main(["repo", "stats", str(tmp_path)])


def test_demo_answers_match_the_truth(tmp_path):
    from recsketch.demo import run_demo

    # 330 days: the network grows its module on October 1st (day 273) and is tested after it
    figures = run_demo(str(tmp_path / "demo"), days=330, d_sketch=8211, plot=True,
                       progress=False)
    assert figures["cat_days_agreement"] >= 0.95
    # 2. Morning or night: the sketches give the true majority (the README's answer); their
    # share of the signal is a proxy for the share of sightings (seeds 0-9 at this size: off
    # by -0.13 to +0.06, mean -0.03, sd 0.06); the bound 0.2 sits 2.8 sd below that mean
    # and 3.8 sd above it.
    est, true = figures["cat_morning_share_estimated"], figures["cat_morning_share_true"]
    assert (est > 0.5) == (true > 0.5)
    assert abs(est - true) < 0.2
    # 4. The typical lamp, by the joint read-out: it fits every module of the layout, so the
    # one matrix draw's bias is gone (seeds 0-5 at this size: max error 0.0011 to 0.0029; the
    # bound is 7x the largest); the truth's largest coordinate is about 0.67, so an all-zero
    # estimate fails. The one-module read keeps that bias, which shrinks as 1/sqrt(d) (seeds
    # 0-9 at d = 8211: max error 0.055 to 0.22, mean 0.13, sd 0.05: bound at 2.4 sd).
    assert figures["lamp_max_error"] < 0.02
    assert figures["lamp_max_error_matched"] < 0.25
    assert figures["search_recall_at_5"] >= 0.8
    assert figures["new_cluster_dog_share"] >= 0.9
    assert figures["cat_days_agreement_after_forgetting"] >= 0.9
    # the learned module, on days not used to learn it, read back from the stored sketches
    assert figures["learned_fires_with_dog"] >= 0.9
    assert figures["learned_fires_without_dog"] <= 0.05
    assert (tmp_path / "demo" / "cat_by_month.png").stat().st_size > 1000
    # running it again replaces its own folder, but never a foreign one
    run_demo(str(tmp_path / "demo"), days=30, d_sketch=1008, plot=False, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not made by the demo"):
        run_demo(str(tmp_path / "other"), days=5, d_sketch=1008, plot=False, progress=False)
