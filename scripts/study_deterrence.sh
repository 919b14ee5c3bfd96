#!/usr/bin/env bash
# What deterrence costs the teacher and what it does to a distiller, on the embedded teacher
# (issue 31): antidistillation sampling (Savani et al. 2025) and antidistillation fingerprints
# (Xu et al. 2026) over a grid of λ, beside two baselines on the same axes — plain sampling at
# temperatures 1, 1.25, 1.5, and the red/green watermark (Kirchenbauer et al. 2023) at δ 1, 2, 4.
#
# For each configuration `lineage serve` runs with its flags and is asked, through the HTTP API:
#   - N completions (--samples, --gen-tokens each, temperature 1 unless the configuration says
#     otherwise, seed = prompt number) of prompts taken from verses the students never see;
#   - teacher-forced top-1 agreement with the undefended teacher's greedy answers to 64 other
#     prompts (teacher utility: does the served distribution still prefer what the teacher would say);
# then, off the server:
#   - the perplexity of those completions under an independent reference model trained on the text
#     alone (teacher utility: are the samples still good text);
#   - a student (the distiller's: dim 96, 4 layers) trained from scratch by seq-KD (cross-entropy on
#     the completions), its validation perplexity and its top-1 agreement with the teacher on
#     verses nobody trained on — and a second one on the first --small completions only;
#   - lineage trace of each student with the fingerprint key and with the watermark key (the
#     teacher as reference), and lineage detect of the completions;
#   - two pre-trained students fine-tuned on the completions (--warm-steps, the papers' setting:
#     their distillers fine-tune pre-trained models): proxy "a" itself (the matched case the
#     first-order argument is about) and the reference (pre-trained on the text alone, another
#     architecture than either proxy).
# Two proxies: "a", the distiller's architecture, and "b", another one (dim 64, 6 layers).
#
#   scripts/study_deterrence.sh [--out DIR] [--samples N] [--small N] [--gen-tokens N] [--steps N]
#                               [--warm-steps N] [--only "name ..."]
#
# λ is per unit of the proxy's normalised gradient (see README): 0.05-0.5 spans "barely moves the
# teacher's greedy answers" to "about the red/green watermark's δ = 2" on the embedded teacher.
#
# Each configuration writes DIR/NAME/summary.json; one that exists is not run again (a stopped study
# resumes). Results: DIR/results.jsonl, DIR/table.md, and `lineage report --deterrence
# DIR/results.jsonl` draws the Pareto plots.
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/deterrence samples=1024 small=256 gen_tokens=128 steps=300 warm_steps=100 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --small) small=$2; shift 2 ;;
    --gen-tokens) gen_tokens=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warm-steps) warm_steps=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n 2,38p "$0"; exit 0 ;;
    *) echo "study_deterrence: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

lineage=${LINEAGE_BIN:-build/lineage}  # LINEAGE_BIN: a copy of the binary, to keep building while the study runs
[ -x "$lineage" ] || bash scripts/build.sh lineage
teacher=models/lineage-kjv-5m.gguf
data=runs/data/kjv.txt
mkdir -p runs/data "$out/work"
[ -s "$data" ] || scripts/kjv_text.sh "$data"
W=$out/work
export OMP_WAIT_POLICY=PASSIVE

# Text, split by lines (verses): the proxies and the reference train on lines 1-29000; the
# proxies' objective is taken on 600 of those; prompts come from 29001-31000 (first six words of a
# verse), the greedy-agreement prompts from 31001-31400, the students' validation text is 31401-end.
[ -s "$W/train.txt" ] || sed -n 1,29000p "$data" > "$W/train.txt"
[ -s "$W/objective.txt" ] || sed -n 20001,20600p "$data" > "$W/objective.txt"
[ -s "$W/valid.txt" ] || sed -n '31401,$p' "$data" > "$W/valid.txt"
if [ ! -s "$W/prompts.txt" ]; then
  sed -n 29001,31000p "$data" | awk -v n="$samples" 'NF >= 8 && c < n { print $1" "$2" "$3" "$4" "$5" "$6; c++ }' > "$W/prompts.txt"
  [ "$(wc -l < "$W/prompts.txt")" -ge "$samples" ] ||
    { echo "study_deterrence: only $(wc -l < "$W/prompts.txt") prompts for --samples $samples" >&2; exit 1; }
fi
[ -s "$W/greedy_prompts.txt" ] ||
  sed -n 31001,31400p "$data" | awk 'NF >= 8 && c < 64 { print $1" "$2" "$3" "$4" "$5" "$6; c++ }' > "$W/greedy_prompts.txt"
[ -s "$W/fp.key" ] || "$lineage" keygen --watermark "$W/fp.key" >/dev/null
[ -s "$W/wm.key" ] || "$lineage" keygen --watermark "$W/wm.key" >/dev/null

