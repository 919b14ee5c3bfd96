// The radioactivity test (Sander et al. 2024, "Watermarking Makes Language Models Radioactive"):
// was a suspect model trained on text carrying our watermark? See detect.h for the statistics.
#pragma once

#include <cstdint>
#include <vector>

#include "lineage/model/llama.h"
#include "lineage/protect/detect.h"

namespace lineage::protect {

struct TraceOptions {
  int top_n = 1;             // predictions scored per position (weights)
  int batch_size = 8;        // windows of the context length read together (weights)
  double threshold_z = 4;
  // Never score a window that occurs in the texts read: for when they are our own watermarked
  // outputs (a plain text needs none: the suspect's predictions on it owe nothing to our key).
  bool exclude_read_windows = false;
  int64_t max_contexts = 50000;  // green mass: distinct contexts read at most (and at most 2^26 probabilities kept)
};

// The suspect's top-n next-token predictions at every position of `texts`, kept so that many keys
// can be tested against one reading (the calibration over wrong keys does that).
struct Predictions {
  struct Item {
    uint32_t text, pos;  // the prediction follows texts[text][0..pos]
    int32_t token;
  };
  std::vector<std::vector<int32_t>> texts;
  std::vector<Item> items;
  int top_n = 1;
};
Predictions predict_next(model::Llama& suspect, std::vector<std::vector<int32_t>> texts, const TraceOptions& options);
Verdict score_predictions(const Watermark& wm, const Predictions& predictions, const std::vector<std::vector<int32_t>>& ours,
                          const TraceOptions& options);

// With the suspect's weights: it reads `texts` (token ids; split into windows of its context
// length) and at each position its top-n next-token predictions are scored after the text's last
// h ids. Windows of `ours` (e.g. our own watermarked outputs) are never scored.
Verdict trace_predictions(model::Llama& suspect, const Watermark& wm, const std::vector<std::vector<int32_t>>& texts,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options);

// The green-mass test (with weights or full log-probabilities; an extension of the token counts
// above): at the first occurrence of every distinct context (the text's last h ids) in `texts`, the
// suspect's next-token probability on that context's green list, M = Σ_green p. Whatever the
// suspect, for a key it never saw each token is green with probability γ independently, so M has
// mean γ·Σp and variance γ(1−γ)·Σp² (p over the tokens scored), and distinct contexts are
// independent: z = Σ(M − γΣp) / √(γ(1−γ)ΣΣp²). It uses the whole distribution rather than its top
// few tokens, which is where a small share of watermarked training text shows. Tokens b with
// (context, b) in `ours` (or, with exclude_read_windows, in `texts`) are left out of the sums.
// The suspect's next-token distribution at the first occurrence of each distinct context (the
// last h ids) in `texts`, at most max_contexts of them: read once, scored for many keys.
struct ContextDistributions {
  int h = 1;
  std::vector<std::vector<int32_t>> contexts;  // (C, h)
  std::vector<std::vector<float>> probs;       // (C, V)
  int64_t positions = 0, repeated = 0, texts = 0;
};
ContextDistributions read_contexts(model::Llama& suspect, const std::vector<std::vector<int32_t>>& texts, int h,
                                   int64_t max_contexts);
Verdict score_green_mass(const Watermark& wm, const ContextDistributions& contexts,
                         const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options);
Verdict trace_green_mass(model::Llama& suspect, const Watermark& wm, const std::vector<std::vector<int32_t>>& texts,
                         const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options);

// With only the suspect's text: its completions of `prompts` are scored (prompt ids seed the first
// green lists and their windows are excluded, as are the windows of `ours`).
Verdict trace_generations(const Watermark& wm, const std::vector<std::vector<int32_t>>& prompts,
                          const std::vector<std::vector<int32_t>>& completions,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options);

}  // namespace lineage::protect
