// online: the teacher runs on every batch — its full logits, or with --top-k its top-k, the next
// token's log-probability and draws from its tail (Random-Sampling KD, Anshumann et al. 2025).
#include "modes.h"

namespace lineage::distill::modes {

namespace {

class Online : public Objective {
 public:
  explicit Online(const ObjectiveContext& c) : c_(c) {}
  const TokenRows& train_rows() const override { return c_.data.train; }
  StepResult loss(const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>&, int64_t) override {
    return batch_loss(c_, tok, mask);
  }

 private:
  ObjectiveContext c_;
};

}  // namespace

std::unique_ptr<Objective> online(const ObjectiveContext& c) { return std::make_unique<Online>(c); }

}  // namespace lineage::distill::modes
