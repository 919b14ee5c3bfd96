// offline: top-k + tail from a teacher cache made by `lineage cache` (teacher/cache.h), keyed by
// the batch's rows; no teacher forward passes. The cache must be the same teacher's, tokenizer's
// and data's, at the same context length.
#include "lineage/teacher/cache.h"
#include "modes.h"

namespace lineage::distill::modes {

namespace {

class Offline : public Objective {
 public:
  explicit Offline(const ObjectiveContext& c) : c_(c), cache_(c.recipe.cache) {
    const auto& info = c.teacher.info();
    cache_.check(info.sha256, info.tokenizer_sha256, "train", c.data.train.digest(), c.recipe.data_options.seq_len);
  }
  const TokenRows& train_rows() const override { return c_.data.train; }
  StepResult loss(const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>& rows, int64_t) override {
    StepResult res;
    res.tokens = tok.size(0) * (tok.size(1) - 1);
    auto target = tok.slice(1, 1).reshape({-1});
    auto m = mask.slice(1, 1).reshape({-1});
    auto s_logits = c_.student->forward(tok.slice(1, 0, -1));
    res.loss = kd_and_ce(c_.recipe, s_logits, target, m,
                         [&](const torch::Tensor& s) {
                           return kd_loss_sparse(s, sparse(cache_.rows("train", rows, s.device()), target), m, c_.recipe.kd);
                         },
                         res);
    return res;
  }

 private:
  ObjectiveContext c_;
  teacher::TeacherCache cache_;
};

}  // namespace

std::unique_ptr<Objective> offline(const ObjectiveContext& c) { return std::make_unique<Offline>(c); }

}  // namespace lineage::distill::modes
