// Antidistillation: the teacher's next-token logits nudged, token by token, by what learning that
// token would do to a proxy student. Two uses of one mechanism:
//
// - antidistillation sampling (Savani, Trockman, Feng, Schwarzschild, Robey, Finzi, Kolter 2025,
//   arXiv 2504.13146): the objective J is the proxy's loss on held-out text, so tokens whose
//   training update would raise it are favoured and the traces become poor training data;
// - antidistillation fingerprinting (Xu, Kirchenbauer, Savani, Trockman, Robey, Goldstein, Fang,
//   Kolter 2026, arXiv 2602.03812): J is the proxy's log green-list mass under a watermark key, so
//   tokens whose learning raises a student's preference for green tokens are favoured, and the
//   green-list test (detect.h, trace.h) finds the key in a student trained on the outputs.
//
// With g = ∇θ J(θ) of the proxy, once, and ĝ = g/‖g‖, the nudge of token x after prefix c is the
// directional derivative Δ(x) = ⟨∇θ log p_θ(x | c), ĝ⟩, estimated by central finite differences
// with two perturbed copies of the proxy, θ± = θ ± ε·ĝ:
//   Δ(x) ≈ (log p_θ+(x | c) − log p_θ−(x | c)) / (2ε),
// and the teacher samples from z/τ + λ·Δ (z the teacher's logits, τ the temperature). Each token
// costs two proxy forward passes, batched over the server's sequences (decode_slots). ĝ is
// normalised so that ε is a step length in weight space and λ does not scale with ‖g‖ (the
// papers leave g unnormalised: their λ and ours differ by that factor).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lineage/model/llama.h"
#include "lineage/protect/deterrence.h"

namespace lineage::text {
class Tokenizer;
}

namespace lineage::protect {

class Watermark;

struct AntidistillParams {
  double lambda = 1.0;     // weight of Δ on the logits (per unit temperature)
  double epsilon = 1e-2;   // finite-difference step along ĝ (weight-space length)
  int rows = 32;           // held-out windows per gradient estimate
  int seq_len = 128;       // tokens per window (predicted positions)
  int refresh_every = 0;   // new ĝ from a fresh draw of windows after this many requests; 0: never
  uint64_t seed = 0;       // the draw of windows
};

void validate(const AntidistillParams& p);

// What the proxy's learning should do: raise its held-out loss (sampling) or its green mass
// (fingerprinting, keyed by `green`).
struct ProxyObjective {
  enum class Kind { kHeldOutLoss, kGreenMass };
  Kind kind = Kind::kHeldOutLoss;
  std::shared_ptr<const Watermark> green;  // kGreenMass only
  std::string name() const { return kind == Kind::kHeldOutLoss ? "held-out loss" : "green mass"; }
};

// J(θ) of `net` over windows of token ids (each window: its ids predict their successors).
// kHeldOutLoss: the mean next-token cross-entropy. kGreenMass: the mean over predicted positions
// of log Σ_{v green after the context} p(v | context). Differentiable (grad mode permitting).
torch::Tensor proxy_objective(model::Llama& net, const std::vector<std::vector<int32_t>>& windows,
                              const ProxyObjective& objective);

// Non-overlapping windows of seq_len + 1 ids from a token stream (the tail that does not fill one
// is dropped). Fails, naming `source`, when not even one window fits.
std::vector<std::vector<int32_t>> token_windows(std::span<const int32_t> ids, int seq_len, const std::string& source);

class ProxyAdjuster {
 public:
  // `proxy` must share the teacher's vocabulary (the caller checks the tokenizers); it is moved in
  // and only read. `data`: the held-out windows J is estimated on (at least one).
  ProxyAdjuster(model::Llama proxy, std::vector<std::vector<int32_t>> data, ProxyObjective objective,
                AntidistillParams params);

  // One sequence's state: the two perturbed proxies' caches and the Δ for its next token.
  struct Stream {
    model::KVCache plus, minus;
    std::vector<int32_t> fed;  // ids the caches hold
    torch::Tensor delta;       // (V) float32 CPU: Δ for the token after `fed`
    uint64_t generation = 0;   // the ĝ the caches were made with
  };

