// Next-token sampling: greedy at temperature 0, otherwise temperature, top-k and top-p (nucleus,
// Holtzman et al. 2020) filtering, then a draw from a seeded generator so runs repeat.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace lineage::model {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: whole vocabulary
  float top_p = 1.0f;        // 1: no nucleus cut
  uint64_t seed = 0;
};

// Fails, naming the option, when a value is out of range.
void validate(const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: (V) scores of the next token, float32 on the CPU.
  int32_t sample(std::span<const float> logits);
  // The distribution sample() draws from, over the whole vocabulary: temperature, then top-k and
  // top-p applied as sample() applies them (zeros outside), one-hot at the argmax at temperature 0.
  std::vector<double> distribution(std::span<const float> logits) const;
  // A draw from `probs` (V, summing to ~1) and a uniform number in [0, 1), from this sampler's
  // generator: speculative decoding's randomness (model/speculative.h).
  int32_t draw(std::span<const double> probs);
  double uniform();
  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace lineage::model
