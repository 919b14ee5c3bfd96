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
// above). The suspect reads `texts`; its next-token distributions are averaged per distinct context
// (the text's last h ids): p̄_c, over n_c occurrences. With a reference model (our own model without
// the watermark, e.g. the teacher we serve), a_c = p̄_c − r̄_c, its mean on the same contexts;
// without one, a_c = p̄_c. Whatever the suspect and the reference, for a key neither saw each token
// is green with probability γ independently, so S_c = Σ_green a_c has mean γΣa_c and variance
// σ_c² = γ(1−γ)Σa_c², and distinct contexts are independent. z pools them as a weighted Stouffer
// sum: z = Σ w_c(S_c − γΣa_c) / √(Σ w_c²σ_c²), w_c = √n_c / σ_c. The reference cancels what both
// models predict alike (most of the variance) and keeps the lean our key added; on the embedded
// teacher it doubles z for the same student (see the protection notes). Tokens b with (context, b)
// in `ours` are left out of the sums (to honour exclude_read_windows, pass the texts read among them).
// The suspect's mean next-token distribution per distinct context (the last h ids) in `texts`, at
// most max_contexts of them: read once, scored for many keys.
struct ContextDistributions {
  int h = 1;
  std::vector<std::vector<int32_t>> contexts;  // (C, h)
  std::vector<std::vector<float>> probs;       // (C, V) mean over the occurrences
  std::vector<int64_t> counts;                 // (C) occurrences averaged
  int64_t positions = 0, repeated = 0, texts = 0;
};
ContextDistributions read_contexts(model::Llama& suspect, const std::vector<std::vector<int32_t>>& texts, int h,
                                   int64_t max_contexts);
// The same reading from what an API gives of the suspect (echo with top_logprobs): for each text, at
// each position i the top k tokens after ids [0, i] and their probabilities, row-major (T × k). The
// suspect's mean distribution per context carries mass on its top k only. With `reference`,
// `reference_out` receives the reference model's mean on the same contexts, kept at each position
// on the suspect's top-k ids, so that both are compared on the same tokens (chosen by the suspect,
// not by the key).
struct TopPredictions {
  int k = 0;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> probs;
};
ContextDistributions read_contexts_top_k(const std::vector<std::vector<int32_t>>& texts, const TopPredictions& top,
                                         int64_t vocab, int h, int64_t max_contexts, model::Llama* reference,
                                         ContextDistributions* reference_out);
// `reference`: nullptr, or what the reference model read from the same texts.
Verdict score_green_mass(const Watermark& wm, const ContextDistributions& contexts, const ContextDistributions* reference,
                         const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options);

// Calibration, as a skeptic checks it: the same reading scored for `keys` random keys that are not
// ours. A sound test puts about 1% of them below p = 0.01 and 0.1% below 0.001.
struct Calibration {
  int keys = 0, below_01 = 0, below_001 = 0;
  double smallest_p = 1;
};
Calibration calibrate_green_mass(const ContextDistributions& contexts, const ContextDistributions* reference,
                                 const std::vector<std::vector<int32_t>>& ours, const WatermarkParams& params, int keys,
                                 const TraceOptions& options);

// With only the suspect's text: its completions of `prompts` are scored (prompt ids seed the first
// green lists and their windows are excluded, as are the windows of `ours`).
Verdict trace_generations(const Watermark& wm, const std::vector<std::vector<int32_t>>& prompts,
                          const std::vector<std::vector<int32_t>>& completions,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options);

}  // namespace lineage::protect
