#!/usr/bin/env bash
# The unit tests of everything that reads untrusted bytes (core, text, io, model) and of the losses,
# built with GCC's AddressSanitizer and UBSan (-DLINEAGE_SANITIZE=ON -DLINEAGE_SANITIZED_UNITS=ON)
# into build-asan/ and run there; any sanitizer report fails the run. Tests that run the CLI use the
# release build (build/lineage), which is built first when missing.
#   Usage: scripts/sanitize.sh [GTEST_FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/lineage ] || bash scripts/build.sh >/dev/null
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLINEAGE_SANITIZE=ON -DLINEAGE_SANITIZED_UNITS=ON \
  -DLINEAGE_BUILD_BENCH=OFF >/dev/null
if ! ninja -C build-asan >build-asan/build.log 2>&1; then
  grep -E "error|FAILED" build-asan/build.log | head -20 >&2
  echo "sanitize.sh: the sanitized build failed (build-asan/build.log)" >&2
  exit 1
fi
# detect_leaks: LeakSanitizer too; libtorch's and ICU's process-lifetime singletons stay reachable.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$(date +%s)
(cd build-asan && ctest --output-on-failure -j "$(nproc)" ${1:+-R "$1"})
echo "sanitize.sh: sanitized unit tests passed in $(( $(date +%s) - start )) s"
