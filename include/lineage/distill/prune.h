// Width and depth pruning of a teacher into a student, as Minitron does it (Muralidharan et al.
// 2024, "Compact Language Models via Pruning and Knowledge Distillation"; Sreenivas et al. 2024,
// "LLM Pruning and Distillation in Practice"): the importance of every MLP neuron, attention head
// and embedding channel is read from its activations on a few calibration rows (mean |activation|
// over a row's positions, then the L2 norm over rows — the paper's best aggregation), the least
// important are cut, and the student distils from the teacher it was cut from. Depth: each
// block's importance is 1 − the mean cosine similarity of its input and output (the paper's
// block importance); the least important blocks go.
//
// Heads are pruned as grouped-query attention allows: the KV groups whose query heads matter most
// stay (each group's importance is the sum of its heads'), and within each kept group the same
// number of its most important query heads. The head size stays the teacher's, so the student's
// width is its heads × that size. Embedding channels are cut consistently everywhere the residual
// stream goes: the embedding (and the tied output), every RMSNorm weight, every projection's
// input or output. What is kept keeps its order, so pruning to the full width gives the teacher.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lineage/distill/dataset.h"
#include "lineage/model/config.h"
#include "lineage/model/llama.h"

namespace lineage::distill {

// The student's shape; 0 keeps the teacher's.
struct PruneTarget {
  int64_t dim = 0, heads = 0, kv_heads = 0, hidden = 0, layers = 0;
};

// "dim=128,heads=4,kv-heads=2,hidden=384,layers=4" (any subset; heads follows from dim when
// absent). Fails naming what is wrong.
PruneTarget parse_prune_spec(const std::string& spec);

struct Importance {
  std::vector<std::vector<double>> neurons;  // [layer][hidden_dim]
  std::vector<std::vector<double>> heads;    // [layer][n_heads]
  std::vector<double> channels;              // [dim]: summed over every RMSNorm output
  std::vector<double> layers;                // [n_layers]: 1 − mean cos(block input, output)
  int64_t rows = 0, tokens = 0;              // what it was measured on
};

// Runs `model` (no gradients) over at most `max_rows` rows of `calibration`, `batch` at a time.
Importance activation_importance(model::Llama& model, const TokenRows& calibration, int64_t max_rows, int64_t batch = 8);

// What stays, in the teacher's order: layers, and per kept layer its query heads, KV groups and
// MLP neurons; the embedding channels.
struct PrunePlan {
  model::ModelConfig config;  // the student's
  std::vector<int64_t> layers, channels;
  std::vector<std::vector<int64_t>> heads, kv_groups, neurons;  // per kept layer
};

// The plan for `target` by `importance`. Fails when the target cannot be cut from `teacher`: wider
// than it, heads not a multiple of the KV heads, a width that is not heads × the head size.
PrunePlan plan_pruning(const model::ModelConfig& teacher, const Importance& importance, const PruneTarget& target);

// The teacher's weights (own names) cut to the plan.
std::map<std::string, torch::Tensor> prune_weights(const model::ModelConfig& teacher,
                                                   const std::map<std::string, torch::Tensor>& weights,
                                                   const PrunePlan& plan);

}  // namespace lineage::distill
