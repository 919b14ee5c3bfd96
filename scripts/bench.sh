#!/usr/bin/env bash
# Runs the benchmarks; each prints one JSON line. Side by side in one run, with ratios:
#   - bench_distill_step against the PyTorch peer (../shared/peers/pytorch_distill_step.py, Debian
#     python3-torch, installed here when missing: it is benchmark-only, never a Lineage dependency),
#     at 1 and 2 threads;
#   - bench_generate's decode and prefill against llama.cpp's llama-bench on the same GGUF and
#     threads (the embedded 5.2M teacher and stories260K);
#   - bench_chunked_kd (V = 128,256, chunked against unchunked), bench_data_parallel, and the rest.
# scripts/bench.sh [--quick]   (--quick: fewer steps and repeats)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
bash scripts/build.sh >/dev/null
shared=../shared
llama=$shared/tools/llama.cpp/bin
steps=$([ $quick = 1 ] && echo 3 || echo 10)

# --- the distillation step against the PyTorch peer ------------------------------------------
if [ -f "$shared/peers/pytorch_distill_step.py" ]; then
  if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "bench: installing python3-torch for the PyTorch peer (benchmark only)" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-torch >/dev/null
  fi
  for t in 1 2; do
    ours=$(OMP_NUM_THREADS=$t build/bench/bench_distill_step --steps "$steps" --threads "$t" | grep '"forward_kl_full_vocab"')
    peer=$(OMP_NUM_THREADS=$t /usr/bin/python3 "$shared/peers/pytorch_distill_step.py" "$t" | tail -1)
    echo "$ours"
    echo "$peer"
    python3 - "$ours" "$peer" "$t" <<'PY'
import json, sys
a, b, t = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
pa = a["tokens_per_s"]; pb = b.get("tokens_per_s") or b.get("tok_per_s")
print(json.dumps({"bench": "distill_step_vs_pytorch", "threads": t, "lineage_tok_per_s": round(pa, 1),
                  "pytorch_tok_per_s": round(pb, 1), "ratio": round(pa / pb, 2)}))
PY
  done
else
  echo '{"bench":"distill_step_vs_pytorch","skipped":"../shared/peers is absent"}'
fi

# --- decode and prefill against llama-bench ---------------------------------------------------
repeats=$([ $quick = 1 ] && echo 2 || echo 5)
for model in models/lineage-kjv-5m.gguf "$shared/tools/llama.cpp/stories260K.gguf"; do
  if [ ! -x "$llama/llama-bench" ] || [ ! -f "$model" ]; then
    echo "{\"bench\":\"generate_vs_llama_cpp\",\"skipped\":\"$model or llama-bench is absent\"}"; continue
  fi
  for t in 1 2; do
    ours=$(build/bench/bench_generate "$model" --threads "$t" --repeats "$repeats" --tokens 128)
    theirs=$("$llama/llama-bench" -m "$model" -t "$t" -p 256 -n 128 -r "$repeats" -o json 2>/dev/null)
    echo "$ours"
    python3 - "$ours" "$theirs" "$t" "$model" <<'PY'
import json, sys
ours, theirs, t, model = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pp = next(r["avg_ts"] for r in theirs if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r["avg_ts"] for r in theirs if r["n_gen"] > 0 and r["n_prompt"] == 0)
print(json.dumps({"bench": "generate_vs_llama_cpp", "model": model, "threads": t,
                  "decode_lineage": round(ours["decode_tokens_per_s"]), "decode_llama_cpp": round(tg),
                  "decode_ratio": round(ours["decode_tokens_per_s"] / tg, 2),
                  "prefill_lineage": round(ours["prefill_tokens_per_s"]), "prefill_llama_cpp": round(pp),
                  "prefill_ratio": round(ours["prefill_tokens_per_s"] / pp, 2)}))
PY
  done
done

# --- the rest ---------------------------------------------------------------------------------
build/bench/bench_chunked_kd --steps 1 --chunks "0,$([ $quick = 1 ] && echo 512 || echo 256,512,1024)"
build/bench/bench_data_parallel --steps "$steps"
build/bench/bench_train_step
build/bench/bench_eval
build/bench/bench_serve
build/bench/bench_monitor
