// lineage serve: an OpenAI-compatible server for one model.
#include <torch/torch.h>

#include <iostream>
#include <memory>

#include "commands.h"
#include "deterrence_flags.h"
#include "lineage/core/error.h"
#include "lineage/core/json.h"
#include "lineage/model/cpu_decoder.h"
#include "lineage/serve/keys.h"
#include "lineage/serve/server.h"

namespace lineage::cli {

Run add_serve(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/models, /v1/completions, /v1/chat/completions)");
  auto o = std::make_shared<serve::ServeOptions>();
  auto threads = std::make_shared<int>(0);
  auto no_text = std::make_shared<bool>(false);
  auto add_key = std::make_shared<std::string>();
  auto quota = std::make_shared<int64_t>(0), rpm = std::make_shared<int64_t>(0), tpm = std::make_shared<int64_t>(0);
  sub->add_option("-m,--model", o->model, "model: HF folder, .gguf or llama2.c .bin (with its tokenizer)");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer file, when the model has none beside it (or to override it)");
  sub->add_option("--model-id", o->model_id, "the id clients name (default: the file or folder name without extension)");
  sub->add_option("--host", o->host, "address to listen on")->capture_default_str();
  sub->add_option("--port", o->port, "port (0: any free one, printed at start)")->capture_default_str();
  sub->add_option("--api-keys", o->api_keys, "API key file (hashed keys with token quotas); without it, no authentication");
  sub->add_option("--add-key", *add_key, "add a key with this id to --api-keys, print its secret once, and exit");
  sub->add_option("--quota", *quota, "with --add-key: tokens (prompt + completion) the key may use; 0 = unlimited")
      ->capture_default_str();
  sub->add_option("--rpm", *rpm, "with --add-key: requests per minute the key may make (429 with Retry-After above); 0 = no limit")
      ->capture_default_str();
  sub->add_option("--tpm", *tpm, "with --add-key: tokens (prompt + completion) per minute; 0 = no limit")->capture_default_str();
  sub->add_option("--log", o->log, "SQLite request log (WAL), e.g. requests.db");
  sub->add_flag("--no-log-text", *no_text, "log prompt hashes and counts but not prompt text");
  sub->add_option("--max-batch", o->max_batch, "sequences decoded together")->capture_default_str();
  sub->add_option("--max-queue", o->max_queue, "requests waiting before the server answers 503")->capture_default_str();
  sub->add_option("--max-body", o->max_body_bytes, "largest request body in bytes (413 above)")->capture_default_str();
  sub->add_option("--http-threads", o->threads,
                  "requests processed at once (waiting or idle connections hold no thread)")->capture_default_str();
  sub->add_option("--read-timeout", o->read_timeout_s,
                  "seconds a request's body may take to arrive, in all (its headers get min(10, this)); not per byte")
      ->capture_default_str();
  sub->add_option("--max-connections", o->max_connections, "client connections open at once, in all")->capture_default_str();
  sub->add_option("--max-connections-per-client", o->max_connections_per_client,
                  "client connections open at once from one address")->capture_default_str();
  sub->add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--dtype", o->dtype, "f32, f16 or bf16")->capture_default_str();
  sub->add_option("--threads", *threads, "CPU threads for the model (OpenBLAS and libtorch together); 0 = the libraries' defaults")->capture_default_str();
  sub->add_option("--watermark-key", o->watermark_key,
                  "watermark every distribution served (Kirchenbauer et al. 2023) with this key file (mode 600; see lineage keygen)");
  sub->add_option("--watermark-gamma", o->watermark_gamma, "green share of the vocabulary")->capture_default_str();
  sub->add_option("--watermark-delta", o->watermark_delta, "logit bias on green tokens")->capture_default_str();
  sub->add_option("--watermark-context", o->watermark_context, "h: previous tokens that seed the green list")->capture_default_str();
  add_deterrence_flags(sub, o->deterrence);
  sub->add_option("--draft", o->draft,
                  "speculative decoding (Leviathan et al. 2023): a small model with the same tokenizer proposes tokens "
                  "that the served model checks in one pass; answers follow the served model's distribution exactly");
  sub->add_option("--draft-tokens", o->draft_tokens, "tokens the draft proposes per check")->capture_default_str();
  sub->add_option("--draft-max-batch", o->draft_max_batch,
                  "speculate while at most this many sequences are decoded; above it, the usual batched step")
      ->capture_default_str();
  sub->add_option("--drain-seconds", o->drain_seconds,
                  "on SIGTERM or SIGINT: seconds running requests get to finish before they are cancelled (503)")
      ->capture_default_str();
  sub->add_flag("--public-metrics", o->public_metrics,
                "answer GET /metrics (Prometheus text: requests by key, tokens, queue, latency) to any client, not only "
                "loopback ones");
  sub->add_flag("-q,--quiet", o->quiet, "no messages on stderr");
  return [o, threads, no_text, add_key, quota, rpm, tpm] {
    if (!add_key->empty()) {
      if (o->api_keys.empty()) throw CLI::ValidationError("--add-key needs --api-keys FILE");
      std::string secret = serve::KeyStore::add_key(o->api_keys, *add_key, *quota, *rpm, *tpm);
      std::cout << secret << "\n";
      std::cerr << "key '" << *add_key << "' added to " << o->api_keys << " (the secret above is not stored; keep it)\n";
      return;
    }
    if (o->model.empty()) fail("lineage serve needs --model M (a model file or folder)");
    model::set_cpu_threads(*threads);
    o->log_text = !*no_text;
    serve::run_serve(*o);
  };
}

}  // namespace lineage::cli
