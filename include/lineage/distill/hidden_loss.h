// Hidden-state distillation (TinyBERT, Jiao et al. 2020; DistillKit's hidden-state mode): beside the
// logit loss, the student's residual stream after chosen blocks is matched to the teacher's after
// theirs — through a learned linear projection (student width → teacher width) when the widths
// differ, trained with the student and saved beside it (hidden_projection.pt), never exported.
//   loss = weight × mean over pairs of  mean over counted positions of
//          cosine: 1 − cos(P s, t)        mse: mean over channels of (P s − t)²
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lineage::distill {

enum class HiddenLoss { kCosine, kMse };
HiddenLoss parse_hidden_loss(const std::string& name);  // "cosine" or "mse"

// "S:T,S:T" (student block S's output against teacher block T's), or "" for the default: every
// student block, block i against teacher block ⌈(i + 1) · Lt / Ls⌉ − 1 (the last against the last).
std::vector<std::pair<int64_t, int64_t>> parse_hidden_layers(const std::string& spec, int64_t student_layers,
                                                             int64_t teacher_layers);

// One pair's loss: s (N, C) projected student states, t (N, C) teacher states, mask (N) of the
// positions that count (float or bool). Mean over counted positions (0 when none count).
torch::Tensor hidden_state_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& mask, HiddenLoss kind);

class HiddenDistillImpl : public torch::nn::Module {
 public:
  HiddenDistillImpl(std::vector<std::pair<int64_t, int64_t>> pairs, int64_t student_dim, int64_t teacher_dim,
                    HiddenLoss kind, double weight);
  const std::vector<std::pair<int64_t, int64_t>>& pairs() const { return pairs_; }
  // weight × the mean pair loss; states by block (B, T, C), mask (B*T).
  torch::Tensor loss(const std::map<int64_t, torch::Tensor>& student, const std::map<int64_t, torch::Tensor>& teacher,
                     const torch::Tensor& mask);

 private:
  std::vector<std::pair<int64_t, int64_t>> pairs_;
  HiddenLoss kind_;
  double weight_;
  torch::nn::ModuleList projections_{nullptr};  // one per pair when the widths differ
};
TORCH_MODULE(HiddenDistill);

}  // namespace lineage::distill
