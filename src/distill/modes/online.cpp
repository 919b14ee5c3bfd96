// online: the teacher runs on every batch — its full logits, or with --top-k its top-k, the next
// token's log-probability and draws from its tail (Random-Sampling KD, Anshumann et al. 2025).
#include "modes.h"

#include "lineage/core/error.h"

namespace lineage::distill::modes {

namespace {

class Online : public Objective {
 public:
  explicit Online(const ObjectiveContext& c) : c_(c) {
    const Recipe& r = c.recipe;
    if (r.hidden_loss.empty()) return;
    model::Llama* tm = c.teacher.model();
    if (!tm) fail("--hidden-loss needs a teacher that runs in this process (a model file), not '{}'", r.teacher);
    const auto& sc = c.student->config();
    const auto& tc = (*tm)->config();
    c_.hidden = HiddenDistill(parse_hidden_layers(r.hidden_layers, sc.n_layers, tc.n_layers), sc.dim, tc.dim,
                              parse_hidden_loss(r.hidden_loss), r.hidden_weight);
    c_.hidden->to(c.student->device());
  }
  const TokenRows& train_rows() const override { return c_.data.train; }
  std::shared_ptr<torch::nn::Module> trainable() override { return c_.hidden ? c_.hidden.ptr() : nullptr; }
  StepResult loss(const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>&, int64_t) override {
    return batch_loss(c_, tok, mask);
  }

 private:
  ObjectiveContext c_;
};

}  // namespace

std::unique_ptr<Objective> online(const ObjectiveContext& c) { return std::make_unique<Online>(c); }

}  // namespace lineage::distill::modes
