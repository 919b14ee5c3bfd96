// Hidden-state distillation (see hidden_loss.h).
#include "lineage/distill/hidden_loss.h"

#include <fmt/format.h>

#include <sstream>

#include "lineage/core/error.h"

namespace lineage::distill {

HiddenLoss parse_hidden_loss(const std::string& name) {
  if (name == "cosine") return HiddenLoss::kCosine;
  if (name == "mse") return HiddenLoss::kMse;
  fail("--hidden-loss must be cosine or mse, got '{}'", name);
}

std::vector<std::pair<int64_t, int64_t>> parse_hidden_layers(const std::string& spec, int64_t student_layers,
                                                             int64_t teacher_layers) {
  std::vector<std::pair<int64_t, int64_t>> out;
  if (spec.empty()) {
    for (int64_t i = 0; i < student_layers; ++i)
      out.push_back({i, ((i + 1) * teacher_layers + student_layers - 1) / student_layers - 1});
    return out;
  }
  std::stringstream ss(spec);
  std::string item;
  auto bad = [&](const std::string& why) {
    fail("--hidden-layers '{}': {} (expected student:teacher block pairs like '1:2,3:5')", spec, why);
  };
  while (std::getline(ss, item, ',')) {
    const auto colon = item.find(':');
    if (colon == std::string::npos) bad("'" + item + "' has no ':'");
    int64_t s = 0, t = 0;
    try {
      size_t a = 0, b = 0;
      s = std::stoll(item.substr(0, colon), &a);
      t = std::stoll(item.substr(colon + 1), &b);
      if (a != colon || b != item.size() - colon - 1) throw std::invalid_argument(item);
    } catch (const std::logic_error&) {
      bad("'" + item + "' is not two block numbers");
    }
    if (s < 0 || s >= student_layers) bad(fmt::format("the student has blocks 0..{}, not {}", student_layers - 1, s));
    if (t < 0 || t >= teacher_layers) bad(fmt::format("the teacher has blocks 0..{}, not {}", teacher_layers - 1, t));
    out.push_back({s, t});
  }
  if (out.empty()) bad("no pairs");
  return out;
}

torch::Tensor hidden_state_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& mask, HiddenLoss kind) {
  TORCH_CHECK(s.sizes() == t.sizes() && s.dim() == 2, "hidden states must be (N, C) alike, got ", s.sizes(), " and ", t.sizes());
  auto m = mask.to(s.scalar_type()).reshape({-1});
  auto per = kind == HiddenLoss::kCosine ? 1.0 - torch::cosine_similarity(s, t, -1, 1e-8)
                                         : (s - t).pow(2).mean(-1);  // (N)
  return (per * m).sum() / m.sum().clamp_min(1.0);
}

HiddenDistillImpl::HiddenDistillImpl(std::vector<std::pair<int64_t, int64_t>> pairs, int64_t student_dim, int64_t teacher_dim,
                                     HiddenLoss kind, double weight)
    : pairs_(std::move(pairs)), kind_(kind), weight_(weight) {
  if (student_dim != teacher_dim) {
    projections_ = register_module("projections", torch::nn::ModuleList());
    for (size_t i = 0; i < pairs_.size(); ++i)
      projections_->push_back(torch::nn::Linear(torch::nn::LinearOptions(student_dim, teacher_dim).bias(false)));
  }
}

torch::Tensor HiddenDistillImpl::loss(const std::map<int64_t, torch::Tensor>& student,
                                      const std::map<int64_t, torch::Tensor>& teacher, const torch::Tensor& mask) {
  torch::Tensor total;
  for (size_t i = 0; i < pairs_.size(); ++i) {
    auto s_it = student.find(pairs_[i].first);
    auto t_it = teacher.find(pairs_[i].second);
    if (s_it == student.end() || t_it == teacher.end())
      fail("hidden-state loss: block {} of the student or {} of the teacher was not seen", pairs_[i].first, pairs_[i].second);
    auto s = s_it->second.reshape({-1, s_it->second.size(-1)}).to(torch::kFloat32);
    if (projections_) s = projections_->ptr<torch::nn::LinearImpl>(i)->forward(s);
    auto t = t_it->second.reshape({-1, t_it->second.size(-1)}).to(s.device(), torch::kFloat32);
    auto l = hidden_state_loss(s, t, mask.to(s.device()), kind_);
    total = total.defined() ? total + l : l;
  }
  return weight_ * total / static_cast<double>(pairs_.size());
}

}  // namespace lineage::distill
