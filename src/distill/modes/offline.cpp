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
    auto by_row = [&] {
      teacher::TopKRequest req;
      req.split = "train";
      req.rows = rows;
      return sparse(c_.teacher.top_k(tok, req), target);
    };
    if (int64_t chunk = chunk_rows(c_.recipe, target.numel(), c_.student->config().vocab_size); chunk > 0) {
      res.loss = chunked_kd_and_ce(c_, tok.slice(1, 0, -1), target, m, by_row, chunk, res);
      return res;
    }
    auto s_logits = c_.student->forward(tok.slice(1, 0, -1));
    res.loss = kd_and_ce(c_.recipe, s_logits, target, m,
                         [&](const torch::Tensor& s) { return kd_loss_sparse(s, by_row(), m, c_.recipe.kd); },
                         res);
    return res;
  }

 private:
  ObjectiveContext c_;
};

}  // namespace

std::unique_ptr<Objective> offline(const ObjectiveContext& c) { return std::make_unique<Offline>(c); }

}  // namespace lineage::distill::modes
