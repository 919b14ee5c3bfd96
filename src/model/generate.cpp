// Autoregressive generation. See include/lineage/model/generate.h.
#include "lineage/model/generate.h"

#include <algorithm>

#include "lineage/core/error.h"
#include "lineage/model/cpu_decoder.h"

namespace lineage::model {

std::vector<int32_t> generate(Llama& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options,
                              const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) fail("generation needs at least one prompt token");
  const auto& cfg = model->config();
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt > cfg.max_seq_len)
    fail("prompt of {} tokens does not fit the context length {}", n_prompt, cfg.max_seq_len);
  for (int32_t id : prompt)
    if (id < 0 || id >= cfg.vocab_size) fail("prompt token id {} is outside the vocabulary of {}", id, cfg.vocab_size);

  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t capacity = std::min<int64_t>(cfg.max_seq_len, n_prompt + std::max(options.max_tokens, 0));
  Sampler sampler(options.sampling);
  std::vector<int32_t> out;
  std::vector<int32_t> context(prompt);
  if (model->device().is_cpu() && model->dtype() == torch::kFloat32) {
    // On the CPU: matrix-vector decoding (cpu_decoder.h), the same logits as the path below.
    CpuDecoder decoder(model, capacity);
    auto logits = decoder.feed(prompt);
    std::vector<float> buf;
    while (static_cast<int>(out.size()) < options.max_tokens) {
      buf.assign(logits.begin(), logits.end());
      if (options.logits_processor) options.logits_processor(context, buf);
      int32_t next = sampler.sample(buf);
      if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end()) break;
      out.push_back(next);
      context.push_back(next);
      if (on_token && !on_token(next)) break;
      if (decoder.length() >= capacity) break;  // the context is full: `next` cannot be fed back
      logits = decoder.feed(std::span<const int32_t>(&next, 1));
    }
    return out;
  }
  auto cache = model->make_cache(/*batch=*/1, capacity);

  auto last_logits = [&](const torch::Tensor& logits) {  // (1, T, V) -> CPU float (V)
    return logits.select(1, logits.size(1) - 1).squeeze(0).to(torch::kCPU, torch::kFloat32).contiguous();
  };
  auto dev = model->device();
  auto input = torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), torch::kLong)
                   .view({1, n_prompt}).to(dev);
  auto logits = last_logits(model->forward(input, &cache));

  while (static_cast<int>(out.size()) < options.max_tokens) {
    if (options.logits_processor)
      options.logits_processor(context, {logits.data_ptr<float>(), static_cast<size_t>(logits.numel())});
    int32_t next = sampler.sample({logits.data_ptr<float>(), static_cast<size_t>(logits.numel())});
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end()) break;
    out.push_back(next);
    context.push_back(next);
    if (on_token && !on_token(next)) break;
    if (cache.length >= capacity) break;  // the context is full: `next` cannot be fed back
    auto step = torch::full({1, 1}, static_cast<int64_t>(next), torch::TensorOptions().dtype(torch::kLong).device(dev));
    logits = last_logits(model->forward(step, &cache));
  }
  return out;
}

}  // namespace lineage::model
