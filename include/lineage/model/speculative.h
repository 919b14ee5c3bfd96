// Speculative decoding (Leviathan, Kalman, Matias 2023, "Fast Inference from Transformers via
// Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with
// Speculative Sampling"): a small draft model proposes k tokens one by one, the target checks them
// all in one forward pass, and each draft token x is kept with probability min(1, p(x)/q(x)) — p the
// target's sampling distribution, q the draft's; at the first rejection a token is drawn from the
// residual norm(max(0, p − q)), and when all k are kept one more is drawn from p. The output then
// follows the target's sampling distribution exactly (greedy: token for token the target's own
// greedy text), whatever the draft; a good draft only makes it faster.
//
// The target's distribution is the one plain generation samples from: its logits after the
// options' logits processor (watermark, antidistillation nudges) and the sampler's temperature,
// top-k and top-p. The draft proposes from its own logits under the same sampler settings.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "lineage/model/generate.h"
#include "lineage/model/llama.h"
#include "lineage/model/sampler.h"

namespace lineage::model {

class CpuDecoder;
class CpuDecoderBatch;

// One model's incremental decoding on the CPU decoder (float32 on the CPU) or on libtorch with a KV
// cache: logits for every fed position on demand, and a rewind for rejected tokens. The draft side
// of speculative decoding, in generate_speculative and in the server's engine.
class IncrementalDecoder {
 public:
  IncrementalDecoder(Llama& model, int64_t capacity);
  ~IncrementalDecoder();
  IncrementalDecoder(IncrementalDecoder&&) noexcept;
  int64_t length() const;
  int64_t capacity() const { return capacity_; }
  // Forgets the positions from `length` on (no-op when it holds fewer).
  void rewind(int64_t length);
  // Feeds `tokens`; the logits after each of them (all) or after the last: (rows, V) row-major.
  std::vector<float> feed(std::span<const int32_t> tokens, bool all);
  // The same positions in a cache of its own (the n choices of one prompt).
  IncrementalDecoder copy() const;
  // Feeds tokens[i] to *seqs[i] (decoders of one model) in one batched step: `batch` when they are
  // CPU decoders, libtorch's decode_slots otherwise. Their logits, (n, V) float32 on the CPU.
  static torch::Tensor step(std::span<IncrementalDecoder* const> seqs, std::span<const int32_t> tokens,
                            CpuDecoderBatch& batch);

 private:
  IncrementalDecoder(Llama model, int64_t capacity, std::unique_ptr<CpuDecoder> cpu, KVCache cache);
  Llama model_;
  int64_t capacity_;
  std::unique_ptr<CpuDecoder> cpu_;
  KVCache cache_;
};

// The acceptance rule over k drafted tokens: drafts[i] was drawn from q[i], p[i] is the target's
// sampling distribution at that position. Each draft is kept with probability min(1, p/q) (one
// uniform draw from `sampler` each) until the first rejection; the verdict says how many were kept
// and, after a rejection, the residual max(0, p − q) (p itself where that has no mass) that the
// next token must be drawn from. generate_speculative and the server's engine both decide by it.
struct DraftVerdict {
  int64_t kept = 0;
  std::vector<double> residual;  // empty when every draft was kept (the next token then comes from p[k])
};
DraftVerdict judge_drafts(Sampler& sampler, const std::vector<std::vector<double>>& p,
                          const std::vector<std::vector<double>>& q, std::span<const int32_t> drafts);

struct SpeculativeStats {
  int64_t verifications = 0;  // target forward passes
  int64_t drafted = 0;        // draft tokens proposed
  int64_t accepted = 0;       // of those, kept
  int64_t emitted = 0;        // tokens generated in all
  double acceptance_rate() const { return drafted ? static_cast<double>(accepted) / drafted : 0.0; }
  // Tokens each target pass yields (accepted drafts plus the target's own token).
  double tokens_per_verification() const { return verifications ? static_cast<double>(emitted) / verifications : 0.0; }
};

// As generate(), with `draft` proposing up to `draft_tokens` tokens per target pass. The draft must
// share the target's vocabulary (same size; the caller checks the tokenizers). On the CPU in
// float32 both run on the matrix-vector decoder (cpu_decoder.h), elsewhere on libtorch with KV
// caches. `stats`, when given, accumulates the counts.
std::vector<int32_t> generate_speculative(Llama& target, Llama& draft, const std::vector<int32_t>& prompt,
                                          const GenerateOptions& options, int draft_tokens,
                                          SpeculativeStats* stats = nullptr,
                                          const std::function<bool(int32_t)>& on_token = {});

}  // namespace lineage::model
