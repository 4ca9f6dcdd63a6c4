#!/usr/bin/env bash
# Sanitizer job: builds the native core with AddressSanitizer and UndefinedBehaviorSanitizer in
# its own virtual environment and build directory, then runs the tests that drive the native
# entry points under it. Any sanitizer report fails the job (UBSan does not recover, ASan
# aborts on its first error). Called by .ci/run; runs on its own as `bash .ci/sanitize.sh`.
#
# Environment: SANITIZE_DIR (default .sanitize) holds the venv and the build; SANITIZE_TESTS
# overrides the test selection (pytest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

root=${SANITIZE_DIR:-.sanitize}
mkdir -p "$root"
root=$(cd "$root" && pwd)
start=$(date +%s)

python3 -m venv "$root/venv"
. "$root/venv/bin/activate"
pip install -q scikit-build-core pybind11 numpy scipy pytest hypothesis

# g++'s "undefined" group leaves out float-cast-overflow (a double cast to an integer type it
# does not fit, e.g. the density table of BlockSparseFamily): ask for it by name.
san="address,undefined,float-cast-overflow"
flags="-fsanitize=$san -fno-sanitize-recover=undefined,float-cast-overflow -fno-omit-frame-pointer"
# Only the core's run-time dependencies the selected tests import; no build isolation, so the
# sanitizer flags reach CMake unchanged. O1 keeps the build and the run quick.
pip install -q --no-deps --no-build-isolation . \
  -Cbuild-dir="$root/build" \
  -Ccmake.build-type=RelWithDebInfo \
  -Ccmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -Ccmake.define.CMAKE_CXX_FLAGS="$flags" \
  -Ccmake.define.CMAKE_MODULE_LINKER_FLAGS="-fsanitize=$san" \
  -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=$san"
echo "== sanitizer build: $(( $(date +%s) - start )) s"

# Python itself is not instrumented: the ASan runtime must be loaded first. Python's own
# allocations are not freed at exit by design, so leak checking is off.
asan=$(g++ -print-file-name=libasan.so)
ubsan=$(g++ -print-file-name=libubsan.so)
tests=${SANITIZE_TESTS:-"tests/test_native_entry_points.py tests/test_fuzz.py tests/test_kernels.py
  tests/test_block_sparse_structure.py tests/test_sketch.py tests/test_walk_cache.py
  tests/test_errors.py tests/test_graph.py"}
# Run from outside the source tree so that the sanitized install is the one imported.
cd "$root"
LD_PRELOAD="$asan $ubsan" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  python -m pytest -q -p no:cacheprovider -c "$OLDPWD/pyproject.toml" --rootdir "$OLDPWD" \
    $(for t in $tests; do echo "$OLDPWD/$t"; done)
echo "== sanitizer job: clean, $(( $(date +%s) - start )) s"
