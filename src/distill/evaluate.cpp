// Validation loss, perplexity and teacher agreement (see evaluate.h).
#include "lineage/distill/evaluate.h"

#include <cmath>

#include "lineage/distill/batch.h"
#include "lineage/distill/data_parallel.h"

namespace lineage::distill {

nlohmann::json LmEval::to_json() const {
  nlohmann::json j = {{"loss", loss}, {"ppl", perplexity}, {"accuracy", accuracy}, {"eval_tokens", tokens}};
  if (top1_agreement >= 0) j["top1_agreement"] = top1_agreement;
  if (kl >= 0) j["kl"] = kl;
  return j;
}

LmEval evaluate_lm(model::Llama& model, const TokenRows& rows, teacher::Teacher* teacher, int64_t max_rows,
                   int64_t batch_size, DataParallel* dp) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  const int64_t n = max_rows > 0 ? std::min(max_rows, rows.rows()) : rows.rows();
  double ce = 0, correct = 0, agree = 0, kl = 0;
  int64_t count = 0;
  bool with_teacher = teacher && teacher->has_logits();
  const int64_t first = dp ? dp->rank() * batch_size : 0, stride = dp ? dp->world_size() * batch_size : batch_size;
  for (int64_t start = first; start < n; start += stride) {
    std::vector<int64_t> idx;
    for (int64_t r = start; r < std::min(n, start + batch_size); ++r) idx.push_back(r);
    auto [tok, mask] = batch_of(rows, idx, model->device());
    auto input = tok.slice(1, 0, -1);
    auto target = tok.slice(1, 1).reshape({-1});
    auto m = mask.slice(1, 1).reshape({-1});
    auto logits = model->forward(input).to(torch::kFloat32);
    const int64_t V = logits.size(-1);
    auto logp = torch::log_softmax(logits.reshape({-1, V}), -1);
    auto sel = m.nonzero().squeeze(1);
    if (sel.numel() == 0) continue;
    auto lp = logp.index_select(0, sel);
    auto tg = target.index_select(0, sel);
    ce += -lp.gather(1, tg.unsqueeze(1)).sum().item<double>();
    auto top = lp.argmax(-1);
    correct += top.eq(tg).sum().item<double>();
    if (with_teacher) {
      auto tl = torch::log_softmax(teacher->logits(input).reshape({-1, V}), -1).index_select(0, sel);
      agree += tl.argmax(-1).eq(top).sum().item<double>();
      kl += (tl.exp() * (tl - lp)).sum().item<double>();
    }
    count += sel.numel();
  }
  if (dp) {
    torch::Tensor sums = torch::tensor({ce, correct, agree, kl, static_cast<double>(count)}, torch::kFloat64);
    dp->all_reduce_sum(sums);
    ce = sums[0].item<double>();
    correct = sums[1].item<double>();
    agree = sums[2].item<double>();
    kl = sums[3].item<double>();
    count = static_cast<int64_t>(std::llround(sums[4].item<double>()));
  }
  if (was_training) model->train();
  LmEval e;
  e.tokens = count;
  if (count == 0) return e;
  e.loss = ce / count;
  e.perplexity = std::exp(e.loss);
  e.accuracy = correct / count;
  if (with_teacher) {
    e.top1_agreement = agree / count;
    e.kl = kl / count;
  }
  return e;
}

}  // namespace lineage::distill
