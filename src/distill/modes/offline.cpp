// offline: top-k + tail from a teacher that answers by row — a teacher cache made by
// `lineage cache` (teacher::CachedTeacher); no teacher forward passes. The cache must be the same
// teacher's, tokenizer's and data's, at the same context length.
#include "lineage/core/error.h"
#include "modes.h"

namespace lineage::distill::modes {

namespace {

class Offline : public Objective {
 public:
  explicit Offline(const ObjectiveContext& c) : c_(c) {
    if (!c.teacher.abilities().by_row)
      fail("--mode offline reads a teacher cache: give --cache DIR (make one with `lineage cache`)");
    c.teacher.expect_rows("train", c.data.train.digest(), c.recipe.data_options.seq_len);
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
                           teacher::TopKRequest by_row;
                           by_row.split = "train";
                           by_row.rows = rows;
                           auto top = c_.teacher.top_k(tok, by_row);
                           return kd_loss_sparse(s, sparse(top, target), m, c_.recipe.kd);
                         },
                         res);
    return res;
  }

 private:
  ObjectiveContext c_;
};

}  // namespace

std::unique_ptr<Objective> offline(const ObjectiveContext& c) { return std::make_unique<Offline>(c); }

}  // namespace lineage::distill::modes
