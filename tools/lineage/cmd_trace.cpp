// lineage trace: was a suspect model trained on text watermarked with our key? (Sander et al. 2024.)
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>

#include "lineage/protect/detect.h"

#include "commands.h"
#include "device.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/model/generate.h"
#include "lineage/protect/trace.h"
#include "lineage/teacher/http_teacher.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::cli {

namespace {

// The suspect's top-k next-token log-probabilities over `ids` through its API (echo + logprobs),
// in windows of `window` tokens (each request scores one window, the token after it as the last
// position's next), fed to the green-mass reading; `ref` gets the reference's on the same tokens.
template <typename Options>
protect::ContextDistributions read_api_contexts(teacher::HttpTeacher& api, const std::vector<int32_t>& ids, const Options& o,
                                                model::Llama* reference, std::optional<protect::ContextDistributions>& ref) {
  const int64_t W = std::max(2, o.window), K = o.top_logprobs;
  if (static_cast<int64_t>(ids.size()) < W + 1) fail("--text holds {} tokens, fewer than --window {} + 1", ids.size(), W);
  const int64_t B = (static_cast<int64_t>(ids.size()) - 1) / W;
  auto in = torch::empty({B, W}, torch::kLong), next = torch::empty({B, W}, torch::kLong);
  auto ina = in.accessor<int64_t, 2>(), nexta = next.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < W; ++t) {
      ina[b][t] = ids[b * W + t];
      nexta[b][t] = ids[b * W + t + 1];
    }
  teacher::TopKRequest req;
  req.k = K;
  req.next = next;
  auto top = api.top_k(in, req);
  auto tid = top.ids.to(torch::kCPU).contiguous(), tlp = top.logprobs.to(torch::kCPU).contiguous();
  auto ia = tid.accessor<int64_t, 3>();
  auto la = tlp.accessor<float, 3>();
  protect::TopPredictions tp;
  tp.k = static_cast<int>(K);
  std::vector<std::vector<int32_t>> windows;
  for (int64_t b = 0; b < B; ++b) {
    windows.emplace_back(ids.begin() + b * W, ids.begin() + (b + 1) * W);
    std::vector<int32_t> bi(static_cast<size_t>(W * K));
    std::vector<float> bp(static_cast<size_t>(W * K));
    for (int64_t t = 0; t < W; ++t)
      for (int64_t j = 0; j < K; ++j) {
        bi[t * K + j] = static_cast<int32_t>(ia[b][t][j]);
        // Padding (fewer alternatives than asked, or ids the text mapping merged) carries ~0.
        bp[t * K + j] = std::exp(la[b][t][j]);
      }
    tp.ids.push_back(std::move(bi));
    tp.probs.push_back(std::move(bp));
  }
  protect::ContextDistributions r;
  auto cd = protect::read_contexts_top_k(windows, tp, api.tokenizer().vocab_size(), o.params.context, o.trace.max_contexts,
                                         reference, reference ? &r : nullptr);
  if (reference) ref = std::move(r);
  return cd;
}

}  // namespace

