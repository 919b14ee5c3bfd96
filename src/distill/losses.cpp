// Distillation losses. Definitions and sources in include/lineage/distill/losses.h.
#include "lineage/distill/losses.h"

#include <cmath>

#include "lineage/core/error.h"

namespace lineage::distill {

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

torch::Tensor kd_loss_sparse(const torch::Tensor& student_logits, const SparseTeacher& st, const torch::Tensor& mask,
                             const KDOptions& o) {
  check_options(o);
  const int64_t N = student_logits.size(0), V = student_logits.size(-1);
  if (st.ids.sizes() != st.logprobs.sizes() || st.ids.dim() != 2 || st.ids.size(0) != N)
    fail("top-k teacher ids ({}) and log-probabilities ({}) must be (N, K) for N = {} positions",
         fmt::join(st.ids.sizes(), ", "), fmt::join(st.logprobs.sizes(), ", "), N);
  const int64_t K = st.ids.size(1);
  if (K > V) fail("top-k of {} exceeds the vocabulary of {}", K, V);
  if (st.next.defined() != st.next_logprobs.defined())
    fail("the next tokens and the teacher's log-probabilities of them come together (one was given without the other)");
  if (st.next.defined() && (st.next.numel() != N || st.next_logprobs.numel() != N))
    fail("next tokens ({}) and their teacher log-probabilities ({}) must hold N = {} positions", st.next.numel(),
         st.next_logprobs.numel(), N);
  if (st.tail_ids.defined() && (st.tail_ids.dim() != 2 || st.tail_ids.size(0) != N))
    fail("tail draws ({}) must be (N, M) for N = {} positions", fmt::join(st.tail_ids.sizes(), ", "), N);
  // An outcome that does not exist gets this log-probability: exp() is exactly 0 in float32, and
  // unlike -inf it never makes 0 * inf in a gradient.
  constexpr double kAbsent = -1e4;
  // (N, C) -> (N, 1) log(1 - sum p), never log 0 of a negative. In float64: when the k outcomes hold
  // nearly all the mass (a sure teacher), 1 - sum p in float32 keeps one or two digits of the rest
  // (found against the float64 reference, tests/distill/losses_reference_test.cpp).
  auto rest_of = [](const torch::Tensor& logp) {
    return torch::log1p(-logp.to(torch::kFloat64).exp().sum(-1, true).clamp_max(1.0 - 1e-12)).to(logp.scalar_type());
  };
  auto s_full = torch::log_softmax(student_logits.to(torch::kFloat32), -1);  // (N, V)
  auto t = st.logprobs.to(torch::kFloat32);                                   // (N, K)
  auto s = s_full.gather(-1, st.ids);                                         // (N, K)
  if (st.next.defined()) {
    // The next token as its own outcome when the top k leave it out.
    auto next = st.next.reshape({N, 1}).to(torch::kLong);
    auto outside = (st.ids != next).all(-1, true);  // (N, 1)
    auto absent = torch::full({N, 1}, kAbsent, t.options());
    t = torch::cat({t, torch::where(outside, st.next_logprobs.reshape({N, 1}).to(torch::kFloat32), absent)}, -1);
    s = torch::cat({s, torch::where(outside, s_full.gather(-1, next), absent)}, -1);
  }
  const bool draws = st.tail_ids.defined() && st.tail_ids.size(1) > 0 &&
                     o.divergence == Divergence::kForwardKL && o.temperature == 1.0;
  if (draws) {
    // The rest of the teacher's mass, 1/m of it on each drawn token; the student's own
    // probabilities of those tokens, from its full distribution. A token drawn twice counts twice.
    const int64_t M = st.tail_ids.size(1);
    auto rest = rest_of(t).clamp_min(kAbsent) - std::log(static_cast<double>(M));
    t = torch::cat({t, rest.expand({N, M})}, -1);
    s = torch::cat({s, s_full.gather(-1, st.tail_ids.to(torch::kLong))}, -1);
    return masked_mean(kl(t, s), mask);
  }
  t = torch::cat({t, rest_of(t)}, -1);
  s = torch::cat({s, rest_of(s)}, -1);
  if (o.temperature != 1.0) {
    t = torch::log_softmax(t / o.temperature, -1);
    s = torch::log_softmax(s / o.temperature, -1);
  }
  return masked_mean(divergence(s, t, o.divergence, o.beta), mask) * (o.temperature * o.temperature);
}

torch::Tensor kd_loss_top_k(const torch::Tensor& student_logits, const torch::Tensor& teacher_ids,
                            const torch::Tensor& teacher_logprobs, const torch::Tensor& mask, const KDOptions& o) {
  SparseTeacher st;
  st.ids = teacher_ids;
  st.logprobs = teacher_logprobs;
  return kd_loss_sparse(student_logits, st, mask, o);
}

torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& mask) {
  auto per_token = torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return masked_mean(per_token, mask);
}

}  // namespace lineage::distill
