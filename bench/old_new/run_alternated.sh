#!/bin/bash
# Old/new comparison in one sitting, alternating the two builds so that both see the same load
# (how session 7's same-sitting ratios in README.md Performance and docs/kernels.md were taken).
#   OLD_PKG=DIR bash bench/old_new/run_alternated.sh
# OLD_PKG: a directory with the previous build's `recsketch` package (see _overlay.py); the new
# code is whatever `recsketch` this environment imports. Run from the repository's root, on a
# machine as quiet as you can get; the load average is printed with every step.
set -eu
: "${OLD_PKG:?set OLD_PKG to a directory holding a previous build of recsketch}"
H=$(dirname "$0")
step() { echo; echo "=== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; }
step "CNN all layers, block_sparse 16k: old, new, twice"
for _ in 1 2; do
  python "$H/torch_cmp.py" old 16384
  OLD_PKG= python "$H/torch_cmp.py" new 16384
done
step "first product against warm, one thread (old, new)"
for d in 4096 16384; do
  python "$H/first_product.py" $d 9 1,4,8
  OLD_PKG= python "$H/first_product.py" $d 9 1,4,8
done
step "4-object chain, one thread (old, new, three times)"
for _ in 1 2 3; do
  python "$H/chain.py" 4096 300 1
  OLD_PKG= python "$H/chain.py" 4096 300 1
done
step "done"
