// lineage generate: stream the prompt, then sampled text, to stdout.
#include <chrono>
#include <iostream>
#include <random>

#include "commands.h"
#include "deterrence_flags.h"
#include "device.h"
#include "lineage/core/error.h"
#include "lineage/io/model_file.h"
#include "lineage/model/cpu_decoder.h"
#include "lineage/model/generate.h"
#include "lineage/model/speculative.h"
#include "lineage/text/vocab_digest.h"
#include "lineage/protect/antidistill.h"
#include "lineage/protect/watermark.h"

namespace lineage::cli {

Run add_generate(CLI::App& app) {
  struct Options {
    std::string model, tokenizer, prompt, device = "cpu", dtype = "f32", watermark_key, draft;
    int draft_tokens = 4;
    protect::WatermarkParams watermark;
    protect::DeterrenceOptions deterrence;
    int max_tokens = 256, top_k = 40, threads = 0;
    float temperature = 0.8f, top_p = 0.95f;
    int64_t seed = -1;
    bool quiet = false, ignore_eos = false, context_shift = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("generate", "Sample text from a model (greedy at --temperature 0)");
  cmd->add_option("--model,-m", o->model, "Model: HF folder, .gguf, or llama2.c .bin")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer file, when the model has none beside it");
  cmd->add_option("--prompt,-p", o->prompt, "Text to continue")->required();
  cmd->add_option("--max-tokens,-n", o->max_tokens, "New tokens at most")->capture_default_str();
  cmd->add_option("--temperature,-t", o->temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "Keep the k most likely tokens; 0 = all")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus: smallest set with this probability mass")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Random seed; -1 = from the clock")->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "f32, f16 or bf16")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads for OpenBLAS and libtorch together; 0 = the libraries' defaults")->capture_default_str();
  cmd->add_option("--watermark-key", o->watermark_key, "Watermark the text with this key file (Kirchenbauer et al. 2023)");
  cmd->add_option("--watermark-gamma", o->watermark.gamma, "Green share of the vocabulary")->capture_default_str();
  cmd->add_option("--watermark-delta", o->watermark.delta, "Logit bias on green tokens")->capture_default_str();
  cmd->add_option("--watermark-context", o->watermark.context, "h: previous tokens that seed the green list")->capture_default_str();
  add_deterrence_flags(cmd, o->deterrence);
  cmd->add_option("--draft", o->draft,
                  "speculative decoding (Leviathan et al. 2023): a small model with the same tokenizer proposes tokens "
                  "that this one checks in one pass; the output follows this model's distribution exactly");
  cmd->add_option("--draft-tokens", o->draft_tokens, "tokens the draft proposes per check")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Generate --max-tokens even past end-of-text (as llama.cpp's --ignore-eos)");
  cmd->add_flag("--context-shift", o->context_shift,
                "When the context is full, drop the older half (BOS kept) and go on, as llama.cpp's --context-shift");
  cmd->add_flag("--quiet,-q", o->quiet, "No speed report on stderr");
  return [o] {
    model::set_cpu_threads(o->threads);
    if (o->max_tokens < 0) fail("--max-tokens must be >= 0, got {}", o->max_tokens);
    model::GenerateOptions g;
    g.max_tokens = o->max_tokens;
    g.sampling = {o->temperature, o->top_k, o->top_p,
                  o->seed >= 0 ? static_cast<uint64_t>(o->seed) : std::random_device{}()};
    model::validate(g.sampling);  // flags first: no model is read for a bad command line
    std::shared_ptr<protect::Watermark> wm;
    if (!o->watermark_key.empty())
      wm = std::make_shared<protect::Watermark>(protect::WatermarkKey::read(o->watermark_key), o->watermark);
    const auto device = parse_device(o->device);
    const auto dtype = parse_dtype(o->dtype);
    auto file = io::read_model(o->model, o->tokenizer);
    if (!file.tokenizer)
      fail("no tokenizer for '{}': pass --tokenizer (a llama2.c checkpoint keeps it in a separate tokenizer.bin)", o->model);
    if (!o->quiet)
      std::cerr << fmt::format("lineage: {}: {}, {} parameters; tokenizer: {}\n", o->model, io::format_name(file.format),
                               file.config.num_parameters(), file.tokenizer->describe());
    auto net = io::make_model(file, device, dtype);
    const auto& tok = *file.tokenizer;
    model::Llama draft{nullptr};
    if (!o->draft.empty()) {
      if (o->draft_tokens < 1) fail("--draft-tokens must be >= 1, got {}", o->draft_tokens);
      auto df = io::read_model(o->draft);
      if (df.config.vocab_size != file.config.vocab_size ||
          (df.tokenizer && text::vocab_digest(df.tokenizer->vocab()) != text::vocab_digest(tok.vocab())))
        fail("draft '{}' does not use the model's tokenizer ({} tokens against {}): a draft must split text as the "
             "model does",
             o->draft, df.config.vocab_size, file.config.vocab_size);
      draft = io::make_model(df, device, dtype);
    }
    model::SpeculativeStats spec;
    // Antidistillation and fingerprint nudges first, then the watermark's bias: one processor.
    auto adjusters = protect::make_adjusters(o->deterrence, net, tok, device, dtype, o->quiet);
    if (wm || !adjusters.empty()) {
      auto streams = std::make_shared<std::vector<protect::ProxyAdjuster::Stream>>(adjusters.size());
      const double temperature = g.sampling.temperature;
      const int64_t capacity = file.config.max_seq_len;
      g.logits_processor = [wm, adjusters, streams, temperature, capacity](std::span<const int32_t> context,
                                                                         std::span<float> logits) {
        protect::adjust_logits(adjusters, *streams, wm.get(), context, logits, temperature, capacity);
      };
    }
    if (!o->ignore_eos)
      for (int32_t id : {tok.eos_id(), tok.bos_id()})  // a new BOS starts another document: stop there too
        if (id >= 0) g.stop_ids.push_back(id);

    auto prompt = tok.encode(o->prompt, tok.vocab().add_bos);
    int32_t prev = -1;
    for (int32_t id : prompt) {
      std::cout << tok.decode_piece(prev, id);
      prev = id;
    }
    std::cout.flush();
    auto start = std::chrono::steady_clock::now();
    auto print = [&](int32_t id) {
      std::cout << tok.decode_piece(prev, id) << std::flush;
      prev = id;
      return true;
    };
    // A window that fills up (prompt + new tokens = context + 1: the last cannot be fed back) ends
    // generation, said on stderr; with --context-shift the older half of the window after BOS is
    // dropped and generation goes on (llama.cpp's context shift, n_keep = the BOS).
    const int64_t ctx = file.config.max_seq_len;
    std::vector<int32_t> window = prompt, out;
    for (uint64_t round = 0;; ++round) {
      model::GenerateOptions step = g;
      step.max_tokens = g.max_tokens - static_cast<int>(out.size());
      step.sampling.seed = g.sampling.seed + round;
      auto got = draft ? model::generate_speculative(net, draft, window, step, o->draft_tokens, &spec, print)
                       : model::generate(net, window, step, print);
      out.insert(out.end(), got.begin(), got.end());
      const bool full = static_cast<int64_t>(window.size() + got.size()) > ctx;
      if (!full || static_cast<int>(out.size()) >= g.max_tokens) break;
      if (!o->context_shift) {
        std::cerr << fmt::format("lineage: stopped at the model's context length ({} positions) after {} of {} new "
                                 "tokens; --context-shift drops the older half of the window and goes on\n",
                                 ctx, out.size(), g.max_tokens);
        break;
      }
      window.insert(window.end(), got.begin(), got.end());
      const size_t keep = !window.empty() && window[0] == tok.bos_id() ? 1 : 0;
      const size_t discard = (window.size() - keep) / 2;
      window.erase(window.begin() + static_cast<std::ptrdiff_t>(keep),
                   window.begin() + static_cast<std::ptrdiff_t>(keep + discard));
      // The last token was never fed: it stays the window's last, and is not generated again.
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "\n";
    if (!o->quiet)
      std::cerr << fmt::format("lineage: {} prompt + {} generated tokens, {:.1f} tokens/s\n", prompt.size(), out.size(),
                               out.empty() ? 0.0 : out.size() / secs);
    if (!o->quiet && draft)
      std::cerr << fmt::format("lineage: draft {}: {} of {} proposed tokens accepted ({:.1f}%), {:.2f} tokens per check "
                               "(k = {})\n",
                               o->draft, spec.accepted, spec.drafted, 100 * spec.acceptance_rate(),
                               spec.tokens_per_verification(), o->draft_tokens);
  };
}

}  // namespace lineage::cli
