// One table maps every weight's own name (model/llama.h) to its name in each format, so that
// converters are lookups rather than code paths. Rows marked for RoPE hold q/k projections whose
// rows are permuted between the interleaved layout (Meta, llama2.c, GGUF "llama") and the
// rotate-half layout the model uses (Hugging Face).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

#include "lineage/model/config.h"

namespace lineage::io {

enum class Naming { kOwn, kHf, kGguf };

// Translates between namings; nullopt for a name that belongs to no row.
std::optional<std::string> rename_weight(const std::string& name, Naming from, Naming to);

// Number of heads whose rows a RoPE permutation of weight `own_name` regroups (n_heads for wq,
// n_kv_heads for wk, 0 for every other weight).
int64_t rope_heads(const std::string& own_name, const model::ModelConfig& c);

// w (heads * head_dim, ...) with pairs (2i, 2i+1) -> pairs (i, i + head_dim/2), and back.
torch::Tensor rope_interleaved_to_half(const torch::Tensor& w, int64_t heads);
torch::Tensor rope_half_to_interleaved(const torch::Tensor& w, int64_t heads);

}  // namespace lineage::io
