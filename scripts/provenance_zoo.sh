#!/usr/bin/env bash
# The provenance zoo: models derived from the embedded teacher and models independent of it, built
# here from scratch (nothing committed), then `lineage provenance` asked about every one of them.
#
#   scripts/provenance_zoo.sh [--small] [--draws N] [DIR]     (default DIR: runs/zoo)
#
# Derived from the embedded teacher T1 (models/lineage-kjv-5m.gguf):
#   s_online   distilled online (full logits)
#   s_top20    distilled from its top-20 log-probabilities through `lineage serve`
#   s_seqkd    sequence-level KD (cross-entropy on its completions) through `lineage serve`
#   s_init     initialised from its layers 0, 2, 4 (--init-from-teacher every:2), then distilled
# Independent of T1:
#   i_seed_a, i_seed_b   the students' architecture, cross-entropy on the same KJV text, other seeds
#   i_size               another size, cross-entropy on KJV
#   i_other              the students' architecture on other text (War and Peace)
#   t2                   a second teacher, trained independently on KJV
#   s2_online            a student distilled from t2 (derived from t2, independent of T1)
#   ref_*                the controls: the students' architecture trained with cross-entropy on KJV
#                        for 1, 2, 4, 8 times the students' steps (and, full zoo, the i_size
#                        architecture for 8 times), so that every suspect has a reference of its own
#                        quality (the output tests use those within 25% of its perplexity)
# Prompts and windows come from the KJV text every KJV model was trained on alike.
# Writes DIR/results.jsonl (one verdict per suspect and prompt draw) and prints a table; --small is
# the reduced zoo CI runs (fewer steps and queries). The full zoo needs ../shared/data/text (War and
# Peace for i_other).
set -euo pipefail
cd "$(dirname "$0")/.."
small=0
draws=1
dir=runs/zoo
while [ $# -gt 0 ]; do
  case "$1" in
    --small) small=1 ;;
    --draws) draws="$2"; shift ;;
    *) dir="$1" ;;
  esac
  shift
done
bin=${LINEAGE_BIN:-./build/lineage}
t1=models/lineage-kjv-5m.gguf
kjv=runs/data/kjv.txt
shared=../shared/data/text
[ -x "$bin" ] || { echo "provenance_zoo: build first (bash scripts/build.sh)" >&2; exit 1; }
if [ $small = 0 ] && [ ! -d "$shared" ]; then echo "provenance_zoo: $shared is missing (War and Peace)" >&2; exit 1; fi
mkdir -p runs/data "$dir"
[ -s "$kjv" ] || scripts/kjv_text.sh "$kjv"
probe="$kjv"

if [ $small = 1 ]; then
  # CI: the online and layer-initialised students, one independent model, the second teacher and
  # the reference; fewer steps and queries.
  steps=150; t2_steps=200; queries=200; windows=32; gen_examples=0
  suspects="s_online s_init i_seed_a"
else
  steps=300; t2_steps=500; queries=1000; windows=96; gen_examples=256
  suspects="s_online s_top20 s_seqkd s_init s2_online i_seed_a i_seed_b i_size i_other"
fi
arch="--dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288"
common="--seq-len 128 --batch-size 8 --lr 3e-3 --min-lr 3e-4 --warmup 20 --eval-every 0 --eval-rows 8 --checkpoint-every 100000"

# Each model is built once; a finished one is kept (its .gguf exists).
train() {  # name, seed, data, extra flags
  local name=$1 seed=$2 data=$3; shift 3
  [ -s "$dir/$name.gguf" ] && return 0
  rm -rf "$dir/run_$name"
  echo "zoo: training $name" >&2
  $bin train --data "$data" --tokenizer "$t1" --out "$dir/run_$name" --seed "$seed" $common "$@" > "$dir/$name.log" 2>&1
  cp "$dir/run_$name/model.gguf" "$dir/$name.gguf"
}
distill() {  # name, seed, teacher, extra flags
  local name=$1 seed=$2 teacher=$3; shift 3
  [ -s "$dir/$name.gguf" ] && return 0
  rm -rf "$dir/run_$name"
  echo "zoo: distilling $name" >&2
  $bin distill --teacher "$teacher" --data "$kjv" --out "$dir/run_$name" --seed "$seed" $common "$@" > "$dir/$name.log" 2>&1
  cp "$dir/run_$name/student.gguf" "$dir/$name.gguf"
}

distill s_online 1 "$t1" $arch --steps $steps
distill s_init 4 "$t1" --init-from-teacher every:2 --steps $((steps / 2))
train i_seed_a 5 "$kjv" $arch --steps $steps
train t2 9 "$kjv" --dim 160 --layers 4 --heads 4 --kv-heads 2 --hidden 480 --steps $t2_steps
train ref_1x 11 "$kjv" $arch --steps $steps
train ref_2x 12 "$kjv" $arch --steps $((steps * 2))
refs="ref_1x ref_2x"
if [ $small = 0 ]; then
  train ref_4x 13 "$kjv" $arch --steps $((steps * 4))
  train ref_8x 14 "$kjv" $arch --steps $((steps * 8))
  train ref_big 15 "$kjv" --dim 128 --layers 3 --heads 4 --kv-heads 2 --hidden 384 --steps $((steps * 8))
  refs="$refs ref_4x ref_8x ref_big"
  train i_seed_b 6 "$kjv" $arch --steps $steps
  train i_size 7 "$kjv" --dim 128 --layers 3 --heads 4 --kv-heads 2 --hidden 384 --steps $steps
  train i_other 8 "$shared/warpeace.txt" $arch --steps $steps
  distill s2_online 10 "$dir/t2.gguf" $arch --steps $steps
