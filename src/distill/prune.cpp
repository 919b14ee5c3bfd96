// Width and depth pruning (see prune.h).
#include "lineage/distill/prune.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <sstream>

#include "lineage/core/error.h"

namespace lineage::distill {

namespace {

// Sums, per unit, of the squares of each row's mean |activation| over its positions (the L2 norm
// over rows is the root of the sum, taken at the end).
struct Accumulator : model::ActivationObserver {
  explicit Accumulator(const model::ModelConfig& c)
      : channel_sq(torch::zeros({c.dim}, torch::kFloat64)), cosine(c.n_layers, 0.0) {
    for (int64_t l = 0; l < c.n_layers; ++l) {  // a tensor each (copies of one handle would share it)
      neuron_sq.push_back(torch::zeros({c.hidden_dim}, torch::kFloat64));
      head_sq.push_back(torch::zeros({c.n_heads}, torch::kFloat64));
    }
  }

  static torch::Tensor row_means(const torch::Tensor& a) {  // (B, T, X) -> (B, X): mean |a| over T
    return a.abs().to(torch::kFloat64).mean(1);
  }
  void normed(int64_t, int, const torch::Tensor& y) override { channel_sq += row_means(y).pow(2).sum(0).cpu(); }
  void heads(int64_t layer, const torch::Tensor& out) override {  // (B, H, T, hd): each head's output norm
    head_sq[layer] += out.to(torch::kFloat64).norm(2, -1).mean(-1).pow(2).sum(0).cpu();
  }
  void mlp(int64_t layer, const torch::Tensor& inner) override { neuron_sq[layer] += row_means(inner).pow(2).sum(0).cpu(); }
  void block(int64_t layer, const torch::Tensor& in, const torch::Tensor& out) override {
    cosine[layer] += torch::cosine_similarity(in.to(torch::kFloat64), out.to(torch::kFloat64), -1).sum().item<double>();
  }

  std::vector<torch::Tensor> neuron_sq, head_sq;  // per layer
  torch::Tensor channel_sq;
  std::vector<double> cosine;  // per layer, summed over positions
};

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kFloat64);
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// The `keep` largest of `scores`, in their original order (ties to the lower index).
std::vector<int64_t> top(const std::vector<double>& scores, int64_t keep) {
  std::vector<int64_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  idx.resize(static_cast<size_t>(keep));
  std::sort(idx.begin(), idx.end());
  return idx;
}

torch::Tensor take(const torch::Tensor& t, int64_t dim, const std::vector<int64_t>& idx) {
  return t.index_select(dim, torch::tensor(idx, torch::kLong).to(t.device())).contiguous();
}

// Rows (or columns) of whole heads: head h covers [h·hd, (h+1)·hd).
std::vector<int64_t> head_rows(const std::vector<int64_t>& heads, int64_t hd) {
  std::vector<int64_t> out;
  for (int64_t h : heads)
    for (int64_t j = 0; j < hd; ++j) out.push_back(h * hd + j);
  return out;
}

}  // namespace

PruneTarget parse_prune_spec(const std::string& spec) {
  PruneTarget t;
  std::stringstream ss(spec);
  std::string item;
  auto bad = [&](const std::string& why) {
    fail("prune spec '{}': {} (expected key=value pairs of dim, heads, kv-heads, hidden, layers, e.g. "
         "'dim=128,kv-heads=2,hidden=384')",
         spec, why);
  };
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) bad("'" + item + "' has no '='");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    int64_t v = 0;
    try {
      size_t used = 0;
      v = std::stoll(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::logic_error&) {
      bad("'" + value + "' is not a whole number");
    }
    if (v < 1) bad(key + " must be at least 1");
    if (key == "dim") t.dim = v;
    else if (key == "heads") t.heads = v;
    else if (key == "kv-heads" || key == "kv_heads") t.kv_heads = v;
    else if (key == "hidden") t.hidden = v;
    else if (key == "layers") t.layers = v;
    else bad("unknown key '" + key + "'");
  }
  return t;
}

