#!/usr/bin/env bash
# Unit tests built with GCC's AddressSanitizer and UBSan (-DLINEAGE_SANITIZE=ON); any sanitizer
# report fails the run. Two scopes (CMakeLists.txt, LINEAGE_SANITIZED_UNITS):
#   (default)  the readers that need no libtorch — core, text, GGUF metadata, model config,
#              recipes, data, request logs — and the core and text unit tests, in
#              build-asan-readers/ (a few minutes; CI runs it after the tests)
#   --full     also the tensor readers, the model, the teacher cache and the losses, with the io
#              unit tests and the losses' float64 reference test, in build-asan/ (~20 min to build)
# Tests that run the CLI use the release build (build/lineage), built first when missing.
#   Usage: scripts/sanitize.sh [--full] [TEST_REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
scope=readers dir=build-asan-readers
if [ "${1:-}" = --full ]; then scope=full dir=build-asan; shift; fi
[ -x build/lineage ] || bash scripts/build.sh >/dev/null
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLINEAGE_SANITIZE=ON -DLINEAGE_SANITIZED_UNITS=$scope \
  -DLINEAGE_BUILD_BENCH=OFF >/dev/null
start=$(date +%s)
if ! ninja -C "$dir" >"$dir/build.log" 2>&1; then
  grep -E "error|FAILED" "$dir/build.log" | head -20 >&2
  echo "sanitize.sh: the sanitized build failed ($dir/build.log)" >&2
  exit 1
fi
built=$(date +%s)
# detect_leaks: LeakSanitizer too (process-lifetime singletons stay reachable and are not reported).
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd "$dir" && ctest --output-on-failure -j "$(nproc)" ${1:+-R "$1"})
echo "sanitize.sh: $scope scope built in $(( built - start )) s, its unit tests passed under ASan and UBSan in $(( $(date +%s) - built )) s"
