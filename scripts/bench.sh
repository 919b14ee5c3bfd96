#!/usr/bin/env bash
# Runs the benchmarks; each prints one JSON line. Side by side in one run, with ratios:
#   - bench_distill_step against the PyTorch peer (../shared/peers/pytorch_distill_step.py, Debian
#     python3-torch, installed here when missing: it is benchmark-only, never a Lineage dependency),
#     at 1 and 2 threads, fp32 and a bf16-autocast line; and the demo's recipe for 200 steps in fp32
#     and bf16, their validation losses side by side;
#   - bench_generate's decode and prefill against llama.cpp's llama-bench on the same GGUF and
#     threads (the embedded 5.2M teacher and stories260K);
#   - bench_chunked_kd (V = 128,256, chunked against unchunked), bench_data_parallel, and the rest.
# scripts/bench.sh [--quick] [SECTION...]   (--quick: fewer steps and repeats; sections: step bf16
# generate rest, default all)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && { quick=1; shift; }
sections=" ${*:-step bf16 generate rest} "
want() { [[ "$sections" == *" $1 "* ]]; }
bash scripts/build.sh >/dev/null
shared=../shared
llama=$shared/tools/llama.cpp/bin
steps=$([ $quick = 1 ] && echo 3 || echo 10)

# --- the distillation step against the PyTorch peer ------------------------------------------
if ! want step; then
  :
elif [ -f "$shared/peers/pytorch_distill_step.py" ]; then
  if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "bench: installing python3-torch for the PyTorch peer (benchmark only)" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-torch >/dev/null
  fi
  # The peer twice: as shipped (libgomp's default wait policy, how a PyTorch user runs it) and with
  # GOMP_SPINCOUNT=10000, the setting `lineage` and its benches give themselves
  # (lineage/core/threads.h) -- so the ratio says how much is that setting and how much the rest.
  for t in 1 2; do
    out=$(OMP_NUM_THREADS=$t build/bench/bench_distill_step --steps "$steps" --threads "$t")
    ours=$(echo "$out" | grep '"forward_kl_full_vocab"')
    ours_bf16=$(echo "$out" | grep '"forward_kl_full_vocab_bf16"')
    peer=$(OMP_NUM_THREADS=$t /usr/bin/python3 "$shared/peers/pytorch_distill_step.py" "$t" | tail -1)
    peer_same_wait=$(GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=$t /usr/bin/python3 "$shared/peers/pytorch_distill_step.py" "$t" | tail -1)
    echo "$ours"
    echo "$ours_bf16"
    echo "$peer"
    python3 - "$ours" "$ours_bf16" "$peer" "$peer_same_wait" "$t" <<'PY'
import json, sys
a, a16, b, bp = (json.loads(x) for x in sys.argv[1:5])
t = int(sys.argv[5])
pa, pa16 = a["tokens_per_s"], a16["tokens_per_s"]
pb, pbp = b["tokens_per_s"], bp["tokens_per_s"]
print(json.dumps({"bench": "distill_step_vs_pytorch", "threads": t, "dtype": "float32",
                  "lineage_tok_per_s": round(pa, 1), "pytorch_tok_per_s": round(pb, 1), "ratio": round(pa / pb, 2),
                  "pytorch_same_wait_tok_per_s": round(pbp, 1), "ratio_to_same_wait": round(pa / pbp, 2)}))
print(json.dumps({"bench": "distill_step_vs_pytorch", "threads": t, "dtype": "bf16 autocast",
                  "lineage_tok_per_s": round(pa16, 1), "ratio_to_lineage_fp32": round(pa16 / pa, 2),
                  "ratio": round(pa16 / pb, 2), "ratio_to_same_wait": round(pa16 / pbp, 2)}))
PY
  done
else
  echo '{"bench":"distill_step_vs_pytorch","skipped":"../shared/peers is absent"}'
fi

# --- bf16 against fp32: the demo's recipe for 200 steps, validation loss --------------------
if want bf16 && [ -f models/lineage-kjv-5m.gguf ]; then
  data=runs/data/kjv.txt
  mkdir -p runs/data
  [ -s "$data" ] || scripts/kjv_text.sh "$data"
  dir=$(mktemp -d)
  for p in fp32 bf16; do
    extra=(); [ $p = bf16 ] && extra=(--bf16)
    build/lineage distill --teacher models/lineage-kjv-5m.gguf --data "$data" --out "$dir/$p" \
      --dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288 --seq-len 256 --mode online --loss forward_kl \
      --steps 200 --batch-size 8 --lr 3e-3 --min-lr 3e-4 --warmup 30 --eval-every 200 --eval-rows 32 \
      --checkpoint-every 0 "${extra[@]}" >/dev/null 2>"$dir/$p.log" || { cat "$dir/$p.log" >&2; exit 1; }
  done
  python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
