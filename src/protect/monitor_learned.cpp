// The monitor's learned key score: per-key features of how a key asks, what it takes and from
// where, and a logistic regression over them (class-balanced, L2; fit with `lineage monitor --fit`
// on labelled logs, include/lineage/protect/monitor.h). The signals are the ones the public reports
// on distillation campaigns name and a campaign cannot shed without giving up what it harvests:
// volume of long answers, breadth of what is asked (many domains, many short conversations rather
// than one product's narrow task), transcripts the key never held itself (histories it did not
// send), machine hours and proxy pools; and the signs of one product's users (templates, a few
// addresses and agents, conversations that go on). Each flag lists every feature's contribution
// (weight × standardised value) as its evidence.
#include <algorithm>
#include <cmath>
#include <limits>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "lineage/core/error.h"
#include "monitor_internal.h"

namespace lineage::protect {

namespace monitor {

namespace {

constexpr int64_t kHourMs = 3600000;
constexpr int kLong = 500;  // completion tokens per sample: a long, harvestable answer

// Distinct values among `bits` set of a hashed bitmap of m bits (linear counting).
double linear_count(size_t bits, size_t m) {
  if (bits >= m) bits = m - 1;
  return -static_cast<double>(m) * std::log(1.0 - static_cast<double>(bits) / static_cast<double>(m));
}

double top_share(const std::unordered_map<uint64_t, int>& counts, double n) {
  int top = 0;
  for (auto& [h, k] : counts) top = std::max(top, k);
  return n > 0 ? top / n : 0;
}

}  // namespace

const std::vector<std::string>& key_feature_names() {
  static const std::vector<std::string> names = {
      "log_requests",        // log of the key's requests
      "log_completion_day",  // log(1 + completion tokens per active day)
      "log_completion_req",  // log(1 + completion tokens per request)
      "log_prompt_req",      // log(1 + prompt tokens per request)
      "long_answers",        // share of requests with >= 500 completion tokens per sample
      "rotation",            // distinct client addresses per request
      "log_clients",         // log of distinct client addresses
      "log_agents",          // log of distinct user agents
      "hours_of_day",        // share of the 24 hours of the day (UTC) it was active in
      "gap_log_mean",        // mean of log(1 + seconds) between its requests
      "gap_log_sd",          // their standard deviation
      "follow_up",           // share continuing a conversation
      "new_history",         // share of follow-ups whose history the key never sent itself, per request
      "tool_steps",          // share carrying tool results
      "logprobs",            // share asking for log-probabilities
      "many_samples",        // share asking for n > 1
      "reasoning",           // share whose own words ask for step-by-step reasoning
      "system_variety",      // distinct system prompts per request
      "novelty",             // distinct own texts per request
      "head_template",       // share of its most common opening (first three words of the own text)
      "tail_template",       // share of its most common ending (last three words)
      "log_own_bytes",       // log(1 + median bytes of the own text)
      "vocabulary_breadth",  // log distinct content words / log content words read
      "log_turns_per_conversation",  // log(1 + requests per distinct conversation opening)
      "capability_breadth",  // capability areas (of 13) with >= max(2, 5%) of its requests, as a share
      "capability_entropy",  // entropy of its requests over the areas they name, normalised to [0, 1]
  };
  return names;
}

std::vector<double> key_features(const Corpus& c, uint32_t key, const KeyStats& s) {
  return unit_features(c, key_requests(c, key), s, c.coverage[key].count(), static_cast<double>(c.words_seen[key]));
}

std::vector<double> unit_features(const Corpus& c, std::span<const size_t> requests, const KeyStats& s, size_t coverage_bits,
                                  double words) {
  const double n = std::max<double>(1, static_cast<double>(requests.size()));
  std::unordered_set<uint64_t> wholes, systems, conversations;
  std::unordered_map<uint64_t, int> heads, tails;
  std::vector<uint32_t> own_bytes;
  double long_answers = 0, follow = 0, new_history = 0, tool = 0, logprobs = 0, samples = 0, reasoning = 0;
  double gap_sum = 0, gap_sq = 0, gaps = 0;
  double areas[kCapabilities] = {0};
  const Request* previous = nullptr;
  for (size_t q : requests) {
    const Request& r = c.requests[q];
    long_answers += r.completion_tokens / std::max<int>(1, r.samples) >= kLong;
    if (r.flags & kFollowUp) {
      ++follow;
      if (r.history && !wholes.count(r.history)) ++new_history;
    }
    wholes.insert(r.whole);
    tool += (r.flags & kTool) != 0;
    logprobs += (r.flags & kLogprobs) != 0;
    samples += r.samples > 1;
    reasoning += (r.flags & kReasoning) != 0;
    systems.insert(r.system);
    conversations.insert(r.conversation);
    ++heads[r.head], ++tails[r.tail];
    own_bytes.push_back(r.own_bytes);
    for (int a = 0; a < kCapabilities; ++a) areas[a] += (r.capabilities >> a) & 1;
    if (previous && r.ms > previous->ms) {
      const double g = std::log1p(static_cast<double>(r.ms - previous->ms) / 1000.0);
      gap_sum += g, gap_sq += g * g, ++gaps;
    }
    previous = &r;
  }
  std::nth_element(own_bytes.begin(), own_bytes.begin() + static_cast<std::ptrdiff_t>(own_bytes.size() / 2), own_bytes.end());
  const double gap_mean = gaps > 0 ? gap_sum / gaps : 0;
  const double gap_sd = gaps > 0 ? std::sqrt(std::max(0.0, gap_sq / gaps - gap_mean * gap_mean)) : 0;
  const double days = std::max(1.0, s.active_days);
  const double distinct_words = linear_count(coverage_bits, kCoverageBits);
  double broad = 0, named = 0, entropy = 0;
  for (double k : areas) broad += k >= std::max(2.0, 0.05 * n), named += k;
  for (double k : areas)
    if (k > 0) entropy -= k / named * std::log(k / named);
  return {
      std::log(n),
      std::log1p(static_cast<double>(s.completion_tokens) / days),
      std::log1p(static_cast<double>(s.completion_tokens) / n),
      std::log1p(static_cast<double>(s.prompt_tokens) / n),
      long_answers / n,
      static_cast<double>(s.clients) / n,
      std::log(std::max<double>(1, static_cast<double>(s.clients))),
      std::log(std::max<double>(1, static_cast<double>(s.agents))),
      __builtin_popcount(s.hours_of_day) / 24.0,
      gap_mean,
      gap_sd,
      follow / n,
      new_history / n,
      tool / n,
      logprobs / n,
      samples / n,
      reasoning / n,
      static_cast<double>(systems.size()) / n,
      static_cast<double>(s.distinct_content) / n,
      top_share(heads, n),
      top_share(tails, n),
      std::log1p(own_bytes.empty() ? 0.0 : static_cast<double>(own_bytes[own_bytes.size() / 2])),
      words > 1 ? std::log1p(distinct_words) / std::log1p(words) : 0.0,
      std::log1p(n / std::max<double>(1, static_cast<double>(conversations.size()))),
      broad / kCapabilities,
      named > 0 ? entropy / std::log(static_cast<double>(kCapabilities)) : 0.0,
  };
}

}  // namespace monitor

namespace {

// Each feature's share of one tree's output for `x`: along its path, the change in the node's
// value at every split, credited to the split's feature (Saabas's attribution).
void attribute(const std::vector<TreeNode>& tree, const std::vector<double>& x, double scale, std::vector<double>& out) {
  int at = 0;
  while (tree[at].feature >= 0) {
    const auto& n = tree[at];
    const int next = x[n.feature] < n.split ? n.left : n.right;
    out[n.feature] += scale * (tree[next].value - n.value);
    at = next;
  }
}

double tree_output(const std::vector<TreeNode>& tree, const std::vector<double>& x) {
  int at = 0;
  while (tree[at].feature >= 0) at = x[tree[at].feature] < tree[at].split ? tree[at].left : tree[at].right;
  return tree[at].value;
}

}  // namespace

double LearnedModel::logit(const std::vector<double>& x) const {
  double s = bias;
  if (kind == "boosted_trees") {
    for (const auto& t : trees) s += learning_rate * tree_output(t, x);
    return s;
  }
  for (size_t j = 0; j < weights.size() && j < x.size(); ++j) s += weights[j] * (x[j] - mean[j]) / scale[j];
  return s;
}

std::vector<Evidence> LearnedModel::explain(const std::vector<double>& x) const {
  std::vector<Evidence> out;
  std::vector<double> part(names.size(), 0.0);
  if (kind == "boosted_trees") {
    for (const auto& t : trees) attribute(t, x, learning_rate, part);  // the roots' values are no feature's
  } else {
    for (size_t j = 0; j < weights.size() && j < x.size(); ++j) part[j] = weights[j] * (x[j] - mean[j]) / scale[j];
  }
  for (size_t j = 0; j < part.size() && j < x.size(); ++j) {
    if (std::abs(part[j]) < 0.05) continue;
    out.push_back({names[j], part[j], fmt::format("{} = {:.3g}", names[j], x[j])});
  }
  std::sort(out.begin(), out.end(), [](const Evidence& a, const Evidence& b) { return std::abs(a.weight) > std::abs(b.weight); });
  return out;
}

nlohmann::json LearnedModel::to_json() const {
  nlohmann::json j = {{"kind", kind},           {"features", names},      {"bias", bias},
                      {"threshold", threshold}, {"trained_on", trained_on}, {"training_fpr", training_fpr},
                      {"training_recall", training_recall}};
  if (kind == "boosted_trees") {
    j["learning_rate"] = learning_rate;
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : trees) {
      nlohmann::json nodes = nlohmann::json::array();
      for (const auto& n : t) nodes.push_back({n.feature, n.split, n.left, n.right, n.value});
      ts.push_back(nodes);
    }
    j["trees"] = ts;
  } else {
    j["mean"] = mean, j["scale"] = scale, j["weights"] = weights;
  }
  return j;
}