  // Brings `s` to `context` (extending what it holds, or from scratch when `context` does not
  // start with it, e.g. after a context shift) and sets s.delta for the next token.
  void advance(Stream& s, std::span<const int32_t> context, int64_t capacity);
  // One new token for each stream, batched: the two proxies run once each for all of them.
  void step(const std::vector<Stream*>& streams, const std::vector<int32_t>& ids);
  // Δ after every prefix of `tokens`: (T, V) float32 CPU, row p for the token after tokens[0..p]
  // (for scoring a whole text, e.g. echoed prompt log-probabilities).
  torch::Tensor prompt_deltas(std::span<const int32_t> tokens);
  // logits (V) += λ·τ·Δ, so that after the sampler's division by τ the scores are z/τ + λΔ
  // (τ = 0, greedy: λΔ).
  void apply(const Stream& s, std::span<float> logits, double temperature) const;

  // A request started; after refresh_every of them, a fresh ĝ (streams made before it are
  // re-fed at their next step).
  void count_request();
  // A new ĝ from a fresh draw of params().rows windows (seeded by the draw count).
  void refresh();

  const AntidistillParams& params() const { return params_; }
  const ProxyObjective& objective() const { return objective_; }
  double gradient_norm() const { return grad_norm_; }
  double objective_value() const { return objective_value_; }
  int64_t vocab_size() const;
  int64_t context_length() const;
  // The proxy and its two perturbed copies (for tests).
  model::Llama& proxy() { return proxy_; }
  model::Llama& plus() { return plus_; }
  model::Llama& minus() { return minus_; }

 private:
  void set_direction(const std::vector<std::vector<int32_t>>& windows);
  torch::Tensor delta_rows(const torch::Tensor& plus_logits, const torch::Tensor& minus_logits) const;

  model::Llama proxy_{nullptr}, plus_{nullptr}, minus_{nullptr};
  std::vector<std::vector<int32_t>> data_;
  ProxyObjective objective_;
  AntidistillParams params_;
  double grad_norm_ = 0, objective_value_ = 0;
  uint64_t generation_ = 0, draws_ = 0;
  int64_t requests_ = 0;
};

// One position's adjusted scores, as a sampler sees them: each adjuster's nudge (its stream brought to
// `context`), then the watermark's bias when one is given. logits (V) are changed in place.
void adjust_logits(const std::vector<std::shared_ptr<ProxyAdjuster>>& adjusters,
                   std::vector<ProxyAdjuster::Stream>& streams, const Watermark* watermark,
                   std::span<const int32_t> context, std::span<float> logits, double temperature, int64_t capacity);

// Held-out windows for J when the owner has no held-out text: `rows` samples the teacher writes
// itself from its BOS (temperature 1, seeded), seq_len + 1 ids each.
std::vector<std::vector<int32_t>> teacher_sample_windows(model::Llama& teacher, const text::Tokenizer& tok, int rows,
                                                         int seq_len, uint64_t seed);

// Loads a proxy model for a teacher: fails, naming the file, when its vocabulary is not the
// teacher's (the same size, and the same tokenizer digest where the proxy carries a tokenizer) or
// its context is shorter than `min_context`.
model::Llama load_proxy(const std::string& path, const text::Tokenizer& teacher_tokenizer, int64_t min_context,
                        torch::Device device, torch::Dtype dtype);

// Held-out windows for J from a plain-text file, tokenized whole with the teacher's tokenizer.
std::vector<std::vector<int32_t>> file_windows(const std::string& path, const text::Tokenizer& tok, int seq_len);

// The adjusters `options` asks for (antidistillation first, then the fingerprint), their proxies
// loaded on `device` in `dtype` and their gradients taken. Fails naming the flag or file at fault.
// Unless `quiet`, one line each on stderr (never the key, only its fingerprint).
std::vector<std::shared_ptr<ProxyAdjuster>> make_adjusters(const DeterrenceOptions& options, model::Llama& teacher,
                                                           const text::Tokenizer& tok, torch::Device device,
                                                           torch::Dtype dtype, bool quiet);

}  // namespace lineage::protect
