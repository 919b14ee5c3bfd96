// The options of a run that recipes, the CLI and the trainer share, kept free of libtorch so that
// the recipe reader (and its fuzz target) builds without it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace lineage::distill {

enum class Divergence { kForwardKL, kReverseKL, kJSD, kTVD };

// "forward_kl", "reverse_kl", "jsd", "tvd"; fails listing the names for anything else.
Divergence parse_divergence(const std::string& name);

struct KDOptions {
  Divergence divergence = Divergence::kForwardKL;
  double beta = 0.5;         // JSD only, in [0, 1]
  double temperature = 1.0;  // tau > 0
};

struct DataOptions {
  int64_t seq_len = 256;        // tokens the model sees per row
  double valid_fraction = 0.05; // share of examples held out
  uint64_t split_seed = 0;
  bool pack = true;
  int64_t max_examples = 0;     // 0: all
};

struct TrainOptions {
  int64_t steps = 1000;
  int64_t batch_size = 8;       // rows per micro-batch
  int64_t grad_accum = 1;       // micro-batches per optimizer step
  double lr = 1e-3;
  double min_lr = 1e-4;         // cosine floor
  int64_t warmup = 50;          // steps of linear warmup
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;            // max global grad norm; 0: off
  uint64_t seed = 1234;         // weight init, data order, sampling
  int64_t eval_every = 100;     // 0: only at the end
  int64_t checkpoint_every = 100;  // 0: only at the end
  int keep_checkpoints = 2;
  bool bf16 = false;            // autocast the forward pass to bfloat16
  bool quiet = false;           // no progress output
  // On resume, when the latest checkpoint fails its SHA256SUMS, use the newest older one that is
  // whole (--resume-previous). A choice of this resume: not saved with the options.
  bool resume_previous = false;

  nlohmann::json to_json() const;
};

}  // namespace lineage::distill
