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
  if (acceptance >= 0) j["acceptance"] = acceptance;
  return j;
}

LmEval evaluate_lm(model::Llama& model, const TokenRows& rows, teacher::Teacher* teacher, int64_t max_rows,
                   int64_t batch_size, DataParallel* dp, int64_t chunk_rows) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  const int64_t n = max_rows > 0 ? std::min(max_rows, rows.rows()) : rows.rows();
  double ce = 0, correct = 0, agree = 0, kl = 0, accept = 0;
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
    // lp (k, V) the student's log-probabilities at k scored positions, tg (k) their next tokens,
    // tl (k, V) the teacher's (undefined without one).
    auto score = [&](const torch::Tensor& lp, const torch::Tensor& tg, const torch::Tensor& tl) {
      ce += -lp.gather(1, tg.unsqueeze(1)).sum().item<double>();
      auto top = lp.argmax(-1);
      correct += top.eq(tg).sum().item<double>();
      if (tl.defined()) {
        agree += tl.argmax(-1).eq(top).sum().item<double>();
        kl += (tl.exp() * (tl - lp)).sum().item<double>();
        accept += torch::minimum(tl.exp(), lp.exp()).sum().item<double>();
      }
      count += lp.size(0);
    };
    const int64_t N = target.numel(), V = model->config().vocab_size;
    const int64_t chunk = chunk_rows < 0 ? model::logit_chunk_rows(N, V) : chunk_rows;
    if (chunk == 0 || chunk >= N) {
      auto logits = model->forward(input).to(torch::kFloat32);
      auto logp = torch::log_softmax(logits.reshape({-1, V}), -1);
      auto sel = m.nonzero().squeeze(1);
      if (sel.numel() == 0) continue;
      torch::Tensor tl;
      if (with_teacher) tl = torch::log_softmax(teacher->logits(input).reshape({-1, V}), -1).index_select(0, sel);
      score(logp.index_select(0, sel), target.index_select(0, sel), tl);
      continue;
    }
    // A large vocabulary: logits of `chunk` positions at a time, from the hidden states (and the
    // in-process teacher's, likewise).
    auto h = model->hidden(input);
    h = h.reshape({N, h.size(-1)});
    auto head = model->head_weight();
    torch::Tensor th, thead, t_all;
    if (with_teacher) {
      if (model::Llama* tm = teacher->model()) {
        th = (*tm)->hidden(input.to((*tm)->device()));
        th = th.reshape({N, th.size(-1)});
        thead = (*tm)->head_weight();
      } else {
        t_all = teacher->logits(input).reshape({N, V});
      }
    }
    for (int64_t b = 0; b < N; b += chunk) {
      const int64_t n = std::min(chunk, N - b);
      auto sel = m.narrow(0, b, n).nonzero().squeeze(1);
      if (sel.numel() == 0) continue;
      auto lp = torch::log_softmax(torch::matmul(h.narrow(0, b, n), head.t()).to(torch::kFloat32), -1).index_select(0, sel);
      torch::Tensor tl;
      if (th.defined())
        tl = torch::matmul(th.narrow(0, b, n), thead.t()).to(lp.device(), torch::kFloat32);
      else if (t_all.defined())
        tl = t_all.narrow(0, b, n).to(torch::kFloat32);
      if (tl.defined()) tl = torch::log_softmax(tl, -1).index_select(0, sel);
      score(lp, target.narrow(0, b, n).index_select(0, sel), tl);
    }
  }
  if (dp) {
    torch::Tensor sums = torch::tensor({ce, correct, agree, kl, static_cast<double>(count), accept}, torch::kFloat64);
    dp->all_reduce_sum(sums);
    ce = sums[0].item<double>();
    correct = sums[1].item<double>();
    agree = sums[2].item<double>();
    kl = sums[3].item<double>();
    count = static_cast<int64_t>(std::llround(sums[4].item<double>()));
    accept = sums[5].item<double>();
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
    e.acceptance = accept / count;
  }
  return e;
}

}  // namespace lineage::distill
