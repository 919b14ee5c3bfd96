#!/usr/bin/env bash
# Which loss to pick: every loss and mode of `lineage distill` on the embedded teacher, at equal
# tokens, each at the learning rate that suits it. Two phases, kept apart:
#   tune    one seed and one train/validation split; each configuration at every --lrs value, and
#           where the best of those is at an end of the grid, one more lr a grid step beyond it;
#           the lr with the lowest validation perplexity is kept for that configuration
#   report  the kept lr, --seeds other seeds and another split (other validation text):
#           the figures of the table come from these runs alone
#   warm    GKD's setting (Agarwal et al. 2024 start from a fine-tuned student): each report seed's
#           cross-entropy student goes on for the same number of steps with CE, forward KL or
#           JSD(0.5), at one fine-tuning lr (--warm-lr, 1e-3) for all three
# Each run writes RUN/summary.json; a run whose summary exists is not run again, so a stopped study
# resumes where it was. Results: OUT/results.jsonl (one line per run) and OUT/table.md.
#
#   scripts/study_losses.sh [--out DIR] [--steps N] [--lrs "3e-3 1e-2"] [--tune-seed S]
#                           [--seeds "2 3"] [--jobs J] [--only "name ..."] [--phase tune|report|warm|all]
#                           [--warm-lr LR] [--extend 0|1]
#
# --jobs J runs J distillations at once, each with 2/J threads (on 2 cores two one-thread runs
# finish more work per hour than one two-thread run; wall times are then those of a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/study steps=300 lrs="3e-3 1e-2" tune_seed=1 seeds="2 3" jobs=1 only="" phase=all warm_lr=1e-3 extend=1
tune_split=101 report_split=202
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --lrs) lrs=$2; shift 2 ;;
    --tune-seed) tune_seed=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --phase) phase=$2; shift 2 ;;
    --warm-lr) warm_lr=$2; shift 2 ;;
    --extend) extend=$2; shift 2 ;;
    -h|--help) sed -n 2,21p "$0"; exit 0 ;;
    *) echo "study_losses: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

lineage=build/lineage
[ -x "$lineage" ] || bash scripts/build.sh
teacher=models/lineage-kjv-5m.gguf
data=runs/data/kjv.txt
mkdir -p runs/data "$out"
[ -s "$data" ] || scripts/kjv_text.sh "$data"

# The student of issue 20 (816k parameters, ~1/6.4 of the teacher), 300 steps x 8 rows x 256 tokens.
common=(--teacher "$teacher" --data "$data" --dim 128 --layers 3 --heads 4 --kv-heads 2 --hidden 352
        --seq-len 256 --batch-size 8 --steps "$steps" --warmup 30 --eval-every 0 --eval-rows 64
        --checkpoint-every 0)

# name | flags. The cache configurations read CACHE_<split>_<tail> made below.
configs=(
  "ce|--alpha 0"
  "forward_kl|--loss forward_kl"
  "reverse_kl|--loss reverse_kl"
  "jsd_0.1|--loss jsd --beta 0.1"
  "jsd_0.5|--loss jsd --beta 0.5"
  "jsd_0.9|--loss jsd --beta 0.9"
  "tvd|--loss tvd"
  "forward_kl_tau2|--loss forward_kl --temperature 2"
  "forward_kl_alpha0.5|--loss forward_kl --alpha 0.5"
  "jsd_0.5_alpha0.5|--loss jsd --beta 0.5 --alpha 0.5"
  "top20_tail_draws|--mode offline --loss forward_kl --cache CACHE_tail6"
  "top20_tail_bucket|--mode offline --loss forward_kl --cache CACHE_tail0"
  "seq_kd|--mode seq_kd --loss forward_kl"
  "on_policy_fkl|--mode on_policy --lambda 0.5 --loss forward_kl"
  "on_policy_jsd_0.5|--mode on_policy --lambda 0.5 --loss jsd --beta 0.5"
)

wanted() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }

