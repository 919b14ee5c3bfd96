// The white-box test of `lineage provenance` (Zhu, Ahmed, Kuditipudi & Liang, ICML 2025; see
// protect/provenance.h): MLP hidden units matched between two models, the matching's Spearman
// correlation with the identity, the best candidate layer per suspect layer, Fisher over layers.
#include <fmt/format.h>

#include <cmath>

#include "lineage/core/error.h"
#include "protect/provenance_internal.h"

namespace lineage::protect::provenance {

namespace {

// A layer's hidden units as rows: its gate and up rows and its down columns, each L2-normalised,
// side by side (hidden, 3 * dim).
torch::Tensor units(const std::map<std::string, torch::Tensor>& w, int64_t layer) {
  auto get = [&](const char* part) {
    auto it = w.find(fmt::format("layers.{}.feed_forward.{}.weight", layer, part));
    if (it == w.end()) fail("layer {} has no feed_forward.{} weight", layer, part);
    return it->second.to(torch::kFloat64);
  };
  auto norm = [](const torch::Tensor& rows) { return rows / rows.norm(2, 1, true).clamp_min(1e-12); };
  return torch::cat({norm(get("w1")), norm(get("w3")), norm(get("w2").t())}, 1);
}

struct LayerMatch {
  int64_t candidate_layer = -1;
  SpearmanTest test;
};

// The candidate layer whose units resemble suspect layer `u` most (mean best cosine per unit),
// then the Hungarian matching on it. Choosing the layer by another statistic than the test's and
// correcting by the number of layers keeps the p-value valid.
LayerMatch match_layer(const torch::Tensor& u, const std::vector<torch::Tensor>& cand) {
  LayerMatch best;
  double best_score = -1;
  torch::Tensor best_sim;
  for (size_t m = 0; m < cand.size(); ++m) {
    if (cand[m].size(0) != u.size(0)) continue;
    auto sim = torch::mm(u, cand[m].t()).abs();  // (h, h)
    double score = sim.amax(1).mean().item<double>();
    if (score > best_score) best_score = score, best.candidate_layer = static_cast<int64_t>(m), best_sim = sim;
  }
  if (best.candidate_layer < 0) return best;
  const int n = static_cast<int>(best_sim.size(0));
  auto cost = (-best_sim).contiguous();
  std::vector<double> c(cost.data_ptr<double>(), cost.data_ptr<double>() + cost.numel());
  best.test = spearman_identity(hungarian(c, n));
  return best;
}

}  // namespace

std::vector<ProvenanceRow> weights(Subjects& s) {
  std::vector<ProvenanceRow> rows;
  const auto* sw = s.suspect.teacher->weights();
  for (auto& cand : s.candidates) {
    ProvenanceRow row;
    row.candidate = cand.name;
    row.method = "weights";
    const auto* cw = cand.teacher->weights();
    model::Llama* sm = s.suspect.teacher->model();
    model::Llama* cm = cand.teacher->model();
    if (!sw || !cw || !sm || !cm) {
      row.applies = false;
      row.note = "needs both models' weights (files, not URLs)";
      rows.push_back(row);
      continue;
    }
    const auto &sc = (*sm)->config(), &cc = (*cm)->config();
    if (sc.dim != cc.dim) {
      row.applies = false;
      row.note = fmt::format("widths differ ({} and {}): no shared residual basis", sc.dim, cc.dim);
      rows.push_back(row);
      continue;
    }
    std::vector<torch::Tensor> cu;
    for (int64_t m = 0; m < cc.n_layers; ++m) cu.push_back(units(*cw, m));
    std::vector<double> log_p;
    std::string layers;
    double rho_sum = 0;
    for (int64_t l = 0; l < sc.n_layers; ++l) {
      LayerMatch lm = match_layer(units(*sw, l), cu);
      if (lm.candidate_layer < 0) continue;
      log_p.push_back(std::min(0.0, lm.test.log_p + std::log(static_cast<double>(cc.n_layers))));
      rho_sum += lm.test.rho;
      layers += fmt::format("{}{}->{}", layers.empty() ? "" : " ", l, lm.candidate_layer);
    }
    if (log_p.empty()) {
      row.applies = false;
      row.note = "no layer of the same MLP width";
      rows.push_back(row);
      continue;
    }
    const double lp = fisher_combine_log(log_p);
    row.value = rho_sum / static_cast<double>(log_p.size());
    row.statistic = fmt::format("mean Spearman {:.3f} over {} layers", row.value, log_p.size());
    row.p_value = std::exp(lp);
    row.log10_p = lp / std::log(10.0);
    row.queries = 0;
    row.note = "layers (suspect->candidate) " + layers;
    rows.push_back(row);
  }
  return rows;
}

}  // namespace lineage::protect::provenance
