"""Command line: ``recsketch info`` (also ``python -m recsketch info``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .info import format_info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="recsketch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build: version, OpenMP, threads, families")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(format_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