def last_eval(p):
    rows = [json.loads(l) for l in open(f"{d}/{p}/metrics.jsonl")]
    ev = [r for r in rows if r.get("split") == "valid"]
    train = [r for r in rows if "tok_per_s" in r]
    return ev[-1]["loss"], sum(r["tok_per_s"] for r in train[5:]) / max(1, len(train[5:]))
l32, s32 = last_eval("fp32")
l16, s16 = last_eval("bf16")
print(json.dumps({"bench": "bf16_vs_fp32_validation", "recipe": "scripts/demo.sh, 200 steps", "val_loss_fp32": round(l32, 4),
                  "val_loss_bf16": round(l16, 4), "relative_difference": round(abs(l16 - l32) / l32, 4),
                  "within_1_percent": abs(l16 - l32) / l32 <= 0.01, "tok_per_s_fp32": round(s32), "tok_per_s_bf16": round(s16)}))
PY
  rm -rf "$dir"
fi

# --- decode and prefill against llama-bench ---------------------------------------------------
repeats=$([ $quick = 1 ] && echo 2 || echo 5)
# A 92M model (dim 1024, 8 layers, GQA 16/4, FFN 2816; one training step on the KJV text, saved as
# binary16 GGUF like the teacher) for a size where the weights no longer stay in cache: made once
# under runs/bench/ (never committed).
big=runs/bench/lineage-92m.gguf
if want generate && [ ! -s "$big" ]; then
  mkdir -p runs/data runs/bench
  [ -s runs/data/kjv.txt ] || scripts/kjv_text.sh runs/data/kjv.txt
  rm -rf runs/bench/model-92m
  build/lineage train --data runs/data/kjv.txt --out runs/bench/model-92m --vocab-size 2048 --dim 1024 --layers 8 \
    --heads 16 --kv-heads 4 --hidden 2816 --seq-len 256 --batch-size 1 --steps 1 --eval-every 0 >/dev/null 2>&1 &&
    cp runs/bench/model-92m/model.gguf "$big.tmp" && mv "$big.tmp" "$big"
fi
want generate && for model in models/lineage-kjv-5m.gguf "$shared/tools/llama.cpp/stories260K.gguf" "$big"; do
  if [ ! -x "$llama/llama-bench" ] || [ ! -f "$model" ]; then
    echo "{\"bench\":\"generate_vs_llama_cpp\",\"skipped\":\"$model or llama-bench is absent\"}"; continue
  fi
  for t in 1 2; do
    ours=$(build/bench/bench_generate "$model" --threads "$t" --repeats "$repeats" --tokens 128)
    # llama-bench's prompt as long as ours (the model's context, at most 256): attention's share
    # grows with the prompt, so tokens/s of different lengths do not compare.
    plen=$(echo "$ours" | python3 -c 'import json,sys; print(json.load(sys.stdin)["prefill_tokens"])')
    theirs=$("$llama/llama-bench" -m "$model" -t "$t" -p "$plen" -n 128 -r "$repeats" -o json 2>/dev/null)
    echo "$ours"
    python3 - "$ours" "$theirs" "$t" "$model" <<'PY'
import json, sys
ours, theirs, t, model = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pp = next(r["avg_ts"] for r in theirs if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r["avg_ts"] for r in theirs if r["n_gen"] > 0 and r["n_prompt"] == 0)
print(json.dumps({"bench": "generate_vs_llama_cpp", "model": model, "threads": t,
                  "decode_lineage": round(ours["decode_tokens_per_s"]), "decode_llama_cpp": round(tg),
                  "decode_ratio": round(ours["decode_tokens_per_s"] / tg, 2),
                  "prompt_tokens": ours["prefill_tokens"],
                  "prefill_lineage": round(ours["prefill_tokens_per_s"]), "prefill_llama_cpp": round(pp),
                  "prefill_ratio": round(ours["prefill_tokens_per_s"] / pp, 2)}))
PY
  done
done

# --- the rest ---------------------------------------------------------------------------------
want rest || exit 0
build/bench/bench_chunked_kd --steps 1 --chunks "0,$([ $quick = 1 ] && echo 512 || echo 256,512,1024)"
build/bench/bench_data_parallel --steps "$steps"
build/bench/bench_train_step
build/bench/bench_eval
build/bench/bench_serve
build/bench/bench_monitor
