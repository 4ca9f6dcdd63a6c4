"""recsketch command line: the demo, sketching graph files, and sketch repositories."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from .info import format_info

_DAY = 86400.0


def _policy(text: str):
    """``30d:1,365d:0.25,inf:0.0625`` -> [(seconds, fraction), ...]."""
    tiers = []
    for part in text.split(","):
        try:
            age, frac = part.split(":")
            age = age.strip().lower()
            seconds = math.inf if age == "inf" else (
                float(age[:-1]) * _DAY if age.endswith("d") else float(age))
            tiers.append((seconds, float(frac)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad policy tier {part!r}: use AGE:FRACTION with "
                                             "AGE like 30d, 86400 or inf") from exc
    return tiers


def _sketcher(args: argparse.Namespace):
    from .sketcher import Sketcher

    if args.config:
        return Sketcher.from_json(Path(args.config).read_text())
    return Sketcher(args.d, family=args.family, seed=args.seed)


def _cmd_sketch(args: argparse.Namespace) -> int:
    from .graph import Graph

    sk = _sketcher(args)
    graphs = []
    for name in args.graphs:
        try:
            data = json.loads(Path(name).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"recsketch sketch: cannot read {name}: {exc}")
        try:
            graphs.append(Graph.from_dict(data, normalize=args.normalize))
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"recsketch sketch: {name}: {exc}")
    try:
        s = sk.sketch_many(graphs, num_threads=args.threads)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"recsketch sketch: {exc}")
    out = Path(args.output)
    np.save(out, s if len(graphs) > 1 else s[0])
    config = out.with_suffix(".sketcher.json")
    config.write_text(sk.to_json())
    print(f"wrote {out} {tuple(s.shape) if len(graphs) > 1 else (s.shape[1],)} and {config}")
    return 0


def _cmd_repo(args: argparse.Namespace) -> int:
    from .repository import Repository

    try:
        if args.repo_command == "create":
            Repository.create(args.path, _sketcher(args), dtype=args.dtype).close()
            print(f"created {args.path}")
            return 0
        with Repository.open(args.path) as repo:
            if args.repo_command == "add":
                s = np.load(args.sketches)
                labels = json.loads(args.labels) if args.labels else None
                ids = repo.add(s, timestamps=args.time, labels=labels)
                print(f"added {ids.size} sketches (ids {ids.min()}..{ids.max()}); "
                      f"{len(repo)} stored")
            elif args.repo_command == "search":
                query = args.id if args.id is not None else np.load(args.query)
                ids, sims = repo.search(query, args.k)
                for i, c in zip(ids, sims):
                    print(f"{i}\t{c:.4f}")
            elif args.repo_command == "stats":
                print(json.dumps(repo.stats(), indent=2))
            elif args.repo_command == "forget":
                print(json.dumps(repo.forget(args.policy, now=args.now), indent=2))
    except (TypeError, ValueError, OSError) as exc:
        raise SystemExit(f"recsketch repo {args.repo_command}: {exc}")
    return 0


def _add_sketcher_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="Sketcher JSON (from Sketcher.to_json); overrides --d etc.")
    p.add_argument("--d", type=int, default=16371, help="d_sketch (default 16371)")
    p.add_argument("--family", default="block_sparse", choices=["block_sparse", "orthogonal"])
    p.add_argument("--seed", type=int, default=0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="recsketch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build: version, OpenMP, threads, families")

    demo = sub.add_parser("demo", help="a year of memories of a room, answered from sketches")
    demo.add_argument("--path", default="recsketch-demo",
                      help="repository folder to (re)create (default ./recsketch-demo)")
    demo.add_argument("--days", type=int, default=365)
    demo.add_argument("--d", type=int, default=16371, help="d_sketch (default 16371)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    sk = sub.add_parser("sketch", help="sketch graph JSON files into a .npy file")
    sk.add_argument("graphs", nargs="+", help="graph JSON files (schema in the README)")
    sk.add_argument("-o", "--output", required=True, help="output .npy (one row per graph)")
    sk.add_argument("--normalize", action="store_true", help="scale attributes to unit norm")
    sk.add_argument("--threads", type=int, default=None)
    _add_sketcher_options(sk)

    repo = sub.add_parser("repo", help="sketch repositories").add_subparsers(
        dest="repo_command", required=True)
    create = repo.add_parser("create", help="create an empty repository")
    create.add_argument("path")
    create.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    _add_sketcher_options(create)
    add = repo.add_parser("add", help="add the rows of a .npy file as one atomic batch")
    add.add_argument("path")
    add.add_argument("sketches", help=".npy file, (d,) or (n, d)")
    add.add_argument("--time", default=None, help="ISO-8601 time of the batch (default now)")
    add.add_argument("--labels", default=None, help="JSON labels for every sketch of the batch")
    search = repo.add_parser("search", help="the stored sketches most similar to a query")
    search.add_argument("path")
    group = search.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", type=int, help="a stored sketch's id")
    group.add_argument("--query", help="a .npy sketch")
    search.add_argument("-k", type=int, default=10)
    stats = repo.add_parser("stats", help="counts, dates, kept lengths, disk use")
    stats.add_argument("path")
    forget = repo.add_parser("forget", help="truncate older sketches in tiers, reclaim space")
    forget.add_argument("path")
    forget.add_argument("--policy", type=_policy, default=None,
                        help="AGE:FRACTION tiers, e.g. 30d:1,365d:0.25,inf:0.0625 (default)")
    forget.add_argument("--now", default=None, help="ISO-8601 reference time (default now)")

    args = parser.parse_args(argv)
    if args.command == "info":
        print(format_info())
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args.path, days=args.days, d_sketch=args.d, seed=args.seed,
                 plot=not args.no_plot, progress=not args.quiet)
    elif args.command == "sketch":
        return _cmd_sketch(args)
    elif args.command == "repo":
        return _cmd_repo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