Importance activation_importance(model::Llama& model, const TokenRows& calibration, int64_t max_rows, int64_t batch) {
  const auto& c = model->config();
  const int64_t rows = std::min(calibration.rows(), max_rows > 0 ? max_rows : calibration.rows());
  if (rows < 1) fail("pruning needs calibration rows, got none");
  if (calibration.seq_len > c.max_seq_len)
    fail("calibration rows of {} tokens are longer than the model's context {}", calibration.seq_len, c.max_seq_len);
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  Accumulator acc(c);
  {
    model::ObserveActivations watch(&acc);
    const int64_t L = calibration.seq_len;
    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
      const int64_t n = std::min(batch, rows - r0);
      std::vector<int64_t> ids;
      for (int64_t r = r0; r < r0 + n; ++r)
        for (int64_t t = 0; t < L; ++t) ids.push_back(calibration.tokens[static_cast<size_t>(r * (L + 1) + t)]);
      model->forward(torch::tensor(ids, torch::kLong).view({n, L}).to(model->device()));
    }
  }
  if (was_training) model->train();
  Importance imp;
  imp.rows = rows;
  imp.tokens = rows * calibration.seq_len;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    imp.neurons.push_back(to_vector(acc.neuron_sq[l].sqrt()));
    imp.heads.push_back(to_vector(acc.head_sq[l].sqrt()));
    imp.layers.push_back(1.0 - acc.cosine[l] / static_cast<double>(imp.tokens));
  }
  imp.channels = to_vector(acc.channel_sq.sqrt());
  return imp;
}

PrunePlan plan_pruning(const model::ModelConfig& teacher, const Importance& imp, const PruneTarget& target) {
  const int64_t hd = teacher.head_dim();
  PrunePlan p;
  model::ModelConfig& s = p.config;
  s = teacher;
  if (target.heads) s.n_heads = target.heads;
  else if (target.dim) s.n_heads = target.dim / hd;
  s.dim = target.dim ? target.dim : s.n_heads * hd;
  s.n_kv_heads = target.kv_heads ? target.kv_heads : std::min(teacher.n_kv_heads, s.n_heads);
  s.hidden_dim = target.hidden ? target.hidden : teacher.hidden_dim;
  s.n_layers = target.layers ? target.layers : teacher.n_layers;
  auto too_wide = [&](const char* what, int64_t want, int64_t have) {
    if (want > have) fail("cannot prune to {} {}: the teacher has {}", want, what, have);
  };
  too_wide("embedding channels (dim)", s.dim, teacher.dim);
  too_wide("layers", s.n_layers, teacher.n_layers);
  too_wide("heads", s.n_heads, teacher.n_heads);
  too_wide("KV heads", s.n_kv_heads, teacher.n_kv_heads);
  too_wide("MLP neurons (hidden)", s.hidden_dim, teacher.hidden_dim);
  if (s.dim != s.n_heads * hd)
    fail("pruned width {} is not heads × the teacher's head size ({} × {} = {}): set dim and heads so that it is", s.dim,
         s.n_heads, hd, s.n_heads * hd);
  if (s.n_heads % s.n_kv_heads)
    fail("{} heads are not a multiple of {} KV heads (grouped-query attention needs equal groups)", s.n_heads, s.n_kv_heads);
  const int64_t group = teacher.n_heads / teacher.n_kv_heads, keep_per_group = s.n_heads / s.n_kv_heads;
  if (keep_per_group > group)
    fail("{} heads over {} KV heads is {} per group; the teacher's groups have {}", s.n_heads, s.n_kv_heads, keep_per_group,
         group);
  if (static_cast<int64_t>(imp.layers.size()) != teacher.n_layers || static_cast<int64_t>(imp.channels.size()) != teacher.dim)
    fail("the importance was measured on another model ({} layers, {} channels; this one {} and {})", imp.layers.size(),
         imp.channels.size(), teacher.n_layers, teacher.dim);
  s.validate("the pruned model");

  p.layers = top(imp.layers, s.n_layers);
  p.channels = top(imp.channels, s.dim);
  for (int64_t l : p.layers) {
    const auto& hi = imp.heads[static_cast<size_t>(l)];
    std::vector<double> groups(static_cast<size_t>(teacher.n_kv_heads), 0.0);
    for (int64_t h = 0; h < teacher.n_heads; ++h) groups[static_cast<size_t>(h / group)] += hi[static_cast<size_t>(h)];
    auto kept_groups = top(groups, s.n_kv_heads);
    std::vector<int64_t> heads;
    for (int64_t g : kept_groups) {
      std::vector<double> within(hi.begin() + g * group, hi.begin() + (g + 1) * group);
      for (int64_t h : top(within, keep_per_group)) heads.push_back(g * group + h);
    }
    p.kv_groups.push_back(std::move(kept_groups));
    p.heads.push_back(std::move(heads));
    p.neurons.push_back(top(imp.neurons[static_cast<size_t>(l)], s.hidden_dim));
  }
  return p;
}

