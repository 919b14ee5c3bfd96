#!/usr/bin/env bash
# The pruning study of issue 34: students of the embedded teacher started three ways — at random,
# by dropping layers, by pruning width (Minitron: `lineage prune`, activation importance) — each
# distilled with the demo's recipe and token budget (online forward KL, 400 steps × 8 rows × 256
# tokens), two seeds. Two sizes:
#   demo size (~0.68M parameters): random init (the demo's student) against width + depth pruning
#     (dim 96 = 3 heads of 32, 3 KV heads, hidden 288, 4 layers); no layer dropping reaches it (one
#     of the teacher's layers at full width is 0.79M with the 0.52M embedding);
#   ~2.1M parameters: the teacher's 2 most important layers (block importance) and its layers 0
#     and 3 (`--init-from-teacher every:3`) against width pruning (dim 128, 2 KV heads, hidden 640,
#     6 layers) and a random init of that shape.
# Step 0: perplexity of each start on the last 200 KB of the text (`lineage eval`, 20k tokens).
# End: the run's own validation perplexity and top-1 agreement (summary.json), and wall time.
# Results: runs/pruning/results.jsonl and a Markdown table on stdout.
# Usage: scripts/study_pruning.sh [SEEDS (default "1 2")] [STEPS (default 400)]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LINEAGE_BIN:-build/lineage}
teacher=models/lineage-kjv-5m.gguf
data=runs/data/kjv.txt
out=runs/pruning
seeds=${1:-"1 2"}
steps=${2:-400}
mkdir -p "$out" runs/data
[ -s "$data" ] || scripts/kjv_text.sh "$data"
tail -c 200000 "$data" >"$out/tail.txt"
: >"$out/results.jsonl"

recipe=(--teacher "$teacher" --data "$data" --seq-len 256 --mode online --loss forward_kl --temperature 1 --alpha 1
        --steps "$steps" --batch-size 8 --lr 3e-3 --min-lr 3e-4 --warmup 30 --eval-every 0 --eval-rows 32
        --checkpoint-every 0)

step0() {  # perplexity and agreement of a start on the held-back tail
  local with=(--teacher "$teacher")
  [ "$1" = "$teacher" ] && with=()
  "$bin" eval -q -m "$1" "${with[@]}" --text "$out/tail.txt" --text-limit 20000 --no-cost --json "$out/$2.eval.json" >/dev/null
  python3 - "$out/$2.eval.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["models"]["model"]["text"]
print(json.dumps({"ppl0": t["perplexity"], "agreement0": t.get("top1_agreement")}))
PY
}

run() {  # NAME SIZE START(random|file:F|every:N) SEED [student shape flags...]
  local name=$1 size=$2 start=$3 seed=$4
  shift 4
  local dir="$out/$name-s$seed" init=() p0="null"
  case "$start" in
    file:*) init=(--student "${start#file:}"); p0=$(step0 "${start#file:}" "$name" | python3 -c 'import json,sys;print(json.load(sys.stdin)["ppl0"])') ;;
    every:*) init=(--init-from-teacher "$start") ;;
    random) init=("$@") ;;
  esac
  rm -rf "$dir"
  local t0=$(date +%s)
  "$bin" distill "${recipe[@]}" --seed "$seed" "${init[@]}" --out "$dir" >"$dir.log" 2>&1
  local secs=$(( $(date +%s) - t0 ))
  python3 - "$dir/summary.json" "$name" "$size" "$seed" "$p0" "$secs" "$start" <<'PY' | tee -a "$out/results.jsonl"
import json, sys
s = json.load(open(sys.argv[1]))
st = s["student"]
print(json.dumps({"name": sys.argv[2], "size": sys.argv[3], "seed": int(sys.argv[4]), "start": sys.argv[7],
                  "parameters": st["parameters"], "ppl_step0_tail": None if sys.argv[5] == "null" else float(sys.argv[5]),
                  "ppl": st["perplexity"], "top1_agreement": st.get("top1_agreement"), "kl": st.get("kl"),
                  "teacher_ppl": s["teacher"]["perplexity"], "seconds": int(sys.argv[6])}))
PY
}

# The starts (pruning is deterministic: one file each, whatever the seed).
"$bin" prune --model "$teacher" --out "$out/width96.gguf" --calibration "$data" --dim 96 --heads 3 --kv-heads 3 --hidden 288 --layers 4
"$bin" prune --model "$teacher" --out "$out/depth2.gguf" --calibration "$data" --layers 2
"$bin" prune --model "$teacher" --out "$out/width128.gguf" --calibration "$data" --dim 128 --kv-heads 2 --hidden 640
tp0=$(step0 "$teacher" teacher)
echo "teacher on the tail: $tp0"

for seed in $seeds; do
  run random-demo demo random "$seed" --dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288
  run width-depth-demo demo "file:$out/width96.gguf" "$seed"
  run depth-2m 2m "file:$out/depth2.gguf" "$seed"
  run every3-2m 2m every:3 "$seed"
  run width-2m 2m "file:$out/width128.gguf" "$seed"
  run random-2m 2m random "$seed" --dim 128 --layers 6 --heads 4 --kv-heads 2 --hidden 640
done

python3 - "$out/results.jsonl" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.OrderedDict()
for r in rows: by.setdefault(r["name"], []).append(r)
print("| start | parameters | ppl at step 0 (tail) | validation ppl after | top-1 agreement | wall s |")
print("| --- | --- | --- | --- | --- | --- |")
for name, rs in by.items():
    f = lambda k, fmt: " / ".join(fmt.format(r[k]) if r[k] is not None else "-" for r in rs)
    print(f"| {name} | {rs[0]['parameters']:,} | {f('ppl_step0_tail', '{:.1f}')} | {f('ppl', '{:.2f}')} | "
          f"{f('top1_agreement', '{:.3f}')} | {f('seconds', '{}')} |")
print(f"teacher validation perplexity {rows[0]['teacher_ppl']:.3f}")
PY
