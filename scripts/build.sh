#!/usr/bin/env bash
# Configures and builds Lineage with ninja (and ccache when present) into build/.
#   scripts/build.sh            everything: the lineage binary, the tests and the benchmarks
#   scripts/build.sh lineage    only the lineage binary (what the demo runs: a quicker first run)
# Any arguments are ninja targets.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${LINEAGE_BUILD_TYPE:-Release}" >/dev/null
if [ "$#" -gt 0 ]; then
  targets=()
  for t in "$@"; do [ "$t" = lineage ] && targets+=(lineage_cli) || targets+=("$t"); done
  ninja -C build "${targets[@]}"
else
  ninja -C build
fi
