// Distillation losses. Definitions and sources in include/lineage/distill/losses.h.
#include "lineage/distill/losses.h"

#include <cmath>

#include "lineage/core/error.h"

namespace lineage::distill {

Divergence parse_divergence(const std::string& name) {
  if (name == "forward_kl" || name == "kl") return Divergence::kForwardKL;
  if (name == "reverse_kl") return Divergence::kReverseKL;
  if (name == "jsd") return Divergence::kJSD;
  if (name == "tvd") return Divergence::kTVD;
  fail("unknown loss '{}', expected forward_kl, reverse_kl, jsd or tvd", name);
}

namespace {

// sum_i p_i (log p_i - log q_i) per row, with 0 * log 0 = 0.
torch::Tensor kl(const torch::Tensor& logp, const torch::Tensor& logq) {
  auto p = logp.exp();
  return torch::where(p > 0, p * (logp - logq), torch::zeros_like(p)).sum(-1);
}

void check_options(const KDOptions& o) {
  if (!(o.temperature > 0)) fail("temperature must be > 0, got {}", o.temperature);
  if (!(o.beta >= 0 && o.beta <= 1)) fail("beta must be in [0, 1], got {}", o.beta);
}

torch::Tensor masked_mean(const torch::Tensor& per_token, const torch::Tensor& mask) {
  auto m = mask.to(per_token.scalar_type());
  return (per_token * m).sum() / m.sum().clamp_min(1.0);
}

}  // namespace

torch::Tensor divergence(const torch::Tensor& s, const torch::Tensor& t, Divergence kind, double beta) {
  switch (kind) {
    case Divergence::kForwardKL: return kl(t, s);
    case Divergence::kReverseKL: return kl(s, t);
    case Divergence::kTVD: return 0.5 * (t.exp() - s.exp()).abs().sum(-1);
    case Divergence::kJSD: {
      if (beta == 0.0) return kl(t, s);
      if (beta == 1.0) return kl(s, t);
      auto m = torch::logsumexp(torch::stack({s + std::log(1.0 - beta), t + std::log(beta)}), 0);
      return beta * kl(t, m) + (1.0 - beta) * kl(s, m);
    }
  }
  fail("unknown divergence");
}

torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                      const torch::Tensor& mask, const KDOptions& o) {
  check_options(o);
  if (student_logits.sizes() != teacher_logits.sizes())
    fail("student logits ({}) and teacher logits ({}) differ in shape", fmt::join(student_logits.sizes(), ", "),
         fmt::join(teacher_logits.sizes(), ", "));
  auto s = torch::log_softmax(student_logits.to(torch::kFloat32) / o.temperature, -1);
  auto t = torch::log_softmax(teacher_logits.to(torch::kFloat32) / o.temperature, -1);
  return masked_mean(divergence(s, t, o.divergence, o.beta), mask) * (o.temperature * o.temperature);
}

torch::Tensor kd_loss_top_k(const torch::Tensor& student_logits, const torch::Tensor& teacher_ids,
                            const torch::Tensor& teacher_logprobs, const torch::Tensor& mask, const KDOptions& o) {
  check_options(o);
  const int64_t V = student_logits.size(-1);
  if (teacher_ids.sizes() != teacher_logprobs.sizes() || teacher_ids.size(0) != student_logits.size(0))
    fail("top-k teacher ids ({}) and log-probabilities ({}) must be (N, K) for N = {} positions",
         fmt::join(teacher_ids.sizes(), ", "), fmt::join(teacher_logprobs.sizes(), ", "), student_logits.size(0));
  if (teacher_ids.size(1) > V) fail("top-k of {} exceeds the vocabulary of {}", teacher_ids.size(1), V);
  // (k+1)-outcome distributions: the k listed tokens, then everything else.
  auto tail_of = [](const torch::Tensor& logp) {  // (N, K) -> (N, 1) log(1 - sum p), never log 0 of a negative
    return torch::log1p(-logp.exp().sum(-1, true).clamp_max(1.0 - 1e-7));
  };
  auto t = teacher_logprobs.to(torch::kFloat32);
  t = torch::cat({t, tail_of(t)}, -1);                                             // (N, K+1)
  auto s_full = torch::log_softmax(student_logits.to(torch::kFloat32), -1);        // (N, V)
  auto s = s_full.gather(-1, teacher_ids);
  s = torch::cat({s, tail_of(s)}, -1);                                             // (N, K+1)
  if (o.temperature != 1.0) {
    t = torch::log_softmax(t / o.temperature, -1);
    s = torch::log_softmax(s / o.temperature, -1);
  }
  return masked_mean(divergence(s, t, o.divergence, o.beta), mask) * (o.temperature * o.temperature);
}

torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& mask) {
  auto per_token = torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return masked_mean(per_token, mask);
}

}  // namespace lineage::distill
