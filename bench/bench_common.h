// Shared bits of the benchmark binaries: wall-clock timing, the one JSON line each prints, and the
// training benches' model.
#pragma once

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "lineage/model/config.h"

namespace lineage::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline void emit(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

// The training and distillation benches' model: 10.4M parameters, 4,096-token vocabulary (the
// PyTorch peer in ../shared/peers builds the same).
inline model::ModelConfig step_bench_config(int64_t context) {
  model::ModelConfig c;
  c.vocab_size = 4096;
  c.dim = 320;
  c.hidden_dim = 864;
  c.n_layers = 8;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.max_seq_len = context;
  c.tie_embeddings = true;
  return c;
}

}  // namespace lineage::bench
