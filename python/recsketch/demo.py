"""``recsketch demo``: a year of memories of a room, answered from sketches alone.

A synthetic modular "room" network looks at a room once a day for a year. Its modules fire on
walls, a window, a lamp, a cat, a person and, from the summer on, a dog; animals and people are
built from edge detections (depth 3). Every day's communication graph is sketched, stored in a
repository folder, and the memory questions of the paper's introduction are answered from the
stored sketches alone, beside the ground truth the simulation knows. On October 1st the network
grows (paper §1.1, "Learning New Modules"): a module learned from the largest cluster of
sketches that emerged since the dog arrived, through which the rest of the year is sketched.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .graph import Graph
from .repository import Repository
from .sketcher import Sketcher

__all__ = ["run_demo", "simulate"]

START = dt.date(2025, 1, 1)
DOG_ARRIVES = 200           # day index from which a dog starts to visit
LEARN_DAY = 273             # day index (October 1st) at which the network grows a module
LEARNED = "learned-1"       # the name the demo gives the module it learns
LEARNED_WEIGHT = 0.08       # its object's weight: the room's other top-level weights sum to <= 0.91
TIMES = ("morning", "afternoon", "evening", "night")
CREATURE_FEATURES = ("size", "red", "green", "blue") + TIMES
LAMP_FEATURES = ("brightness", "warm", "cool", "height")
WEIGHTS = {"cat": 0.2, "dog": 0.2, "person": 0.1, "lamp": 0.2, "window": 0.05, "wall": 0.04}
_MARKER = "recsketch-demo.json"


@dataclass
class Day:
    date: dt.date
    graph: Graph
    present: Dict[str, int] = field(default_factory=dict)
    cat_time: Optional[str] = None
    lamp: Optional[np.ndarray] = None


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def simulate(days: int = 365, seed: int = 0) -> List[Day]:
    """The ground truth: one communication graph per day."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(days):
        g = Graph()
        day = Day(START + dt.timedelta(days=k), g)
        inputs = []

        def creature(name: str, size: float, colour: Tuple[float, float, float],
                     when: str) -> None:
            edges = [g.add("edge", _unit(rng.random(4) + 0.05)) for _ in range(2)]
            tod = np.array([t == when for t in TIMES], dtype=float)
            x = np.concatenate([[size], np.clip(np.array(colour) + rng.normal(0, 0.05, 3), 0, 1),
                                tod])
            inputs.append((g.add(name, _unit(x), [(e, 0.5) for e in edges]), WEIGHTS[name]))
            day.present[name] = 1

        if rng.random() < 0.6:
            day.cat_time = rng.choice(TIMES, p=[0.7, 0.05, 0.0, 0.25])
            creature("cat", 0.3, (0.8, 0.5, 0.2), day.cat_time)
        if k >= DOG_ARRIVES and rng.random() < 0.7:
            creature("dog", 0.6, (0.45, 0.3, 0.15), rng.choice(TIMES, p=[0.1, 0.5, 0.4, 0.0]))
        if rng.random() < 0.8:
            creature("person", 0.9, tuple(rng.random(3)), rng.choice(TIMES))
        if rng.random() < 0.5:
            day.lamp = _unit(np.array([rng.normal(0.7, 0.1), rng.normal(0.8, 0.05),
                                       rng.normal(0.2, 0.05), 0.5]).clip(0.01, None))
            inputs.append((g.add("lamp", day.lamp), WEIGHTS["lamp"]))
            day.present["lamp"] = 1
        light = 0.2 + 0.8 * rng.random()
        inputs.append((g.add("window", _unit(np.array([light, 1 - light + 0.1]))),
                       WEIGHTS["window"]))
        for wall in range(4):
            colour = np.array([0.9, 0.88, 0.8, 0.1 * wall + 0.1])
            inputs.append((g.add("wall", _unit(colour + rng.normal(0, 0.01, 4))),
                           WEIGHTS["wall"]))
        day.present["wall"] = 4
        g.set_output(inputs)
        out.append(day)
    return out


def _seconds(d: dt.date) -> float:
    return dt.datetime(d.year, d.month, d.day, 12, tzinfo=dt.timezone.utc).timestamp()


def _prepare(path: Path) -> None:
    if path.exists():
        if not (path / _MARKER).is_file():
            raise SystemExit(f"recsketch demo: {path} exists and was not made by the demo; "
                             "pass --path to choose another folder")
        shutil.rmtree(path)


