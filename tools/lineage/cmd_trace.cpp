// lineage trace: was a suspect model trained on text watermarked with our key? (Sander et al. 2024.)
// The work is protect::run_trace (protect/trace_run.h); this file is its flags.
#include <iostream>

#include "commands.h"
#include "lineage/core/file.h"
#include "lineage/protect/trace_run.h"

namespace lineage::cli {

Run add_trace(CLI::App& app) {
  struct Options : protect::TraceRequest {
    std::string json_out;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("trace", "Test whether a suspect model was trained on our watermarked outputs (radioactivity)");
  sub->add_option("--suspect", o->suspect, "the suspect: a model (weights) or an OpenAI-compatible http(s)://.../v1 URL (logprobs or text)")
      ->required();
  sub->add_option("--key", o->key, "our watermark key file")->required();
  sub->add_option("--reference", o->reference,
                  "weights/logprobs: our own model without watermark (e.g. the teacher we serve); the suspect's green mass is "
                  "measured against it, which cancels what both predict alike and keeps what our key added");
  sub->add_option("--text", o->text, "plain text the suspect reads (weights) or is prompted with (text); not our watermarked outputs")
      ->required();
  sub->add_option("--tokenizer", o->tokenizer, "our model's tokenizer, the one the watermark was keyed on (default: the suspect's)");
  sub->add_option("--ours", o->ours, "files of our own watermarked outputs (text or JSONL pairs): their windows are never scored");
  sub->add_flag("--text-is-ours", o->trace.exclude_read_windows,
                "--text is our own watermarked output: never score a window that occurs in it");
  sub->add_option("--method", o->method,
                  "auto, weights (green mass of its next-token distributions), logprobs (the same from a URL's top_logprobs), "
                  "predictions (its top-n next tokens) or text (its generations); auto: weights for a model file; for a URL, "
                  "logprobs when it returns prompt log-probabilities, else text")
      ->check(CLI::IsMember({"auto", "weights", "logprobs", "predictions", "text"}))->capture_default_str();
  sub->add_option("--top-logprobs", o->top_logprobs, "logprobs: alternatives asked per position (OpenAI allows 20)")
      ->capture_default_str();
  sub->add_option("--window", o->window, "logprobs: tokens of --text per request")->capture_default_str();
  sub->add_option("--wrong-keys", o->wrong_keys,
                  "weights/logprobs: also score this many random keys that are not ours and say how many reach p < 0.01 "
                  "(a calibrated test: about 1%)")
      ->capture_default_str();
  sub->add_option("--top-n", o->trace.top_n, "predictions: next tokens scored per position")->capture_default_str();
  sub->add_option("--max-tokens", o->max_tokens, "weights/predictions: tokens of --text read at most")->capture_default_str();
  sub->add_option("--samples", o->samples, "text: completions asked of the suspect")->capture_default_str();
  sub->add_option("--prompt-tokens", o->prompt_tokens, "text: tokens of --text in each prompt")->capture_default_str();
  sub->add_option("--gen-tokens", o->gen_tokens, "text: tokens per completion")->capture_default_str();
  sub->add_option("--temperature", o->temperature, "text: sampling temperature")->capture_default_str();
  sub->add_option("--seed", o->seed, "text: sampling seed")->capture_default_str();
  sub->add_option("--gamma", o->params.gamma, "green share our outputs were watermarked with")->capture_default_str();
  sub->add_option("--context", o->params.context, "h our outputs were watermarked with")->capture_default_str();
  sub->add_option("--threshold", o->trace.threshold_z, "z above which the suspect is flagged")->capture_default_str();
  sub->add_option("--api-key", o->api_key, "URL suspect: API key (default: $LINEAGE_API_KEY)");
  sub->add_option("--concurrency", o->concurrency, "URL suspect: requests in flight")->capture_default_str();
  sub->add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--json", o->json_out, "write the verdict as JSON here");
  return [o] {
    auto result = protect::run_trace(*o);
    std::cout << result.describe();
    if (!o->json_out.empty()) write_file_atomic(o->json_out, result.to_json().dump(2) + "\n");
  };
}

}  // namespace lineage::cli
