#!/usr/bin/env bash
# Runs every benchmark in build/bench; each prints one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
for b in build/bench/bench_*; do "$b" "$@"; done
