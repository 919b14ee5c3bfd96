// The radioactivity test. See include/lineage/protect/trace.h.
#include "lineage/protect/trace.h"

#include <algorithm>

#include "lineage/core/error.h"

namespace lineage::protect {

Predictions predict_next(model::Llama& suspect, std::vector<std::vector<int32_t>> texts, const TraceOptions& options) {
  if (options.top_n < 1) fail("trace: --top-n must be >= 1, got {}", options.top_n);
  const auto& cfg = suspect->config();
  for (const auto& t : texts)
    for (int32_t id : t)
      if (id < 0 || id >= cfg.vocab_size) fail("trace: token id {} is outside the suspect's vocabulary of {}", id, cfg.vocab_size);
  Predictions out;
  out.texts = std::move(texts);
  out.top_n = static_cast<int>(std::min<int64_t>(options.top_n, cfg.vocab_size));
  // Pieces of the context length: (text, begin, end).
  struct Piece {
    uint32_t text;
    size_t begin, end;
  };
  std::vector<Piece> pieces;
  const size_t L = static_cast<size_t>(cfg.max_seq_len);
  for (size_t t = 0; t < out.texts.size(); ++t)
    for (size_t b = 0; b < out.texts[t].size(); b += L)
      pieces.push_back({static_cast<uint32_t>(t), b, std::min(out.texts[t].size(), b + L)});

  torch::NoGradGuard no_grad;
  suspect->eval();
  const size_t B = static_cast<size_t>(std::max(1, options.batch_size));
  for (size_t i = 0; i < pieces.size(); i += B) {
    const size_t j = std::min(pieces.size(), i + B);
    int64_t T = 0;
    for (size_t k = i; k < j; ++k) T = std::max<int64_t>(T, pieces[k].end - pieces[k].begin);
    auto tok = torch::zeros({static_cast<int64_t>(j - i), T}, torch::kLong);  // (B, T)
    auto ta = tok.accessor<int64_t, 2>();
    for (size_t k = i; k < j; ++k)
      for (size_t p = pieces[k].begin; p < pieces[k].end; ++p) ta[k - i][p - pieces[k].begin] = out.texts[pieces[k].text][p];
    auto logits = suspect->forward(tok.to(suspect->device()));                       // (B, T, V)
    auto top = std::get<1>(logits.topk(out.top_n, -1)).to(torch::kCPU).contiguous();  // (B, T, n)
    auto tp = top.accessor<int64_t, 3>();
    for (size_t k = i; k < j; ++k)
      for (size_t p = pieces[k].begin; p < pieces[k].end; ++p)
        for (int r = 0; r < out.top_n; ++r)
          out.items.push_back({pieces[k].text, static_cast<uint32_t>(p), static_cast<int32_t>(tp[k - i][p - pieces[k].begin][r])});
  }
  return out;
}

Verdict score_predictions(const Watermark& wm, const Predictions& pred, const std::vector<std::vector<int32_t>>& ours,
                          const TraceOptions& options) {
  GreenCounter counter(wm);
  for (const auto& t : ours) counter.exclude(t);
  if (options.exclude_read_windows)
    for (const auto& t : pred.texts) counter.exclude(t);
  for (const auto& it : pred.items)
    counter.add_one(std::span<const int32_t>(pred.texts[it.text].data(), it.pos + 1), it.token);
  return verdict_of(counter, wm, options.threshold_z,
                    fmt::format("weights: top-{} next-token predictions over {} texts", pred.top_n, pred.texts.size()),
                    static_cast<int64_t>(pred.texts.size()), static_cast<int64_t>(pred.items.size()));
}

Verdict trace_predictions(model::Llama& suspect, const Watermark& wm, const std::vector<std::vector<int32_t>>& texts,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options) {
  return score_predictions(wm, predict_next(suspect, texts, options), ours, options);
}

Verdict trace_generations(const Watermark& wm, const std::vector<std::vector<int32_t>>& prompts,
                          const std::vector<std::vector<int32_t>>& completions,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options) {
  if (prompts.size() != completions.size()) fail("trace: {} prompts but {} completions", prompts.size(), completions.size());
  GreenCounter counter(wm);
  for (const auto& t : ours) counter.exclude(t);
  for (const auto& p : prompts) counter.exclude(p);
  int64_t candidates = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> all(prompts[i]);
    all.insert(all.end(), completions[i].begin(), completions[i].end());
    candidates += static_cast<int64_t>(completions[i].size());
    counter.add(all, prompts[i].size());
  }
  return verdict_of(counter, wm, options.threshold_z,
                    fmt::format("text: {} generations of the suspect", completions.size()),
                    static_cast<int64_t>(completions.size()), candidates);
}

}  // namespace lineage::protect
