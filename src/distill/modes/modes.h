// Private to the distillation modes: one constructor per mode, and the loss they share
// (knowledge distillation against a teacher signal, mixed with cross-entropy by alpha).
#pragma once
#include <torch/torch.h>

#include "lineage/distill/losses.h"
#include "lineage/distill/objective.h"
#include "lineage/teacher/teacher.h"

namespace lineage::distill::modes {

std::unique_ptr<Objective> online(const ObjectiveContext& c);
std::unique_ptr<Objective> offline(const ObjectiveContext& c);
std::unique_ptr<Objective> seq_kd(const ObjectiveContext& c);
std::unique_ptr<Objective> on_policy(const ObjectiveContext& c);

// A teacher's top-k answer for a batch, flattened to positions, with the tokens that come next.
SparseTeacher sparse(const teacher::TopK& top, const torch::Tensor& next);

// The KD term against the teacher run on `input` (B, T): its full logits, or with --top-k its
// top-k, the next tokens' log-probabilities and tail draws seeded by the step.
// s (B*T, V) float32 student logits, target (B*T) next tokens, mask (B*T).
torch::Tensor teacher_kd(const ObjectiveContext& c, const torch::Tensor& s, const torch::Tensor& input,
                         const torch::Tensor& target, const torch::Tensor& mask);

// alpha * KD + (1 - alpha) * CE on one batch; `kd` gives the KD term (called only when alpha > 0).
// s_logits (B, T, V), target (B*T), mask (B*T). Logs "kd" and "ce" into res.stats.
torch::Tensor kd_and_ce(const Recipe& r, const torch::Tensor& s_logits, const torch::Tensor& target, const torch::Tensor& mask,
                        const std::function<torch::Tensor(const torch::Tensor& s)>& kd, StepResult& res);

// Rows per chunk of the loss for N positions (0: unchunked), from --kd-chunk-rows.
int64_t chunk_rows(const Recipe& r, int64_t positions, int64_t vocab);

// The chunked objective (chunked_loss.h) on one batch, the student run to its hidden states:
// input (B, T), target (B*T), mask (B*T). `sparse_teacher`, when given, is the teacher's sparse
// answer for the batch; otherwise the teacher's full logits are made chunk by chunk (from its
// hidden states when it runs in-process). `alpha` below 0 takes the recipe's. Logs "kd" and "ce"
// into res.stats.
// `student_sees` and `teacher_sees`, when given, watch the two models' forward passes.
torch::Tensor chunked_kd_and_ce(const ObjectiveContext& c, const torch::Tensor& input, const torch::Tensor& target,
                                const torch::Tensor& mask, const std::function<SparseTeacher()>& sparse_teacher, int64_t chunk,
                                StepResult& res, double alpha = -1, model::ActivationObserver* student_sees = nullptr,
                                model::ActivationObserver* teacher_sees = nullptr);

// The loss of a batch of training rows against the teacher run on it (online, and seq_kd on the
// teacher's completions): tokens (B, T+1), mask (B, T+1).
StepResult batch_loss(const ObjectiveContext& c, const torch::Tensor& tokens, const torch::Tensor& mask);

}  // namespace lineage::distill::modes