threads=$(( 2 / jobs )); [ "$threads" -ge 1 ] || threads=1
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

make_cache() {  # split tail -> directory
  local dir="$out/cache_split$1_tail$2"
  if [ ! -e "$dir.done" ]; then
    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$lineage" cache --teacher "$teacher" --data "$data" --top-k 20 --tail-samples "$2" --seq-len 256 \
      --split-seed "$1" --out "$dir" >"$out/cache_split$1_tail$2.log" 2>&1
    touch "$dir.done"
  fi
  echo "$dir"
}

run_one() {  # phase name lr seed split flags...
  local phase=$1 name=$2 lr=$3 seed=$4 split=$5; shift 5
  local dir="$out/$phase/$name/lr$lr-seed$seed"
  [ -s "$dir/summary.json" ] && return 0
  rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
  local flags=()
  for f in "$@"; do
    case "$f" in
      CACHE_tail6) f=$(make_cache "$split" 6) ;;
      CACHE_tail0) f=$(make_cache "$split" 0) ;;
    esac
    flags+=("$f")
  done
  local start; start=$(date +%s.%N)
  if "$lineage" distill "${common[@]}" --lr "$lr" --min-lr "$(python3 -c "print($lr/10)")" --seed "$seed" \
       --split-seed "$split" --out "$dir" "${flags[@]}" >"$dir.log" 2>&1; then
    python3 - "$dir" "$phase" "$name" "$lr" "$seed" "$split" "$start" "$(date +%s.%N)" "$threads" >>"$out/results.jsonl" <<'EOF'
import json, sys
d, phase, name, lr, seed, split, start, end, threads = sys.argv[1:]
s = json.load(open(f"{d}/summary.json"))["student"]
print(json.dumps({"phase": phase, "config": name, "lr": float(lr), "seed": int(seed), "split_seed": int(split),
                  "ppl": s["perplexity"], "top1_agreement": s["top1_agreement"], "kl": s["kl"],
                  "wall_s": round(float(end) - float(start), 1), "threads": int(threads)}))
EOF
    echo "study: $phase $name lr $lr seed $seed: $(python3 -c "import json;s=json.load(open('$dir/summary.json'))['student'];print(f\"ppl {s['perplexity']:.2f} agreement {100*s['top1_agreement']:.1f}% kl {s['kl']:.4f}\")")"
  else
    echo "study: $phase $name lr $lr seed $seed FAILED (log: $dir.log)" >&2
    tail -3 "$dir.log" >&2
  fi
}

# Runs the queued commands, $jobs at a time. Caches are made first (one process each) so two runs
# never build the same cache.
queue=()
drain() {
  local i=0
  for cmd in "${queue[@]}"; do
    eval "run_one $cmd" &
    i=$((i + 1))
    if [ $((i % jobs)) -eq 0 ]; then wait; fi
  done
  wait
  queue=()
}

best_lr() {  # name -> the tune phase's lr with the lowest validation perplexity
  python3 - "$out/results.jsonl" "$1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["phase"] == "tune" and r["config"] == sys.argv[2]]
if not rows: sys.exit(1)
best = min(rows, key=lambda r: r["ppl"])
print(f"{best['lr']:g}")
EOF
}

beyond_edge() {  # name -> an lr one grid step past the grid's end when the best is there
  python3 - "$out/results.jsonl" "$1" "$lrs" <<'EOF'
import json, sys
grid = sorted(float(x) for x in sys.argv[3].split())
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["phase"] == "tune" and r["config"] == sys.argv[2] and r["lr"] in grid]
if len(rows) < len(grid): sys.exit(0)
best = min(rows, key=lambda r: r["ppl"])["lr"]
step = grid[1] / grid[0] if len(grid) > 1 else 3.0
if best == grid[0]: print(f"{float(f'{grid[0] / step:.1g}'):g}")
elif best == grid[-1]: print(f"{float(f'{grid[-1] * step:.1g}'):g}")
EOF
}

