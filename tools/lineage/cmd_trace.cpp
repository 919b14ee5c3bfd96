// lineage trace: was a suspect model trained on text watermarked with our key? (Sander et al. 2024.)
#include <iostream>
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

Run add_trace(CLI::App& app) {
  struct Options {
    std::string suspect, key, tokenizer, text, method = "auto", json_out, api_key, device = "cpu";
    std::vector<std::string> ours;
    protect::WatermarkParams params;
    protect::TraceOptions trace;
    int64_t max_tokens = 200000;
    int samples = 200, prompt_tokens = 16, gen_tokens = 64, concurrency = 8;
    float temperature = 1.0f;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("trace", "Test whether a suspect model was trained on our watermarked outputs (radioactivity)");
  sub->add_option("--suspect", o->suspect, "the suspect: a model (weights) or an OpenAI-compatible http(s)://.../v1 URL (text)")
      ->required();
  sub->add_option("--key", o->key, "our watermark key file")->required();
  sub->add_option("--text", o->text, "plain text the suspect reads (weights) or is prompted with (text); not our watermarked outputs")
      ->required();
  sub->add_option("--tokenizer", o->tokenizer, "our model's tokenizer, the one the watermark was keyed on (default: the suspect's)");
  sub->add_option("--ours", o->ours, "files of our own watermarked outputs (text or JSONL pairs): their windows are never scored");
  sub->add_flag("--text-is-ours", o->trace.exclude_read_windows,
                "--text is our own watermarked output: never score a window that occurs in it");
  sub->add_option("--method", o->method,
                  "auto, weights (green mass of its next-token distributions), predictions (its top-n next tokens) or text "
                  "(its generations); auto: weights for a model file, text for a URL")
      ->check(CLI::IsMember({"auto", "weights", "predictions", "text"}))->capture_default_str();
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
    std::string method = o->method == "auto" ? (url ? "text" : "weights") : o->method;
    if (url && method != "text") fail("--method {} needs the suspect's weights; '{}' is a URL (use --method text)", method, o->suspect);
    if (url && o->tokenizer.empty()) fail("a URL suspect needs --tokenizer: our model's tokenizer, the one the watermark was keyed on");

    std::unique_ptr<teacher::LocalTeacher> local;
    if (!url) local = std::make_unique<teacher::LocalTeacher>(o->suspect, parse_device(o->device));
    std::shared_ptr<text::Tokenizer> ours_tok = o->tokenizer.empty() ? nullptr : io::load_tokenizer(o->tokenizer);
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
    if (method == "weights") {
      v = protect::trace_green_mass(local->model(), wm, {ids}, ours, o->trace);
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
        teacher::HttpTeacherOptions ho;
        ho.api_key = o->api_key;
        ho.concurrency = o->concurrency;
        ho.tokenizer = ours_tok;
        teacher::HttpTeacher suspect(o->suspect, ho);
        completions = suspect.generate_many(prompts, g);
      } else {
        for (size_t i = 0; i < prompts.size(); ++i) completions.push_back(local->generate(prompts[i], g[i]));
      }
      v = protect::trace_generations(wm, prompts, completions, ours, o->trace);
    }
    std::cout << protect::describe(v) << "\n" << "method: " << v.method << "\n";
    if (!o->json_out.empty()) write_file_atomic(o->json_out, protect::to_json(v).dump(2) + "\n");
  };
}

}  // namespace lineage::cli