def run_demo(path: str = "recsketch-demo", days: int = 365, d_sketch: int = 16371,
             seed: int = 0, plot: bool = True, progress: bool = True, grow: bool = True
             ) -> Dict[str, float]:
    """Simulate, sketch, store and answer; prints a report and returns the key figures.

    With ``grow`` (and more than ``LEARN_DAY`` days) the network learns a module from the
    largest cluster that emerged since the dog arrived, on October 1st, and the rest of the
    year is sketched with it."""
    t0 = time.perf_counter()
    folder = Path(path)
    _prepare(folder)
    world = simulate(days, seed)
    sk = Sketcher(d_sketch, seed=seed)
    repo = Repository.create(folder, sk)
    (folder / _MARKER).write_text(json.dumps({"days": days, "seed": seed}))
    print(f"A year in a room: {days} daily views, sketched at d = {sk.d_sketch} "
          f"({sk.family}, b = {sk.block_size}, q = {sk.density:.3f}) into {folder}/")

    batch = 32
    bar = _progress(days, progress, "sketching days")
    arrival = _seconds(START + dt.timedelta(days=DOG_ARRIVES))
    learn_at = LEARN_DAY if grow and days > LEARN_DAY else days
    clusters, new, learned = None, [], None
    for lo, hi in ((0, learn_at), (learn_at, days)):
        if lo == learn_at and lo < days:
            # grow the network: learn a module from the largest emerging cluster so far; the
            # repository adds its object to every later day on whose sketch it fires
            clusters = repo.clusters(min(8, len(repo)), seed=seed)
            new = clusters.new_since(arrival, fraction=0.95)
            if new:
                learned = repo.learn_module(LEARNED, clusters, new[0], since=arrival,
                                            weight=LEARNED_WEIGHT)
        for start in range(lo, hi, batch):
            part = world[start:min(start + batch, hi)]
            repo.add_graphs([w.graph for w in part],
                            timestamps=[_seconds(w.date) for w in part],
                            labels=[{"date": w.date.isoformat()} for w in part])
            bar.update(len(part))
    bar.close()
    t_sketch = time.perf_counter() - t0
    ids = repo.ids()
    figures: Dict[str, float] = {}

    print("\nQuestions answered from the stored sketches alone (truth from the simulation):\n")
    # 1. How often did the room contain a cat?
    _, cats = repo.count("cat", WEIGHTS["cat"])
    seen = np.round(cats) >= 1
    truth = np.array([w.present.get("cat", 0) for w in world], bool)
    figures["cat_days_estimated"] = float(seen.mean())
    figures["cat_days_true"] = float(truth.mean())
    figures["cat_days_agreement"] = float(np.mean(seen == truth))
    print(f"1. How often was the cat in the room?  sketches: {seen.mean():.1%} of days   "
          f"truth: {truth.mean():.1%}   (the two agree on {np.mean(seen == truth):.1%} of days)")

    # 2. Morning or night?
    mean_cat = repo.mean_attributes("cat")
    m, n = mean_cat[CREATURE_FEATURES.index("morning")], mean_cat[CREATURE_FEATURES.index("night")]
    times = [w.cat_time for w in world if w.cat_time in ("morning", "night")]
    true_share = times.count("morning") / max(len(times), 1)
    est_share = m / (m + n) if m + n > 0 else float("nan")
    figures["cat_morning_share_estimated"] = float(est_share)
    figures["cat_morning_share_true"] = float(true_share)
    print(f"2. Morning or night?  sketches: {'morning' if m > n else 'night'} "
          f"({est_share:.0%} of the morning+night signal)   truth: "
          f"{'morning' if true_share > 0.5 else 'night'} ({true_share:.0%} of those sightings)")

    # 3. The five days most like today.
    today = int(ids[-1])
    found, sims = repo.search(today, 5)
    stored = repo.get(ids)
    exact = stored @ stored[-1] / (np.linalg.norm(stored, axis=1) * np.linalg.norm(stored[-1]))
    exact[-1] = -np.inf
    best = ids[np.argsort(-exact)[:5]]
    figures["search_recall_at_5"] = float(np.isin(found, best).mean())
    print(f"3. The five days most like today ({world[-1].date}: {_objects(world[-1])}):")
    for i, s in zip(found, sims):
        print(f"     {world[int(i)].date}  cosine {s:.3f}  {_objects(world[int(i)])}")
    print(f"   the same five as an exact search over all {len(ids)} full sketches: "
          f"{np.isin(found, best).sum()} of 5")

    # 4. The typical lamp. A read of one module alone ("matched") keeps the bias of the one
    # matrix draw that every day shares (the walls and the window are in every sketch, so
    # their cross-talk does not average away over days); the joint read-out fits every
    # module of the layout at once and removes it (docs/joint.md).
    t_lamp = time.perf_counter()
    lamp = repo.mean_attributes("lamp", method="joint")
    t_lamp = time.perf_counter() - t_lamp
    lamp_matched = repo.mean_attributes("lamp")
    true_lamp = np.mean([w.lamp for w in world if w.lamp is not None], axis=0)
    figures["lamp_max_error"] = float(np.abs(lamp - true_lamp).max())
    figures["lamp_max_error_matched"] = float(np.abs(lamp_matched - true_lamp).max())
    print("4. What did the typical lamp look like?")
    print("     feature     " + "".join(f"{f:>11s}" for f in LAMP_FEATURES))
    print("     sketches    " + "".join(f"{v:11.3f}" for v in lamp)
          + f"   (joint read-out, {t_lamp:.1f} s)")
    print("     truth       " + "".join(f"{v:11.3f}" for v in true_lamp))
    print("     one module  " + "".join(f"{v:11.3f}" for v in lamp_matched)
          + "   (read alone: the shared matrix draw's bias)")

    # 5. A concept that emerged.
    if clusters is None:
        clusters = repo.clusters(min(8, len(ids)), seed=seed)
        new = clusters.new_since(arrival, fraction=0.95)
    last = world[learn_at - 1].date if learned is not None else world[-1].date
    print(f"5. Clusters that emerged after {START + dt.timedelta(days=DOG_ARRIVES)} "
          f"(k-means on the days to {last}, k = 8, 95% of members later):")
    dog_share = 0.0
    for c in new[:3]:
        members = clusters.members(c)
        first = dt.datetime.fromtimestamp(clusters.first_seen[c], dt.timezone.utc).date()
        share = np.mean([world[int(i)].present.get("dog", 0) for i in members])
        dog_share = max(dog_share, float(share))
        print(f"     from {first}: {members.size} days, {share:.0%} of them with a dog "
              f"(truth: no dog before {START + dt.timedelta(days=DOG_ARRIVES)})")
    if not new:
        print("     none found")
    figures["new_cluster_dog_share"] = dog_share

    # The module grown from that cluster, on the days after it was learned (none of them
    # was used to learn it): does it fire where the truth has a dog? Read from the sketches.
    if learned is not None:
        first = dt.datetime.fromtimestamp(clusters.first_seen[new[0]], dt.timezone.utc).date()
        later, fired = repo.count(LEARNED, learned.weight, since=_seconds(world[learn_at].date))
        fired = np.round(fired) >= 1
        dog = np.array([world[int(i)].present.get("dog", 0) for i in later], bool)
        on_dog = float(fired[dog].mean()) if dog.any() else float("nan")
        off_dog = float(fired[~dog].mean()) if (~dog).any() else float("nan")
        figures["learned_fires_with_dog"] = on_dog
        figures["learned_fires_without_dog"] = off_dog
        print(f"Learned module '{LEARNED}' from the cluster of {first}: it fires on "
              f"{on_dog:.1%} of the days with a dog and {off_dog:.1%} of the days without")

    # Forgetting: older memories keep a quarter of their sketch.
    before = repo.stats()["data_bytes"]
    now = _seconds(world[-1].date)
    repo.forget([(30 * 86400, 1.0), (float("inf"), 0.25)], now=now)
    _, cats_after = repo.count("cat", WEIGHTS["cat"])
    seen_after = np.round(cats_after) >= 1
    figures["cat_days_agreement_after_forgetting"] = float(np.mean(seen_after == truth))
    print(f"\nForgetting: sketches older than 30 days cut to 1/4 ({before / 2**20:.1f} MiB -> "
          f"{repo.stats()['data_bytes'] / 2**20:.1f} MiB); the cat question still agrees with "
          f"the truth on {np.mean(seen_after == truth):.1%} of days.")

    if plot:
        png = folder / "cat_by_month.png"
        _plot(world, seen, truth, png)
        print(f"Plot of question 1 by month: {png}")
    repo.close()
    figures["seconds"] = time.perf_counter() - t0
    print(f"Done in {figures['seconds']:.1f} s (sketching and storing: {t_sketch:.1f} s).")
    return figures


def _objects(day: Day) -> str:
    names = [n for n in ("cat", "dog", "person", "lamp") if day.present.get(n)]
    return ", ".join(names) if names else "(empty room)"


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _plot(world: List[Day], seen: np.ndarray, truth: np.ndarray, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = np.array([w.date.month for w in world])
    ms = np.unique(months)
    est = [seen[months == m].mean() for m in ms]
    tru = [truth[months == m].mean() for m in ms]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(ms, tru, "o-", label="truth", color="0.4")
    ax.plot(ms, est, "s--", label="from sketches", color="tab:orange")
    ax.set_xticks(ms)
    ax.set_xticklabels([dt.date(2025, int(m), 1).strftime("%b") for m in ms])
    ax.set_ylim(0, 1)
    ax.set_ylabel("days with the cat")
    ax.set_title("How often was the cat in the room?")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
