// Hyper-parameters of a Llama-family decoder (Llama 1-3, Mistral-style GQA, Qwen2 with QKV bias).
// Kept free of libtorch so that format readers and the CLI can pass it around cheaply.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace lineage::model {

struct ModelConfig {
  std::string arch = "llama";  // "llama" or "qwen2" (qwen2 = llama + QKV bias)
  int64_t vocab_size = 0;
  int64_t dim = 0;          // hidden size (n_embd)
  int64_t hidden_dim = 0;   // SwiGLU inner size (intermediate_size)
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;   // grouped-query attention: n_heads % n_kv_heads == 0
  int64_t max_seq_len = 0;  // context length
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;  // output projection shares the token embedding
  bool qkv_bias = false;        // Qwen2 adds biases to q, k, v projections

  int64_t head_dim() const { return dim / n_heads; }
  int64_t kv_dim() const { return head_dim() * n_kv_heads; }

  // Fails with `source` and the offending field when the numbers cannot form a model.
  void validate(const std::string& source) const;
  int64_t num_parameters() const;
  // Analytic forward FLOPs per token at context position `context` (2 per multiply-add).
  double flops_per_token(int64_t context) const;
};

nlohmann::json to_json(const ModelConfig& c);
ModelConfig config_from_json(const nlohmann::json& j, const std::string& source);

}  // namespace lineage::model
