// Token sampling. See include/lineage/model/sampler.h.
#include "lineage/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "lineage/core/error.h"

namespace lineage::model {

void validate(const SamplingOptions& o) {
  if (!(o.temperature >= 0)) fail("temperature must be >= 0, got {}", o.temperature);
  if (o.top_k < 0) fail("top-k must be >= 0, got {}", o.top_k);
  if (!(o.top_p > 0 && o.top_p <= 1)) fail("top-p must be in (0, 1], got {}", o.top_p);
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) { validate(options_); }

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (options_.temperature == 0.0f) return argmax(logits);
  const size_t V = logits.size();
  // Candidates sorted by logit, descending; ties keep the lower id first. The logit travels with
  // its id: sorting ids through a comparator that looks their logits up was a fifth of a serving
  // step's time at 64 sequences (perf). The order is the same one (a total order on (logit, id)).
  struct Candidate {
    float logit;
    int32_t id;
  };
  std::vector<Candidate> cand(V);
  for (size_t i = 0; i < V; ++i) cand[i] = {logits[i], static_cast<int32_t>(i)};
  size_t keep = (options_.top_k > 0) ? std::min<size_t>(options_.top_k, V) : V;
  auto by_logit = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
  if (keep == V) std::sort(cand.begin(), cand.end(), by_logit);  // partial_sort of everything is a heap sort
  else std::partial_sort(cand.begin(), cand.begin() + static_cast<long>(keep), cand.end(), by_logit);
  cand.resize(keep);

  const double inv_t = 1.0 / options_.temperature;
  const double max_logit = cand[0].logit;
  std::vector<double> probs(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp((cand[i].logit - max_logit) * inv_t);
  for (auto& p : probs) p /= total;

  if (options_.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += probs[n++];
      if (cum >= options_.top_p) break;
    }
    probs.resize(n);
    cand.resize(n);
    total = cum;
  } else {
    total = 1.0;
  }
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (size_t i = 0; i < probs.size(); ++i) {
    r -= probs[i];
    if (r < 0) return cand[i].id;
  }
  return cand.back().id;
}

std::vector<double> Sampler::distribution(std::span<const float> logits) const {
  const size_t V = logits.size();
  std::vector<double> out(V, 0.0);
  if (V == 0) return out;
  if (options_.temperature == 0.0f) {
    out[static_cast<size_t>(argmax(logits))] = 1.0;
    return out;
  }
  // The same candidates, order and cuts as sample().
  std::vector<int32_t> ids(V);
  for (size_t i = 0; i < V; ++i) ids[i] = static_cast<int32_t>(i);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const size_t keep = (options_.top_k > 0) ? std::min<size_t>(options_.top_k, V) : V;
  std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(keep), ids.end(), by_logit);
  ids.resize(keep);
  const double inv_t = 1.0 / options_.temperature, max_logit = logits[ids[0]];
  std::vector<double> probs(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp((logits[ids[i]] - max_logit) * inv_t);
  for (auto& p : probs) p /= total;
  size_t n = keep;
  total = 1.0;
  if (options_.top_p < 1.0f) {
    double cum = 0;
    n = 0;
    while (n < keep) {
      cum += probs[n++];
      if (cum >= options_.top_p) break;
    }
    total = cum;
  }
  for (size_t i = 0; i < n; ++i) out[static_cast<size_t>(ids[i])] = probs[i] / total;
  return out;
}

int32_t Sampler::draw(std::span<const double> probs) {
  double total = 0;
  for (double p : probs) total += p;
  if (!(total > 0)) fail("cannot draw from a distribution with no mass");
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  int32_t last = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    r -= probs[i];
    if (r < 0) return last;
  }
  return last;
}

double Sampler::uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

}  // namespace lineage::model