std::map<std::string, torch::Tensor> prune_weights(const model::ModelConfig& teacher,
                                                   const std::map<std::string, torch::Tensor>& weights,
                                                   const PrunePlan& plan) {
  const int64_t hd = teacher.head_dim();
  auto get = [&](const std::string& name) -> const torch::Tensor& {
    auto it = weights.find(name);
    if (it == weights.end()) fail("pruning: the teacher has no tensor '{}'", name);
    return it->second;
  };
  const auto& ch = plan.channels;
  std::map<std::string, torch::Tensor> out;
  out["tok_embeddings.weight"] = take(get("tok_embeddings.weight"), 1, ch);
  out["norm.weight"] = take(get("norm.weight"), 0, ch);
  if (!teacher.tie_embeddings) out["output.weight"] = take(get("output.weight"), 1, ch);
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const auto from = fmt::format("layers.{}.", plan.layers[i]), to = fmt::format("layers.{}.", i);
    const auto q_rows = head_rows(plan.heads[i], hd), kv_rows = head_rows(plan.kv_groups[i], hd);
    const auto& nn = plan.neurons[i];
    out[to + "attention_norm.weight"] = take(get(from + "attention_norm.weight"), 0, ch);
    out[to + "ffn_norm.weight"] = take(get(from + "ffn_norm.weight"), 0, ch);
    out[to + "attention.wq.weight"] = take(take(get(from + "attention.wq.weight"), 0, q_rows), 1, ch);
    out[to + "attention.wk.weight"] = take(take(get(from + "attention.wk.weight"), 0, kv_rows), 1, ch);
    out[to + "attention.wv.weight"] = take(take(get(from + "attention.wv.weight"), 0, kv_rows), 1, ch);
    out[to + "attention.wo.weight"] = take(take(get(from + "attention.wo.weight"), 0, ch), 1, q_rows);
    if (teacher.qkv_bias) {
      out[to + "attention.wq.bias"] = take(get(from + "attention.wq.bias"), 0, q_rows);
      out[to + "attention.wk.bias"] = take(get(from + "attention.wk.bias"), 0, kv_rows);
      out[to + "attention.wv.bias"] = take(get(from + "attention.wv.bias"), 0, kv_rows);
    }
    out[to + "feed_forward.w1.weight"] = take(take(get(from + "feed_forward.w1.weight"), 0, nn), 1, ch);
    out[to + "feed_forward.w3.weight"] = take(take(get(from + "feed_forward.w3.weight"), 0, nn), 1, ch);
    out[to + "feed_forward.w2.weight"] = take(take(get(from + "feed_forward.w2.weight"), 0, ch), 1, nn);
  }
  return out;
}

}  // namespace lineage::distill
