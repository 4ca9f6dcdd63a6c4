"""How often a writer killed by SIGKILL leaves a torn tail: bytes appended to the data file past
the committed end (the batch it was writing when killed). The next writer cuts them; readers
never see them. This measures the README's "about N kills in 10 leave a torn tail".

Each trial starts a writer that appends batches of 1-199 sketches (d = 4096, float32) as fast as
it can, waits until it has committed a few, sleeps a random 0-50 ms, kills it with SIGKILL, and
compares the data file's size with the committed end read from the metadata (with sqlite3,
independently of recsketch). The next trial's writer repairs the tail first.

    python bench/torn_tail.py [--kills 100] [--seed 0]

Prints the count, the fraction and a 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import recsketch as rs
from recsketch.repository import Repository

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from recsketch.repository import Repository
    repo = Repository.open(sys.argv[1])
    d = repo.sketcher.d_sketch
    rng = np.random.default_rng(int(sys.argv[2]))
    while True:
        n = int(rng.integers(1, 200))
        repo.add(np.ones((n, d), dtype=np.float32))
        print(n, flush=True)
""")


def committed(path: Path) -> tuple:
    db = sqlite3.connect(str(path / "repo.sqlite"))
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    data = path / f"data.{meta['generation']}.bin"
    return data.stat().st_size, int(meta["data_end"]) * 4


def wilson(k: int, n: int, z: float = 1.96) -> tuple:
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mid - half, mid + half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    torn = 0
    with tempfile.TemporaryDirectory(prefix="recsketch-torn-") as tmp:
        path = Path(tmp) / "repo"
        Repository.create(path, rs.Sketcher(4096, family="orthogonal")).close()
        for trial in range(args.kills):
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(trial)],
                                    stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(3):
                proc.stdout.readline()  # a few committed batches: the writer is in its loop
            time.sleep(float(rng.uniform(0.0, 0.05)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            size, end = committed(path)
            torn += size > end
            if size < end:
                raise SystemExit(f"trial {trial}: data file shorter than the committed end")
            if (trial + 1) % 10 == 0:
                print(f"{trial + 1} kills: {torn} torn tails", flush=True)
            if (trial + 1) % 25 == 0:  # keep the file small: the next writer appends to it
                with Repository.open(path) as repo:
                    repo.delete(repo.ids())
                    repo.compact()
    lo, hi = wilson(torn, args.kills)
    print(f"{torn} of {args.kills} kills left a torn tail ({torn / args.kills:.0%}; "
          f"95% interval {lo:.0%}-{hi:.0%})")


if __name__ == "__main__":
    main()