# Proxies (distilled from the teacher: what an owner can make of its own model) and the
# reference (trained on the text alone, never on the teacher).
small_model=(--heads 4 --kv-heads 2 --seq-len 256 --batch-size 8 --warmup 20 --eval-every 0 --eval-rows 16
             --checkpoint-every 0)
if [ ! -s "$W/proxy_a/student.gguf" ]; then
  echo "=== proxy a (dim 96 x 4, the distiller's architecture)"
  "$lineage" distill --teacher "$teacher" --data "$W/train.txt" --out "$W/proxy_a" --dim 96 --layers 4 --hidden 288 \
    --mode online --loss forward_kl --steps 200 --lr 3e-3 --min-lr 3e-4 --seed 11 "${small_model[@]}" > "$W/proxy_a.log" 2>&1
fi
if [ ! -s "$W/proxy_b/student.gguf" ]; then
  echo "=== proxy b (dim 64 x 6, another architecture)"
  "$lineage" distill --teacher "$teacher" --data "$W/train.txt" --out "$W/proxy_b" --dim 64 --layers 6 --hidden 192 \
    --mode online --loss forward_kl --steps 200 --lr 3e-3 --min-lr 3e-4 --seed 12 "${small_model[@]}" > "$W/proxy_b.log" 2>&1
fi
if [ ! -s "$W/reference/model.gguf" ]; then
  echo "=== reference (dim 128 x 4, trained on the text alone)"
  "$lineage" train --data "$W/train.txt" --tokenizer "$teacher" --out "$W/reference" --dim 128 --layers 4 --hidden 352 \
    --steps 400 --lr 3e-3 --min-lr 3e-4 --seed 13 "${small_model[@]}" > "$W/reference.log" 2>&1
