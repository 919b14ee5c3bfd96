#!/usr/bin/env bash
# README command 1: install, build, and run the main job on the default model.
# Until `lineage distill` and the embedded teacher land, the main job is `lineage generate` on
# stories260K from ../shared (or the model given as $1, with its tokenizer as $2): greedy text,
# then the same model converted to GGUF and to a Hugging Face folder, generating again from each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh

model="${1:-../shared/models/stories260K/stories260K.bin}"
tokenizer="${2:-}"
if [ -z "${2:-}" ] && [ "$#" -eq 0 ]; then tokenizer="../shared/models/stories260K/tok512.bin"; fi
if [ ! -e "$model" ]; then
  echo "demo: no model at '$model'. Lineage ships no model yet; pass one: scripts/demo.sh MODEL [TOKENIZER]" >&2
  exit 2
fi
tok_args=()
[ -n "$tokenizer" ] && tok_args=(--tokenizer "$tokenizer")

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
./build/lineage info "$model" "${tok_args[@]}"
echo "--- greedy, $model"
./build/lineage generate --model "$model" "${tok_args[@]}" --prompt "Once upon a time" --temperature 0 --max-tokens 120
./build/lineage convert "$model" "$out/model.gguf" "${tok_args[@]}"
./build/lineage convert "$model" "$out/hf" "${tok_args[@]}"
echo "--- greedy, converted to GGUF"
./build/lineage generate --model "$out/model.gguf" --prompt "Once upon a time" --temperature 0 --max-tokens 120
echo "--- sampled (temperature 0.8, top-p 0.95, seed 1), converted to HF"
./build/lineage generate --model "$out/hf" --prompt "Once upon a time" --temperature 0.8 --top-p 0.95 --seed 1 --max-tokens 120