touch "$out/results.jsonl"
if [ "$phase" = tune ] || [ "$phase" = all ]; then
  wanted top20_tail_draws && make_cache $tune_split 6 >/dev/null
  wanted top20_tail_bucket && make_cache $tune_split 0 >/dev/null
  for c in "${configs[@]}"; do
    name=${c%%|*}; flags=${c#*|}
    wanted "$name" || continue
    for lr in $lrs; do queue+=("tune $name $lr $tune_seed $tune_split $flags"); done
  done
  drain
  for c in "${configs[@]}"; do
    name=${c%%|*}; flags=${c#*|}
    wanted "$name" && [ "$extend" = 1 ] || continue
    extra=$(beyond_edge "$name")
    [ -n "$extra" ] && queue+=("tune $name $extra $tune_seed $tune_split $flags")
  done
  drain
fi
if [ "$phase" = report ] || [ "$phase" = all ]; then
  wanted top20_tail_draws && make_cache $report_split 6 >/dev/null
  wanted top20_tail_bucket && make_cache $report_split 0 >/dev/null
  for c in "${configs[@]}"; do
    name=${c%%|*}; flags=${c#*|}
    wanted "$name" || continue
    lr=$(best_lr "$name") || { echo "study: no tune run of $name; run --phase tune first" >&2; continue; }
    for seed in $seeds; do queue+=("report $name $lr $seed $report_split $flags"); done
  done
  drain
fi
warm=("warm_ce|--alpha 0" "warm_forward_kl|--loss forward_kl" "warm_jsd_0.5|--loss jsd --beta 0.5")
if [ "$phase" = warm ] || [ "$phase" = all ]; then
  ce_lr=$(best_lr ce) || { echo "study: the warm phase starts from the report phase's ce students" >&2; exit 1; }
  for seed in $seeds; do
    base="$out/report/ce/lr$ce_lr-seed$seed/student.gguf"
    [ -s "$base" ] || { echo "study: $base is missing; run --phase report first" >&2; exit 1; }
    for c in "${warm[@]}"; do
      name=${c%%|*}; flags=${c#*|}
      wanted "$name" || continue
      queue+=("warm $name $warm_lr $seed $report_split $flags --student $base")
    done
  done
  drain
fi

python3 - "$out/results.jsonl" "$out/table.md" <<'EOF'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# the latest line of each run (a re-run replaces an older one)
runs = {}
for r in rows: runs[(r["phase"], r["config"], r["lr"], r["seed"])] = r
rows = list(runs.values())
order = []
for r in rows:
    if r["config"] not in order: order.append(r["config"])
out = ["| configuration | lr (tuned) | validation ppl | top-1 agreement | KL(teacher‖student) | wall s/run | tune ppl by lr |",
       "| --- | --- | --- | --- | --- | --- | --- |"]
for name in order:
    tune = sorted((r for r in rows if r["config"] == name and r["phase"] == "tune"), key=lambda r: r["lr"])
    rep = [r for r in rows if r["config"] == name and r["phase"] in ("report", "warm")]
    sweep = ", ".join(f"{r['lr']:g}: {r['ppl']:.1f}" for r in tune)
    if not rep:
        out.append(f"| {name} | - | - | - | - | - | {sweep} |"); continue
    def fmt(key, scale=1.0, digits=2, unit=""):
        v = [r[key] * scale for r in sorted(rep, key=lambda r: r["seed"])]
        return f"{statistics.mean(v):.{digits}f}{unit} ({', '.join(f'{x:.{digits}f}' for x in v)})"
    lr = f"{rep[0]['lr']:g}" + (" (fixed)" if rep[0]["phase"] == "warm" else "")
    out.append(f"| {name} | {lr} | {fmt('ppl')} | {fmt('top1_agreement', 100, 1, '%')} | {fmt('kl', 1, 3)} "
               f"| {statistics.mean(r['wall_s'] for r in rep):.0f} | {sweep} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
