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
// is taken over those k+1 outcomes for both models. Where the teacher also gives the log-probability
// of the token that actually comes next (the cache stores it; an API echoing the prompt returns
// it), that token is its own outcome when it is outside the top k. Top-k alone is a biased picture
// of the teacher (Anshumann et al. 2025): the student learns nothing of how the tail is shaped.
// With the embedded teacher, whose top 20 hold ~78% of the mass, top-20 + tail left the student
// ~12% above full-vocabulary KD in perplexity; tail draws (below) remove that bias.
#pragma once

#include <torch/torch.h>

#include <string>

#include "lineage/distill/options.h"

namespace lineage::distill {

// Mean over masked positions of the per-token divergence, times tau^2.
//   student_logits (N, V), teacher_logits (N, V), mask (N) bool or 0/1 -> scalar
torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                      const torch::Tensor& mask, const KDOptions& options);

// A sparse teacher signal for N positions (a cache's records, an API's top_logprobs).
struct SparseTeacher {
  torch::Tensor ids;            // (N, K) int64, the teacher's top k
  torch::Tensor logprobs;       // (N, K) their log-probabilities at temperature 1
  torch::Tensor next;           // (N) int64 the token that comes next    } optional,
  torch::Tensor next_logprobs;  // (N) the teacher's log-probability of it } together
  torch::Tensor tail_ids;       // (N, M) int64 draws from the teacher outside ids and next; optional
};

// The divergence against a sparse teacher, mean over masked positions, times tau^2.
// Outcomes: the k listed tokens; the next token when outside them; the rest of the mass. With
// tail draws, forward KL at tau = 1 spreads the rest over the m drawn tokens (1/m of it each): the
// loss is then an estimate whose gradient is, in expectation, the full-vocabulary gradient
// (Random-Sampling KD, Anshumann et al. 2025). Other divergences and temperatures keep the rest as
// one outcome (a draw's weight would need the teacher's tempered probabilities, which are unknown).
// Temperature acts on the outcomes: q_i ∝ q_i^(1/tau).
torch::Tensor kd_loss_sparse(const torch::Tensor& student_logits, const SparseTeacher& teacher,
                             const torch::Tensor& mask, const KDOptions& options);

// kd_loss_sparse with the top k alone: k+1 outcomes.
//   student_logits (N, V), teacher_ids (N, K) int64, teacher_logprobs (N, K), mask (N) -> scalar
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
