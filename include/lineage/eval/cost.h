// What a model costs to run: parameters, file bytes, analytic FLOPs per token, measured prefill
// and decode speed, and peak host memory (resident set, Linux /proc) while loading and running it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/model/llama.h"

namespace lineage::eval {

struct CostFigures {
  int64_t parameters = 0;
  int64_t file_bytes = 0;
  double flops_per_token = 0;      // forward, at half the context (2 FLOPs per multiply-add)
  double prefill_tokens_per_s = 0; // one forward pass over `prompt_tokens`
  double decode_tokens_per_s = 0;  // greedy, one token at a time with the KV cache
  int64_t peak_rss_bytes = -1;     // growth of the resident set's high-water mark; -1 where unknown
  nlohmann::json to_json() const;
};

// Greedy decode speed of `model` in tokens/s: `tokens` new tokens after `prompt`, best of `repeats`.
// The one decode measurer: `lineage eval`'s cost figures and the end-of-distillation table use it.
double measure_decode(model::Llama& model, const std::vector<int32_t>& prompt, int tokens, int repeats);

// Speed of `model` (best of `repeats`), with `prompt` as the prefill and its first 8 tokens as the
// start of decoding.
void measure_speed(model::Llama& model, const std::vector<int32_t>& prompt, int decode_tokens, int repeats,
                   CostFigures& out);

// The resident set's high-water mark: reset() starts a new measurement (Linux 4.0+:
// /proc/self/clear_refs), peak_since_reset() is its growth over the resident set at reset.
class PeakMemory {
 public:
  void reset();
  int64_t peak_since_reset() const;  // -1 where /proc is not there
 private:
  int64_t base_ = 0;
};

}  // namespace lineage::eval
