// The student: a fresh model from a config (vocabulary from the teacher), a model file, or the
// teacher itself with a subset of its layers (DistilBERT, Sanh et al. 2019, kept every second
// layer; Minitron, Muralidharan et al. 2024, prunes depth the same way before distilling).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "lineage/model/config.h"
#include "lineage/model/llama.h"

namespace lineage::distill {

// "every:2" -> {0, 2, 4, ...} of n_layers; "0,3,5" -> as written. Fails on a bad or out-of-range spec.
std::vector<int64_t> parse_layer_selection(const std::string& spec, int64_t n_layers);

// The teacher's config with only `layers`, and its weights renamed to the student's layer numbers.
model::ModelConfig select_layers_config(const model::ModelConfig& teacher, const std::vector<int64_t>& layers);
std::map<std::string, torch::Tensor> select_layers_weights(const std::map<std::string, torch::Tensor>& teacher,
                                                           const std::vector<int64_t>& layers);

}  // namespace lineage::distill