LearnedModel LearnedModel::from_json(const nlohmann::json& j, const std::string& where) {
  LearnedModel m;
  try {
    m.kind = j.value("kind", std::string("logistic_regression"));
    m.names = j.at("features").get<std::vector<std::string>>();
    if (m.kind == "boosted_trees") {
      m.learning_rate = j.at("learning_rate").get<double>();
      for (const auto& t : j.at("trees")) {
        std::vector<TreeNode> nodes;
        for (const auto& n : t)
          nodes.push_back({n.at(0).get<int>(), n.at(1).get<double>(), n.at(2).get<int>(), n.at(3).get<int>(), n.at(4).get<double>()});
        m.trees.push_back(std::move(nodes));
      }
    } else if (m.kind == "logistic_regression") {
      m.mean = j.at("mean").get<std::vector<double>>();
      m.scale = j.at("scale").get<std::vector<double>>();
      m.weights = j.at("weights").get<std::vector<double>>();
    } else {
      fail("'{}': model kind '{}', expected logistic_regression or boosted_trees", where, m.kind);
    }
    m.bias = j.at("bias").get<double>();
    m.threshold = j.at("threshold").get<double>();
    m.trained_on = j.value("trained_on", std::string());
    m.training_fpr = j.value("training_fpr", 0.0);
    m.training_recall = j.value("training_recall", 0.0);
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is not a monitor model (lineage monitor --fit writes one): {}", where, e.what());
  }
  if (m.names != monitor::key_feature_names())
    fail("'{}' was fit on other features than this lineage computes ({} features, expected {}): fit it again with "
         "lineage monitor --fit", where, m.names.size(), monitor::key_feature_names().size());
  const int F = static_cast<int>(m.names.size());
  for (size_t t = 0; t < m.trees.size(); ++t) {
    const int n = static_cast<int>(m.trees[t].size());
    if (n == 0) fail("'{}': tree {} has no nodes", where, t);
    for (const auto& node : m.trees[t])
      if (node.feature >= F || (node.feature >= 0 && (node.left <= 0 || node.left >= n || node.right <= 0 || node.right >= n)))
        fail("'{}': tree {} has a node whose feature or children are out of range", where, t);
  }
  if (m.kind == "logistic_regression") {
    if (m.mean.size() != m.names.size() || m.scale.size() != m.names.size() || m.weights.size() != m.names.size())
      fail("'{}': mean, scale and weights must each hold {} numbers", where, m.names.size());
    for (double s : m.scale)
      if (!(s > 0)) fail("'{}': every scale must be positive", where);
  }
  return m;
}