fi

# The teacher behind an OpenAI-compatible server for the students that only see its answers.
if [ $small = 0 ] && { [ ! -s "$dir/s_top20.gguf" ] || [ ! -s "$dir/s_seqkd.gguf" ]; }; then
  port=$((20000 + RANDOM % 20000))
  $bin serve --model "$t1" --port $port -q > "$dir/serve.log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.2; done
  url="http://127.0.0.1:$port/v1"
  distill s_top20 2 "$url" --tokenizer "$t1" --top-k 20 --tail-samples 0 $arch --steps $steps
  distill s_seqkd 3 "$url" --tokenizer "$t1" --mode seq_kd --alpha 0 --gen-examples $gen_examples --gen-tokens 64 $arch --steps $steps
  kill $server 2>/dev/null || true
fi

# Every suspect against the two teachers, with the references as controls, in one run per prompt draw
# (the candidates' answers are computed once per draw).
: > "$dir/results.jsonl"
for draw in $(seq 1 "$draws"); do
  args=()
  for suspect in $suspects; do args+=(--suspect "$dir/$suspect.gguf"); done
  for ref in $refs; do args+=(--reference "$dir/$ref.gguf"); done
  $bin provenance -q "${args[@]}" --candidate "$t1" --candidate "$dir/t2.gguf" \
    --text "$probe" --queries $queries --windows $windows --seed "$draw" --json "$dir/draw$draw.json" > "$dir/draw$draw.txt"
  python3 - "$dir/draw$draw.json" "$draw" >> "$dir/results.jsonl" <<'EOF'
import json, os, sys
results = json.load(open(sys.argv[1]))
if isinstance(results, dict):
    results = [results]
for r in results:
    name = os.path.basename(r["suspect"])[:-len(".gguf")]
    truth = "t2.gguf" if name == "s2_online" else "lineage-kjv-5m.gguf" if name.startswith("s_") else "none"
    out = {"suspect": name, "truth": truth, "draw": int(sys.argv[2]), "verdict": r["verdict"], "verdict_p": r["verdict_p"]}
    for x in r["rows"]:
        out[f'{x["method"]}:{x["candidate"]}'] = x["log10_p"] if x["applies"] else None
    print(json.dumps(out))
EOF
done
python3 - "$dir/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({k for r in rows for k in r if ":" in k})
print(f"{'suspect':<11} {'truth':<22} {'verdict':<22} " + " ".join(f"{k[:26]:>26}" for k in keys))
for r in rows:
    cells = " ".join(f"{('-' if r.get(k) is None else f'{r[k]:.1f}'):>26}" for k in keys)
    print(f"{r['suspect']:<11} {r['truth']:<22} {str(r['verdict']):<22} {cells}")
derived = [r for r in rows if r["truth"] != "none"]
indep = [r for r in rows if r["truth"] == "none"]
right = sum(r["verdict"] == r["truth"] for r in derived)
wrong = sum(r["verdict"] not in (None, r["truth"]) for r in derived)
false_pos = sum(r["verdict"] is not None for r in indep)
print(f"verdict (weights test): derived attributed to their teacher: {right}/{len(derived)} (to another: {wrong}); "
      f"independent attributed to anyone: {false_pos}/{len(indep)}  (cells: log10 p)")
# What --outputs-decide would have said: every test counts, Bonferroni over those that applied.
def outputs_verdict(r):
    best, who = 0.0, None
    for cand in {k.split(":", 1)[1] for k in r if ":" in k}:
        ps = [r[k] for k in r if k.endswith(":" + cand) and r[k] is not None]
        if not ps:
            continue
        import math
        adj = min(0.0, min(ps) + math.log10(len(ps)))
        if adj < best:
            best, who = adj, cand
    return who if best < -2 else None
right = sum(outputs_verdict(r) == r["truth"] for r in derived)
wrong = sum(outputs_verdict(r) not in (None, r["truth"]) for r in derived)
false_pos = sum(outputs_verdict(r) is not None for r in indep)
print(f"with --outputs-decide: derived attributed to their teacher: {right}/{len(derived)} (to another: {wrong}); "
      f"independent attributed to anyone: {false_pos}/{len(indep)}")
EOF

# White-box calibration: every ordered pair of the zoo's models of one width that started from
# independent random initialisations (all but s_init, which starts from the teacher's layers).
if [ $small = 0 ]; then
  same_width="s_online s_top20 s_seqkd s2_online i_seed_a i_seed_b i_other ref_1x ref_2x ref_4x ref_8x"
  : > "$dir/whitebox.jsonl"
  for cand in $same_width; do
    args=()
    for sus in $same_width; do [ "$sus" = "$cand" ] || args+=(--suspect "$dir/$sus.gguf"); done
    $bin provenance -q --method weights "${args[@]}" --candidate "$dir/$cand.gguf" --text "$probe" \
      --json "$dir/whitebox_$cand.json" > /dev/null
    python3 - "$dir/whitebox_$cand.json" >> "$dir/whitebox.jsonl" <<'PY'
import json, os, sys
for r in json.load(open(sys.argv[1])):
    for x in r["rows"]:
        print(json.dumps({"suspect": os.path.basename(r["suspect"]), "candidate": x["candidate"], "log10_p": x["log10_p"],
                          "statistic": x["statistic"]}))
PY
  done
  python3 - "$dir/whitebox.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
low = [r for r in rows if r["log10_p"] < -2]
print(f"white-box, independent pairs of one width: {len(low)}/{len(rows)} below p = 0.01; "
      f"smallest p 10^{min(r['log10_p'] for r in rows):.2f}")
PY
fi
