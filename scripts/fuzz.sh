#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang-14 with AddressSanitizer and UBSan) into build-fuzz/
# and runs each for SECONDS (default 60) on a corpus seeded from real files: a model Lineage trains
# and exports here (GGUF, HF folder with safetensors, config.json and tokenizer.json, llama2.c
# checkpoint and tokenizer, recipe.json, lineage.json), plus ../shared's stories260K tokenizer and
# GGUF when present.
# Prints one JSON line per target (executions, coverage, corpus, findings) and exits 1 on any
# crash, leak or timeout; the input that caused it is kept in build-fuzz/artifacts/.
#   Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (targets: gguf model safetensors
#                   tokenizer_json llama2c json_files jsonl recipe dataset; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf model safetensors tokenizer_json llama2c json_files jsonl recipe dataset spm_model)

command -v clang++-14 >/dev/null || { echo "fuzz.sh: clang++-14 is missing; run scripts/setup.sh" >&2; exit 1; }
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DLINEAGE_FUZZ=ON \
  -DLINEAGE_BUILD_TESTS=OFF -DLINEAGE_BUILD_BENCH=OFF >/dev/null
if ! ninja -C build-fuzz $(printf 'fuzz_%s ' "${targets[@]}") >build-fuzz/build.log 2>&1; then
  grep -E "error|FAILED" build-fuzz/build.log | head -20 >&2
  echo "fuzz.sh: building the fuzz targets failed (build-fuzz/build.log)" >&2
  exit 1
fi

# Seeds: real files of every format, made by the release binary (built if missing).
[ -x build/lineage ] || bash scripts/build.sh >/dev/null
seeds=build-fuzz/seeds
if [ ! -f "$seeds/hf/tokenizer.json" ]; then
  rm -rf "$seeds" && mkdir -p "$seeds"
  if [ -f ../shared/data/text/tinyshakespeare.txt ]; then head -c 30000 ../shared/data/text/tinyshakespeare.txt > "$seeds/text.txt"
  else bash scripts/kjv_text.sh "$seeds/kjv.txt" && head -c 30000 "$seeds/kjv.txt" > "$seeds/text.txt"; fi
  build/lineage train --data "$seeds/text.txt" --out "$seeds/run" --vocab-size 400 --dim 16 --layers 1 --heads 2 \
    --seq-len 32 --batch-size 2 --steps 2 --eval-every 0 --checkpoint-every 0 >/dev/null 2>&1
  build/lineage convert "$seeds/run/model.gguf" "$seeds/llama2c/model.bin" >/dev/null
  build/lineage convert "$seeds/run/model.gguf" "$seeds/hf" >/dev/null
fi
corpus() {  # corpus DIR PREFIX_BYTE FILE...: each seed file, after an optional selector byte
  local dir=$1 prefix=$2
  shift 2
  mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] || continue
    local name
    name="$dir/seed-$(sha1sum "$f" | cut -c1-12)-$prefix"
    if [ "$prefix" = "-" ]; then cp "$f" "$name"; else { printf "\\x$prefix"; cat "$f"; } > "$name"; fi
  done
}
run=$seeds/run
for t in "${targets[@]}"; do
  c=build-fuzz/corpus/$t
  case $t in
    gguf) corpus "$c" - "$run/model.gguf" ../shared/tools/llama.cpp/stories260K.gguf ;;
    model) corpus "$c" 00 "$run/model.gguf"; corpus "$c" 01 "$seeds/llama2c/model.bin" ;;
    safetensors) corpus "$c" - "$seeds/hf/model.safetensors" ;;
    tokenizer_json) corpus "$c" - "$seeds/hf/tokenizer.json" ;;
    spm_model) corpus "$c" - "$run/tokenizer.model" ;;
    llama2c) corpus "$c" - "$seeds"/llama2c/tok*.bin ../shared/models/stories260K/tok512.bin ;;
    json_files) corpus "$c" 00 "$run/recipe.json" "$run/lineage.json" "$seeds/hf/tokenizer_config.json"
                corpus "$c" 01 "$seeds/hf/config.json" ;;
    jsonl) printf '{"time": "2026-01-01T00:00:00Z", "key": "k1", "client": "10.0.0.1", "endpoint": "/v1/completions", "status": 200, "prompt_tokens": 3, "completion_tokens": 5, "body": {"prompt": "hi", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}\n' > "$seeds/requests.jsonl"
           # a chat turn with a system prompt, content parts, a tool call and its result, and the answer digests
           printf '{"time": 1767225600000, "key": "k2", "body": {"messages": [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": [{"type": "text", "text": "Solve 2+2: show your work."}]}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\\"x\\": 4}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "4"}, {"role": "assistant", "content": "It is 4."}, {"role": "user", "content": "Why?"}], "logprobs": true, "top_logprobs": 5, "n": 2, "echo": false, "temperature": 0.7}, "response_sha256": "%s,%s"}\n' \
             "$(printf a | sha256sum | cut -c1-64)" "$(printf b | sha256sum | cut -c1-64)" >> "$seeds/requests.jsonl"
           corpus "$c" - "$seeds/requests.jsonl" ;;
    recipe) printf '{"loss": "jsd", "beta": 0.5, "mode": "on_policy", "lambda": 0.5, "steps": "400", "dim": 96, "layers": 4,
  "heads": 4, "kv_heads": 2, "data": ["a.txt", "b.jsonl"], "temperature": 2, "top-k": 20, "gen-top-p": 0.9, "bf16": "yes"}\n' \
              > "$seeds/distill_recipe.json"
            corpus "$c" - "$run/recipe.json" "$seeds/distill_recipe.json" ;;
    dataset) printf '%s\n' '{"prompt": "Q: 2+2?", "completion": " 4"}' '{"text": "the theatre"}' \
               '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}' \
               > "$seeds/data.jsonl"
             head -c 4000 "$seeds/text.txt" > "$seeds/data.txt"
             corpus "$c" 00 "$seeds/data.jsonl"; corpus "$c" 01 "$seeds/data.txt" ;;
    *) echo "fuzz.sh: unknown target '$t'" >&2; exit 1 ;;
  esac
done

# Inputs that found defects before stay in the corpus (fuzz/regressions/TARGET/).
for t in "${targets[@]}"; do
  [ -d "fuzz/regressions/$t" ] && cp fuzz/regressions/"$t"/* "build-fuzz/corpus/$t/" 2>/dev/null || true
done

failed=0
mkdir -p build-fuzz/artifacts build-fuzz/logs
for t in "${targets[@]}"; do
  log=build-fuzz/logs/$t.log
  set +e
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/fuzz/fuzz_$t" "build-fuzz/corpus/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 \
    -max_len=1048576 -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t-" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  corp=$(ls "build-fuzz/corpus/$t" | wc -l)
  findings=$(ls build-fuzz/artifacts 2>/dev/null | grep -c "^$t-" || true)
  printf '{"target":"fuzz_%s","seconds":%s,"executions":%s,"coverage_edges":%s,"features":%s,"corpus":%s,"findings":%s,"exit":%s}\n' \
    "$t" "$secs" "${execs:-0}" "${cov:-0}" "${ft:-0}" "$corp" "$findings" "$rc"
  if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ]; then
    failed=1
    grep -E "ERROR|SUMMARY|runtime error|Test unit written|timeout" "$log" | head -5 >&2
  fi
done
exit $failed