namespace {

// One regression tree on Newton steps (gradients g, hessians h) of the rows in `rows`, splits
// among `cuts` (per feature, candidate thresholds), grown depth-first to `depth`.
struct TreeFit {
  const std::vector<std::vector<double>>& x;
  const std::vector<double>& g;
  const std::vector<double>& h;
  const std::vector<std::vector<double>>& cuts;
  int depth;
  double lambda = 1.0, min_hessian = 1.0;
  std::vector<TreeNode> nodes;

  int grow(std::vector<size_t>& rows, int level) {
    double G = 0, H = 0;
    for (size_t i : rows) G += g[i], H += h[i];
    const int id = static_cast<int>(nodes.size());
    nodes.push_back({-1, 0, -1, -1, -G / (H + lambda)});
    if (level >= depth || rows.size() < 4) return id;
    const double parent = G * G / (H + lambda);
    double best = 1e-9;
    int best_f = -1;
    double best_cut = 0;
    for (size_t f = 0; f < cuts.size(); ++f) {
      // Sums left of each cut: bucket the rows once per feature.
      const auto& c = cuts[f];
      std::vector<double> bg(c.size() + 1, 0), bh(c.size() + 1, 0);
      for (size_t i : rows) {
        const size_t b = static_cast<size_t>(std::upper_bound(c.begin(), c.end(), x[i][f]) - c.begin());
        bg[b] += g[i], bh[b] += h[i];
      }
      double gl = 0, hl = 0;
      for (size_t b = 0; b < c.size(); ++b) {
        gl += bg[b], hl += bh[b];
        const double gr = G - gl, hr = H - hl;
        if (hl < min_hessian || hr < min_hessian) continue;
        const double gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
        if (gain > best) best = gain, best_f = static_cast<int>(f), best_cut = c[b];
      }
    }
    if (best_f < 0) return id;
    // Rows whose value is at most the cut go left: the split is "x < next representable above cut".
    const double split = std::nextafter(best_cut, std::numeric_limits<double>::infinity());
    std::vector<size_t> left, right;
    for (size_t i : rows) (x[i][best_f] < split ? left : right).push_back(i);
    nodes[id].feature = best_f;
    nodes[id].split = split;
    const int l = grow(left, level + 1);
    const int r = grow(right, level + 1);
    nodes[id].left = l, nodes[id].right = r;
    return id;
  }
};

}  // namespace

