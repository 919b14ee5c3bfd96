// Per-token distillation losses over a vocabulary, masked to the positions that count.
//
//   forward KL   KL(teacher || student)   Hinton et al. (2015); mode-covering
//   reverse KL   KL(student || teacher)   mode-seeking (MiniLLM, Gu et al. 2024)
//   JSD(beta)    beta*KL(t || m) + (1-beta)*KL(s || m), m = beta*t + (1-beta)*s — the generalized
//                JSD of GKD (Agarwal et al. 2024) as TRL defines it: beta=0 is forward KL and
//                beta=1 reverse KL (taken exactly at the endpoints, where the mixture degenerates)
//   TVD          (1/2) * sum |t - s|
// A temperature tau softens both distributions and scales the loss by tau^2, so gradients keep
// their size as tau changes (Hinton et al.). Top-k teachers (a cache, an API's top_logprobs) give
// k token ids with log-probabilities; the rest of the mass is one tail outcome, and the divergence
// is taken over those k+1 outcomes for both models.
#pragma once

#include <torch/torch.h>

#include <string>

namespace lineage::distill {

enum class Divergence { kForwardKL, kReverseKL, kJSD, kTVD };

// "forward_kl", "reverse_kl", "jsd", "tvd"; fails listing the names for anything else.
Divergence parse_divergence(const std::string& name);

struct KDOptions {
  Divergence divergence = Divergence::kForwardKL;
  double beta = 0.5;         // JSD only, in [0, 1]
  double temperature = 1.0;  // tau > 0
};

// Mean over masked positions of the per-token divergence, times tau^2.
//   student_logits (N, V), teacher_logits (N, V), mask (N) bool or 0/1 -> scalar
torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                      const torch::Tensor& mask, const KDOptions& options);

// The same against a top-k teacher.
//   student_logits (N, V), teacher_ids (N, K) int64, teacher_logprobs (N, K) at temperature 1,
//   mask (N) -> scalar. Temperature acts on the k+1 outcomes: q_i ∝ q_i^(1/tau).
torch::Tensor kd_loss_top_k(const torch::Tensor& student_logits, const torch::Tensor& teacher_ids,
                            const torch::Tensor& teacher_logprobs, const torch::Tensor& mask,
                            const KDOptions& options);

// Cross-entropy on hard labels, mean over masked positions.
//   logits (N, V), targets (N) int64, mask (N) -> scalar
torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& mask);

// Per-row divergence between two distributions given as log-probabilities (N, C) -> (N).
torch::Tensor divergence(const torch::Tensor& student_logp, const torch::Tensor& teacher_logp,
                         Divergence kind, double beta);

}  // namespace lineage::distill