Run add_trace(CLI::App& app) {
  struct Options {
    std::string suspect, reference, key, tokenizer, text, method = "auto", json_out, api_key, device = "cpu";
    std::vector<std::string> ours;
    protect::WatermarkParams params;
    protect::TraceOptions trace;
    int64_t max_tokens = 200000;
    int samples = 200, prompt_tokens = 16, gen_tokens = 64, concurrency = 8, wrong_keys = 0, top_logprobs = 20, window = 256;
    float temperature = 1.0f;
    uint64_t seed = 0;
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
    protect::Watermark wm(protect::WatermarkKey::read(o->key), o->params);
    const bool url = teacher::is_url(o->suspect);
    if (url && o->tokenizer.empty()) fail("a URL suspect needs --tokenizer: our model's tokenizer, the one the watermark was keyed on");
    std::shared_ptr<text::Tokenizer> ours_tok = o->tokenizer.empty() ? nullptr : io::load_tokenizer(o->tokenizer);
    std::unique_ptr<teacher::HttpTeacher> api;
    if (url) {
      teacher::HttpTeacherOptions ho;
      ho.api_key = o->api_key;
      ho.concurrency = o->concurrency;
      ho.tokenizer = ours_tok;
      api = std::make_unique<teacher::HttpTeacher>(o->suspect, ho);
    }
    std::string method = o->method;
    if (method == "auto") method = !url ? "weights" : api->capabilities().prompt_logprobs ? "logprobs" : "text";
    if (url && (method == "weights" || method == "predictions"))
      fail("--method {} needs the suspect's weights; '{}' is a URL (use --method logprobs or text)", method, o->suspect);
    if (!url && method == "logprobs") fail("--method logprobs reads an API's log-probabilities; '{}' is not a URL (use --method weights)", o->suspect);
    if (method == "logprobs" && !api->capabilities().prompt_logprobs)
      fail("'{}' does not return prompt log-probabilities (echo + logprobs): use --method text", o->suspect);

    std::unique_ptr<teacher::LocalTeacher> local;
    if (!url) local = std::make_unique<teacher::LocalTeacher>(o->suspect, parse_device(o->device));
    if (o->wrong_keys > 0 && method != "weights" && method != "logprobs")
      fail("--wrong-keys works with --method weights or logprobs, not {}", method);
    std::unique_ptr<teacher::LocalTeacher> reference;
    if (!o->reference.empty()) {
      if (method != "weights" && method != "logprobs") fail("--reference works with --method weights or logprobs, not {}", method);
      reference = std::make_unique<teacher::LocalTeacher>(o->reference, parse_device(o->device));
      const auto& theirs = local ? local->tokenizer().vocab() : ours_tok->vocab();
      if (text::vocab_digest(reference->tokenizer().vocab()) != text::vocab_digest(theirs))
        fail("--reference '{}' has another vocabulary than the suspect: the two distributions cannot be compared", o->reference);
    }
    const text::Tokenizer& tok = ours_tok ? *ours_tok : local->tokenizer();
    if (local && method != "text" && ours_tok &&
        text::vocab_digest(ours_tok->vocab()) != text::vocab_digest(local->tokenizer().vocab()))
      fail("the suspect's tokenizer differs from '{}': its predictions are not our token ids; use --method text", o->tokenizer);

    auto ids = tok.encode(read_file(o->text), false);
    if (static_cast<int64_t>(ids.size()) > o->max_tokens) ids.resize(o->max_tokens);
    if (ids.size() < 2) fail("--text '{}' holds fewer than 2 tokens", o->text);
    std::vector<std::vector<int32_t>> ours;
    for (const auto& f : o->ours)
      for (auto& d : protect::encode_text(tok, read_file(f), f).docs) ours.push_back(std::move(d.ids));

    protect::Verdict v;
    std::optional<protect::Calibration> calibration;
    if (method == "weights" || method == "logprobs") {
      const int h = o->params.context;
      protect::ContextDistributions cd;
      std::optional<protect::ContextDistributions> ref;
      if (method == "weights") {
        cd = protect::read_contexts(local->model(), {ids}, h, o->trace.max_contexts);
        if (reference) ref = protect::read_contexts(reference->model(), {ids}, h, o->trace.max_contexts);
      } else {
        cd = read_api_contexts(*api, ids, *o, reference ? &reference->model() : nullptr, ref);
      }
      if (o->trace.exclude_read_windows) ours.push_back(ids);
      v = protect::score_green_mass(wm, cd, ref ? &*ref : nullptr, ours, o->trace);
      if (method == "logprobs")
        v.method = fmt::format("logprobs: green mass of the top-{} log-probabilities '{}' returns{} at {} distinct contexts",
                               o->top_logprobs, o->suspect, ref ? ", against the reference's on the same tokens," : "",
                               cd.contexts.size());
      if (o->wrong_keys > 0)
        calibration = protect::calibrate_green_mass(cd, ref ? &*ref : nullptr, ours, o->params, o->wrong_keys, o->trace);
    } else if (method == "predictions") {
      v = protect::trace_predictions(local->model(), wm, {ids}, ours, o->trace);
    } else {
      // Prompts: evenly spaced pieces of the text; the suspect's completions are scored.
      std::vector<std::vector<int32_t>> prompts, completions;
      const size_t P = static_cast<size_t>(std::max(1, o->prompt_tokens));
      if (ids.size() < P) fail("--text '{}' holds fewer tokens than --prompt-tokens {}", o->text, P);
      const size_t span = ids.size() - P + 1;
      for (int i = 0; i < o->samples; ++i) {
        size_t at = span * static_cast<size_t>(i) / static_cast<size_t>(o->samples);
        std::vector<int32_t> p;
        if (tok.bos_id() >= 0 && tok.vocab().add_bos) p.push_back(tok.bos_id());
        p.insert(p.end(), ids.begin() + at, ids.begin() + at + P);
        prompts.push_back(std::move(p));
      }
      std::vector<model::GenerateOptions> g(prompts.size());
      for (size_t i = 0; i < g.size(); ++i) {
        g[i].max_tokens = o->gen_tokens;
        g[i].sampling = {o->temperature, 0, 1.0f, o->seed + i};
      }
      if (url) {
        completions = api->generate_many(prompts, g);
      } else {
        for (size_t i = 0; i < prompts.size(); ++i) completions.push_back(local->generate(prompts[i], g[i]));
      }
      v = protect::trace_generations(wm, prompts, completions, ours, o->trace);
    }
    std::cout << protect::describe(v) << "\n" << "method: " << v.method << "\n";
    auto j = protect::to_json(v);
    if (calibration) {
      std::cout << fmt::format("calibration: {} random wrong keys, {} below p = 0.01 and {} below p = 0.001 (about {:.0f} and {:.1f} "
                               "expected); smallest p {:.3g}\n",
                               calibration->keys, calibration->below_01, calibration->below_001, 0.01 * calibration->keys,
                               0.001 * calibration->keys, calibration->smallest_p);
      j["wrong_keys"] = {{"keys", calibration->keys}, {"below_0.01", calibration->below_01},
                         {"below_0.001", calibration->below_001}, {"smallest_p", calibration->smallest_p}};
    }
    if (!o->json_out.empty()) write_file_atomic(o->json_out, j.dump(2) + "\n");
  };
}

}  // namespace lineage::cli