fi
reference=$W/reference/model.gguf
[ -s "$reference" ] || reference=$(ls "$W"/reference/*.gguf | head -1)
pa=$W/proxy_a/student.gguf pb=$W/proxy_b/student.gguf obj=$W/objective.txt

# name | temperature | serve flags
configs=(
  "plain_t1.0|1.0|"
  "plain_t1.25|1.25|"
  "plain_t1.5|1.5|"
  "watermark_d1|1.0|--watermark-key $W/wm.key --watermark-delta 1"
  "watermark_d2|1.0|--watermark-key $W/wm.key --watermark-delta 2"
  "watermark_d4|1.0|--watermark-key $W/wm.key --watermark-delta 4"
  "antidistill_a_0.05|1.0|--antidistill $pa --antidistill-data $obj --antidistill-lambda 0.05"
  "antidistill_a_0.1|1.0|--antidistill $pa --antidistill-data $obj --antidistill-lambda 0.1"
  "antidistill_a_0.2|1.0|--antidistill $pa --antidistill-data $obj --antidistill-lambda 0.2"
  "antidistill_a_0.5|1.0|--antidistill $pa --antidistill-data $obj --antidistill-lambda 0.5"
  "antidistill_b_0.1|1.0|--antidistill $pb --antidistill-data $obj --antidistill-lambda 0.1"
  "antidistill_b_0.25|1.0|--antidistill $pb --antidistill-data $obj --antidistill-lambda 0.25"
  "antidistill_b_0.5|1.0|--antidistill $pb --antidistill-data $obj --antidistill-lambda 0.5"
  "fingerprint_a_0.05|1.0|--fingerprint-key $W/fp.key --fingerprint-proxy $pa --fingerprint-data $obj --fingerprint-lambda 0.05"
  "fingerprint_a_0.1|1.0|--fingerprint-key $W/fp.key --fingerprint-proxy $pa --fingerprint-data $obj --fingerprint-lambda 0.1"
  "fingerprint_a_0.2|1.0|--fingerprint-key $W/fp.key --fingerprint-proxy $pa --fingerprint-data $obj --fingerprint-lambda 0.2"
  "fingerprint_a_0.4|1.0|--fingerprint-key $W/fp.key --fingerprint-proxy $pa --fingerprint-data $obj --fingerprint-lambda 0.4"
  "fingerprint_b_0.2|1.0|--fingerprint-key $W/fp.key --fingerprint-proxy $pb --fingerprint-data $obj --fingerprint-lambda 0.2"
)
wanted() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }

serve_pid=""
stop_server() { if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; serve_pid=""; fi; }
trap stop_server EXIT
start_server() {  # log flags... -> sets url
  local log=$1; shift
  "$lineage" serve -m "$teacher" --port 0 --max-batch 16 "$@" > "$log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 600); do
    grep -q "listening on" "$log" && break
    kill -0 "$serve_pid" 2>/dev/null || { echo "study_deterrence: lineage serve failed:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.5
  done
  url="$(grep -o 'http://[0-9.:]*' "$log" | head -1)/v1"
}
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

# The undefended teacher's greedy answers: what agreement is measured against.
if [ ! -s "$W/greedy.jsonl" ]; then
  start_server "$W/serve_greedy.log"
  python3 scripts/study_client.py greedy "$url" "$W/greedy_prompts.txt" "$W/greedy.jsonl" --max-tokens 32
  stop_server
fi

student_flags=(--tokenizer "$teacher" --dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288 --seq-len 160 --batch-size 8
               --steps "$steps" --lr 3e-3 --min-lr 3e-4 --warmup 20 --eval-every 0 --eval-rows 16 --checkpoint-every 0
               --seed 21)

for entry in "${configs[@]}"; do
  IFS='|' read -r name temp flags <<< "$entry"
  wanted "$name" || continue
  d=$out/$name
  [ -s "$d/summary.json" ] && continue
  echo "=== $name (temperature $temp; $flags)"
  mkdir -p "$d"
  # shellcheck disable=SC2086
  start_server "$d/serve.log" $flags
  t0=$(date +%s.%N)
  python3 scripts/study_client.py sample "$url" "$W/prompts.txt" "$d/samples.jsonl" --max-tokens "$gen_tokens" --temperature "$temp"
  t1=$(date +%s.%N)
  agree=$(python3 scripts/study_client.py agree "$url" "$W/greedy.jsonl")
  stop_server
  python3 -c "
import json,sys
with open(sys.argv[1]) as f, open(sys.argv[2],'w') as o:
    for l in f: o.write(json.loads(l)['completion'].strip()+'\n')" "$d/samples.jsonl" "$d/completions.txt"
  head -n "$small" "$d/samples.jsonl" > "$d/samples_small.jsonl"
  "$lineage" eval -q -m "$reference" --text "$d/completions.txt" --no-cost --json "$d/sample_ppl.json" > /dev/null
  "$lineage" detect --key "$W/fp.key" -m "$teacher" "$d/samples.jsonl" --json "$d/detect_fp.json" > /dev/null || true
  "$lineage" detect --key "$W/wm.key" -m "$teacher" "$d/samples.jsonl" --json "$d/detect_wm.json" > /dev/null || true
  for set in full small; do
    file=$d/samples.jsonl; [ $set = small ] && file=$d/samples_small.jsonl
    rm -rf "$d/student_$set"
    "$lineage" train --data "$file" --out "$d/student_$set" "${student_flags[@]}" > "$d/train_$set.log" 2>&1
    s=$d/student_$set/model.gguf; [ -s "$s" ] || s=$(ls "$d/student_$set"/*.gguf | head -1)
    "$lineage" eval -q -m "$s" --teacher "$teacher" --text "$W/valid.txt" --no-cost --json "$d/eval_$set.json" > /dev/null
    for k in fp wm; do
      "$lineage" trace --suspect "$s" --key "$W/$k.key" --reference "$teacher" --text "$W/valid.txt" \
        --json "$d/trace_${k}_$set.json" > /dev/null
    done
  done
  python3 - "$d" "$name" "$temp" "$agree" "$t0" "$t1" "$samples" "$gen_tokens" "$flags" <<'PY'
import json, os, sys
d, name, temp, agree, t0, t1, samples, gen, flags = sys.argv[1:]
def load(f):
    return json.load(open(os.path.join(d, f)))
kind = name.split("_")[0]
strength = float(name.rsplit("_", 1)[1].lstrip("td"))
out = {"name": name, "kind": kind, "strength": strength, "proxy": name.split("_")[1] if kind in ("antidistill", "fingerprint") else "",
       "temperature": float(temp), "flags": flags, "samples": int(samples), "gen_tokens": int(gen),
       "sampling_seconds": float(t1) - float(t0),
       "teacher_agreement": json.loads(agree)["agreement"],
       "sample_ppl": load("sample_ppl.json")["models"]["model"]["text"]["perplexity"],
       "detect_fp_z": load("detect_fp.json")["z"], "detect_wm_z": load("detect_wm.json")["z"]}
for s in ("full", "small"):
    e = load(f"eval_{s}.json")
    out[f"student_ppl_{s}"] = e["models"]["model"]["text"]["perplexity"]
    out[f"student_agreement_{s}"] = e["agreement"]["top1_agreement"]
    for k in ("fp", "wm"):
        t = load(f"trace_{k}_{s}.json")
        out[f"trace_{k}_p_{s}"] = t["p_value"]
        out[f"trace_{k}_z_{s}"] = t["z"]
tmp = os.path.join(d, "summary.json.tmp")
json.dump(out, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(d, "summary.json"))
PY
  echo "    $(cat "$d/summary.json" | tr -d '\n ' | cut -c1-400)"
done

# Pre-trained students fine-tuned on each configuration's completions (warm.json beside summary.json).
for entry in "${configs[@]}"; do
  IFS='|' read -r name temp flags <<< "$entry"
  wanted "$name" || continue
  d=$out/$name
  [ -s "$d/summary.json" ] || continue
  [ -s "$d/warm.json" ] && continue
  echo "=== $name: pre-trained students"
  for init in proxy_a reference; do
    src=$pa; [ $init = reference ] && src=$reference
    rm -rf "$d/warm_$init"
    "$lineage" distill --teacher "$teacher" --student "$src" --data "$d/samples.jsonl" --out "$d/warm_$init" --alpha 0 \
      --seq-len 160 --steps "$warm_steps" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 10 --eval-every 0 --eval-rows 16 \
      --checkpoint-every 0 --seed 21 > "$d/warm_$init.log" 2>&1
    "$lineage" eval -q -m "$d/warm_$init/student.gguf" --teacher "$teacher" --text "$W/valid.txt" --no-cost \
      --json "$d/eval_warm_$init.json" > /dev/null
    "$lineage" trace --suspect "$d/warm_$init/student.gguf" --key "$W/fp.key" --reference "$teacher" --text "$W/valid.txt" \
      --json "$d/trace_fp_warm_$init.json" > /dev/null
  done
  python3 - "$d" <<'PY'
import json, os, sys
d = sys.argv[1]
out = {}
for init in ("proxy_a", "reference"):
    e = json.load(open(os.path.join(d, f"eval_warm_{init}.json")))
    out[f"warm_ppl_{init}"] = e["models"]["model"]["text"]["perplexity"]
    out[f"warm_agreement_{init}"] = e["agreement"]["top1_agreement"]
    out[f"trace_fp_p_warm_{init}"] = json.load(open(os.path.join(d, f"trace_fp_warm_{init}.json")))["p_value"]
tmp = os.path.join(d, "warm.json.tmp")
json.dump(out, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(d, "warm.json"))
PY
done

# Results and the table: utility and harm relative to plain sampling at temperature 1.
python3 - "$out" <<'PY' > /dev/null
import glob, json, os, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*", "summary.json"))):
    r = json.load(open(f))
    w = os.path.join(os.path.dirname(f), "warm.json")
    if os.path.exists(w): r.update(json.load(open(w)))
    rows.append(r)
with open(os.path.join(sys.argv[1], "rows.tmp"), "w") as o:
    for r in rows: o.write(json.dumps(r) + "\n")
PY
cat "$out/rows.tmp" | python3 -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
order = ['plain', 'watermark', 'antidistill', 'fingerprint']
rows.sort(key=lambda r: (order.index(r['kind']), r.get('proxy', ''), r['strength']))
with open('$out/results.jsonl', 'w') as f:
    for r in rows: f.write(json.dumps(r) + '\n')
base = next((r for r in rows if r['name'] == 'plain_t1.0'), None)
def rel(r, k):
    return '' if base is None else f\"{100 * (r[k] / base[k] - 1):+.1f}%\"
def warm(r, k):
    return f\"{r[k]:.2f} ({rel(r, k)})\" if k in r and base is not None and k in base else '-'
lines = ['| configuration | teacher agreement | sample ppl (ref) | Δ | student ppl | Δ | student top-1 | pre-trained students: proxy a / reference (ppl, Δ) | fingerprint p (student) | watermark p (student) | fingerprint p, ' + '$small' + ' samples | watermark p, ' + '$small' + ' samples | z of teacher text (fp / wm) | sampling s |',
         '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
for r in rows:
    lines.append(f\"| {r['name']} | {r['teacher_agreement']:.3f} | {r['sample_ppl']:.2f} | {rel(r, 'sample_ppl')} | {r['student_ppl_full']:.2f} | {rel(r, 'student_ppl_full')} | {r['student_agreement_full']:.3f} | {warm(r, 'warm_ppl_proxy_a')} / {warm(r, 'warm_ppl_reference')} | {r['trace_fp_p_full']:.2g} | {r['trace_wm_p_full']:.2g} | {r['trace_fp_p_small']:.2g} | {r['trace_wm_p_small']:.2g} | {r['detect_fp_z']:.1f} / {r['detect_wm_z']:.1f} | {r['sampling_seconds']:.0f} |\")
open('$out/table.md', 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
"
rm -f "$out/rows.tmp"
echo "results: $out/results.jsonl, table: $out/table.md; plots: $lineage report --deterrence $out/results.jsonl --out $out/report.html"
