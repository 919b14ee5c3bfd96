// The shared run options (see options.h).
#include "lineage/distill/options.h"

#include "lineage/core/error.h"

namespace lineage::distill {

using json = nlohmann::json;

Divergence parse_divergence(const std::string& name) {
  if (name == "forward_kl" || name == "kl") return Divergence::kForwardKL;
  if (name == "reverse_kl") return Divergence::kReverseKL;
  if (name == "jsd") return Divergence::kJSD;
  if (name == "tvd") return Divergence::kTVD;
  fail("unknown loss '{}', expected forward_kl, reverse_kl, jsd or tvd", name);
}

json TrainOptions::to_json() const {
  return {{"steps", steps},       {"batch_size", batch_size}, {"grad_accum", grad_accum},
          {"lr", lr},             {"min_lr", min_lr},         {"warmup", warmup},
          {"weight_decay", weight_decay}, {"beta1", beta1},   {"beta2", beta2},
          {"eps", eps},           {"clip", clip},             {"seed", seed},
          {"eval_every", eval_every}, {"checkpoint_every", checkpoint_every}, {"bf16", bf16}};
}

}  // namespace lineage::distill
