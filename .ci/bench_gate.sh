#!/usr/bin/env bash
# CI, benchmark regression gate: run the short benchmark subset once (about 1-2 minutes) and
# fail when a ratio to its in-run baseline falls beyond the tolerance stored in
# bench/baseline.json. Needs an environment with recsketch and its [test] extra installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/compare.py check
