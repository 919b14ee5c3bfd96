// Autoregressive generation with a KV cache: the prompt is prefilled in one forward pass, then one
// token per step is sampled and fed back.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "lineage/model/llama.h"
#include "lineage/model/sampler.h"

namespace lineage::model {

struct GenerateOptions {
  int max_tokens = 256;            // new tokens at most (the context length also bounds it)
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;   // generation ends when one of these is sampled (not emitted)
  // Changes the next token's logits (V) before sampling, given every id so far (prompt and
  // generated), e.g. a watermark's bias (protect::Watermark).
  std::function<void(std::span<const int32_t> context, std::span<float> logits)> logits_processor;
};

// Returns the generated ids (prompt excluded). `on_token` sees each new token as it is chosen and
// may return false to stop early.
std::vector<int32_t> generate(Llama& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options,
                              const std::function<bool(int32_t)>& on_token = {});

}  // namespace lineage::model
