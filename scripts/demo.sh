#!/usr/bin/env bash
# README command 1: install, build, and run the main job on the embedded default — distill the
# teacher that ships in models/ (5.2M parameters, trained by `lineage train` on the King James
# Bible) into a student with about 1/8 of its parameters, export it (GGUF + HF folder), and print
# the side-by-side table. Everything it reads is in the repository or in a Debian package that
# scripts/setup.sh installs (bible-kjv). Extra arguments go to `lineage distill` (e.g. --steps 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh lineage   # only the binary the demo runs; tests and benchmarks build in test.sh and bench.sh

teacher=models/lineage-kjv-5m.gguf
data=runs/data/kjv.txt
mkdir -p runs/data
[ -s "$data" ] || scripts/kjv_text.sh "$data"
want=$(python3 -c 'import json;print(json.load(open("models/lineage-kjv-5m.lineage.json"))["data"]["files"][0]["sha256"])' 2>/dev/null || true)
got=$(sha256sum "$data" | cut -d' ' -f1)
if [ -n "$want" ] && [ "$want" != "$got" ]; then
  echo "demo: note: $data (sha256 $got) differs from the text the teacher was trained on ($want)" >&2
fi

out="runs/demo-$(date +%Y%m%d-%H%M%S)"
echo "=== lineage distill: $teacher -> a 1/8-size student, online forward KL, run directory $out"
start=$(date +%s)
./build/lineage distill --teacher "$teacher" --data "$data" --out "$out" \
  --dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288 --seq-len 256 \
  --mode online --loss forward_kl --temperature 1 --alpha 1 \
  --steps 400 --batch-size 8 --lr 3e-3 --min-lr 3e-4 --warmup 30 \
  --eval-every 100 --eval-rows 32 --checkpoint-every 100 "$@"
echo "distillation wall time: $(( $(date +%s) - start )) s"

prompt="And the LORD said unto Moses,"
echo "=== teacher, greedy:"
./build/lineage generate -q --model "$teacher" --prompt "$prompt" --temperature 0 --max-tokens 40
echo "=== student, greedy:"
./build/lineage generate -q --model "$out/student.gguf" --prompt "$prompt" --temperature 0 --max-tokens 40
echo "run record: $out/lineage.json   metrics: $out/metrics.jsonl   resume a stopped run: build/lineage distill --resume $out"
