#!/usr/bin/env bash
# Configures and builds Lineage with ninja (and ccache when present) into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${LINEAGE_BUILD_TYPE:-Release}" >/dev/null
ninja -C build
