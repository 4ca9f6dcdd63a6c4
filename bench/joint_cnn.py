"""method="joint" on graphs captured from a real CNN (issue 15's third motivating case).

A small CNN (conv 1->8, conv 8->16 + 2x2 max-pool, linear 256->32, linear 32->10; ReLU) is
trained on scikit-learn's bundled handwritten digits (8 x 8; the first 1,340 images,
20 epochs of Adam); the other 457 digits are captured with ``recsketch.torch.capture`` as units
(``objects="units"``, ``top_k`` per layer, gradient x input weights): modules ``fc2[c]``
(depth 2), ``fc1[u]`` (depth 3), ``conv2[c]`` (depth 4), ``conv1[c]`` (depth 5). A room is
``Graph.combine`` of 1-8 captured digits (equal weights). Per room and method: the weighted
mass (sum of path weights, ``Sketcher.mass``) of every depth-3 unit module in the room, and of
every depth-2 (class) module, against the truth computed from the graph.

Usage: python bench/joint_cnn.py [n_rooms] [d] [family] [top_k]
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

import recsketch as rs

sys.path.insert(0, os.path.dirname(__file__))
from joint_accuracy import all_paths  # noqa: E402  (every path of a graph, with its weight)


def train_cnn(seed=0, epochs=20):
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)   # a tiny network: threads only contend on a shared machine
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(digits.target)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(256, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, v):
            v = torch.relu(self.conv1(v))
            v = self.pool(torch.relu(self.conv2(v)))
            v = torch.relu(self.fc1(v.flatten(1)))
            return self.fc2(v)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    train = slice(0, 1340)
    for _ in range(epochs):
        perm = torch.randperm(1340)
        for i in range(0, 1340, 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[train][idx]), y[train][idx])
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(x[1340:]).argmax(1) == y[1340:]).float().mean())
    return net, x[1340:], y[1340:].numpy(), acc


def main(n_rooms=12, d=4096, family="orthogonal", top_k=8):
    from recsketch.torch import capture

    t0 = time.time()
    net, x, y, acc = train_cnn()
    print(f"trained ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    cap = capture(net, x, layers=["conv1", "conv2", "fc1", "fc2"], objects="units",
                  weights="attribution", top_k=top_k, d_sketch=d)
    print(f"CNN test accuracy {acc:.3f} on 457 digits; capture {time.time() - t0:.0f} s",
          file=sys.stderr, flush=True)
    rng = np.random.default_rng(0)
    rooms = []
    for _ in range(n_rooms):
        k = int(rng.integers(1, 9))
        rooms.append(rs.Graph.combine([cap[int(i)] for i in rng.choice(len(cap), k,
                                                                       replace=False)]))
    # a cache that keeps the design and every probe (cache_bytes_fast): speed only, the
    # default cache gives the same answers, rebuilding the design per module
    sk = rs.Sketcher(d, family=family, seed=0, query_cache_bytes=2 << 30)
    sketches = sk.sketch_many(rooms)
    dims = {m: i.attribute_dim for m, i in sk.modules.items()}
    print(f"{len(rooms)} rooms, {min(map(len, rooms))}-{max(map(len, rooms))} objects "
          f"(median {int(np.median([len(r) for r in rooms]))}); {len(sk.modules)} modules "
          f"registered (attribute dims {min(dims.values())}-{max(dims.values())}, "
          f"sum of dim + 1: {sum(v + 1 for v in dims.values())})", file=sys.stderr, flush=True)
    plans = {}
    for f in (1, 2, 8):
        try:
            plans[f] = sk.decoder.joint_plan(fan_in=f)
        except ValueError as err:   # pragma: no cover - joint_plan does not refuse
            plans[f] = str(err)
    err = {}
    refusals = {}
    for r, (g, s) in enumerate(zip(rooms, sketches)):
        truth = {}
        for h, _, w in all_paths(g):
            truth[h.module] = truth.get(h.module, 0.0) + w
        for name, m, kw in (("paper", "paper", {}), ("matched", "matched", {}),
                            ("joint", "joint", {})):
            for module, t in truth.items():
                depth = sk.modules[module].depth
                if depth not in (2, 3):
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        est = sk.mass(s, module, method=m, **kw)
                except ValueError as exc:
                    refusals[name] = str(exc).split(":")[0] + ": " + str(exc).split(":")[1][:200]
                    break
                err.setdefault((depth, name), []).append((abs(est - t), t))
        print(f"  room {r}: {len(g)} objects ({time.time() - t0:.0f} s)", file=sys.stderr,
              flush=True)
    print(f"\nCNN on digits (test accuracy {acc:.3f}), {family} d = {d}, top_k = {top_k}, "
          f"{len(rooms)} rooms of 1-8 digits ({min(map(len, rooms))}-{max(map(len, rooms))} "
          f"objects), {len(sk.modules)} registered modules; {time.time() - t0:.0f} s, "
          f"load {os.getloadavg()[0]:.1f}\n")
    for f, p in plans.items():
        print(f"joint plan at fan_in = {f}: {p}")
    for name, msg in refusals.items():
        print(f"{name} refused: {msg}")
    print("\n| depth | modules x rooms | true mass: median | |error| median [q1, q3]: paper "
          "| matched | joint |")
    print("|---|---|---|---|---|---|")
    for depth in (2, 3):
        rows = {n: np.array(err.get((depth, n), [])) for n in ("paper", "matched", "joint")}
        t = rows["paper"][:, 1]
        cells = []
        for n in ("paper", "matched", "joint"):
            if rows[n].size == 0:
                cells.append("refused")
                continue
            a, b, c = np.percentile(rows[n][:, 0], [25, 50, 75])
            cells.append(f"{b:.3g} [{a:.3g}, {c:.3g}]")
        print(f"| {depth} | {len(t)} | {np.median(t):.3g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]) if a else 12, int(a[1]) if len(a) > 1 else 4096,
         a[2] if len(a) > 2 else "orthogonal", int(a[3]) if len(a) > 3 else 8)