LearnedModel fit_learned_model(const std::vector<FeatureRow>& rows, const FitOptions& o) {
  const auto& names = monitor::key_feature_names();
  const size_t m = names.size();
  std::vector<const FeatureRow*> use;
  for (const auto& r : rows) {
    if (r.features.size() != m) fail("a feature row of key '{}' holds {} features, expected {}", r.key_id, r.features.size(), m);
    if (r.labelled && r.requests >= o.min_requests) use.push_back(&r);
  }
  double pos = 0;
  for (auto* r : use) pos += r->campaign;
  const double N = static_cast<double>(use.size());
  if (pos < 1 || pos >= N) fail("--fit needs labelled campaign and ordinary keys (found {} campaign of {} labelled)", pos, N);
  LearnedModel model;
  model.names = names;
  // Each class weighs half, whatever their sizes (campaign keys are the rarer).
  const double w_pos = N / (2 * pos), w_neg = N / (2 * (N - pos));
  if (o.kind == "boosted_trees") {
    model.kind = o.kind;
    model.learning_rate = o.shrinkage;
    std::vector<std::vector<double>> x;
    for (auto* r : use) x.push_back(r->features);
    // Candidate thresholds: up to 32 quantiles of each feature's values.
    std::vector<std::vector<double>> cuts(m);
    for (size_t f = 0; f < m; ++f) {
      std::vector<double> v;
      for (auto& row : x) v.push_back(row[f]);
      std::sort(v.begin(), v.end());
      for (int q = 1; q < 32; ++q) {
        const double c = v[static_cast<size_t>(q * (v.size() - 1) / 32)];
        if (cuts[f].empty() || c > cuts[f].back()) cuts[f].push_back(c);
      }
      if (!cuts[f].empty() && cuts[f].back() >= v.back()) cuts[f].pop_back();
    }
    std::vector<double> score(use.size(), 0.0), g(use.size()), h(use.size());
    std::vector<size_t> all(use.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    for (int t = 0; t < o.trees; ++t) {
      for (size_t i = 0; i < use.size(); ++i) {
        const double p = 1 / (1 + std::exp(-std::clamp(score[i], -30.0, 30.0)));
        const double w = use[i]->campaign ? w_pos : w_neg;
        g[i] = w * (p - (use[i]->campaign ? 1 : 0));
        h[i] = std::max(1e-6, w * p * (1 - p));
      }
      TreeFit fit{x, g, h, cuts, o.depth, /*lambda=*/1.0, o.min_hessian, {}};
      std::vector<size_t> rows = all;
      fit.grow(rows, 0);
      for (size_t i = 0; i < use.size(); ++i) score[i] += o.shrinkage * tree_output(fit.nodes, x[i]);
      model.trees.push_back(std::move(fit.nodes));
    }
  } else if (o.kind != "logistic_regression") {
    fail("unknown model kind '{}': expected boosted_trees or logistic_regression", o.kind);
  }
  if (o.kind == "logistic_regression") {
  model.mean.assign(m, 0);
  model.scale.assign(m, 0);
  for (auto* r : use)
    for (size_t j = 0; j < m; ++j) model.mean[j] += r->features[j] / N;
  for (auto* r : use)
    for (size_t j = 0; j < m; ++j) model.scale[j] += (r->features[j] - model.mean[j]) * (r->features[j] - model.mean[j]) / N;
  for (auto& s : model.scale) s = s > 1e-12 ? std::sqrt(s) : 1.0;
  std::vector<std::vector<double>> z(use.size(), std::vector<double>(m));
  for (size_t i = 0; i < use.size(); ++i)
    for (size_t j = 0; j < m; ++j) z[i][j] = (use[i]->features[j] - model.mean[j]) / model.scale[j];
  model.weights.assign(m, 0);
  model.bias = 0;
  for (int it = 0; it < o.iterations; ++it) {  // full-batch gradient descent: a convex problem
    std::vector<double> g(m, 0);
    double gb = 0;
    for (size_t i = 0; i < use.size(); ++i) {
      double s = model.bias;
      for (size_t j = 0; j < m; ++j) s += model.weights[j] * z[i][j];
      const double p = 1 / (1 + std::exp(-std::clamp(s, -30.0, 30.0)));
      const double d = (use[i]->campaign ? w_pos : w_neg) * (p - (use[i]->campaign ? 1 : 0));
      gb += d;
      for (size_t j = 0; j < m; ++j) g[j] += d * z[i][j];
    }
    model.bias -= o.learning_rate * gb / N;
    for (size_t j = 0; j < m; ++j) model.weights[j] -= o.learning_rate * (g[j] / N + o.l2 * model.weights[j]);
  }
  }
  // The threshold: above every ordinary training key but the top target_fpr of them, and never
  // below the point where the two classes weigh the same.
  std::vector<double> ordinary, campaign;
  for (auto* r : use) (r->campaign ? campaign : ordinary).push_back(model.logit(r->features));
  std::sort(ordinary.begin(), ordinary.end());
  const size_t allowed = static_cast<size_t>(std::floor(o.target_fpr * static_cast<double>(ordinary.size())));
  model.threshold = ordinary.empty() ? 0.0 : ordinary[ordinary.size() - 1 - std::min(allowed, ordinary.size() - 1)] + 1e-9;
  model.threshold = std::max(model.threshold, 0.0);
  double fp = 0, tp = 0;
  for (double s : ordinary) fp += s >= model.threshold;
  for (double s : campaign) tp += s >= model.threshold;
  model.training_fpr = ordinary.empty() ? 0 : fp / static_cast<double>(ordinary.size());
  model.training_recall = campaign.empty() ? 0 : tp / static_cast<double>(campaign.size());
  model.trained_on = o.trained_on;
  return model;
}

}  // namespace lineage::protect
