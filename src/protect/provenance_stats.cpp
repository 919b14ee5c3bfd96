// The statistics of the provenance tests (see protect/provenance.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "lineage/core/error.h"
#include "lineage/core/mix.h"
#include "lineage/protect/provenance.h"

namespace lineage::protect {

std::vector<int> hungarian(const std::vector<double>& cost, int n) {
  if (static_cast<int64_t>(cost.size()) != int64_t{n} * n) fail("assignment: {} costs for a {}x{} matrix", cost.size(), n, n);
  const double inf = std::numeric_limits<double>::infinity();
  // Rows and columns 1..n; column 0 is the virtual start of each augmenting path.
  std::vector<double> u(n + 1, 0), v(n + 1, 0);
  std::vector<int> match(n + 1, 0), way(n + 1, 0);  // match[column] = row
  for (int row = 1; row <= n; ++row) {
    match[0] = row;
    int col0 = 0;
    std::vector<double> minv(n + 1, inf);
    std::vector<char> used(n + 1, 0);
    do {
      used[col0] = 1;
      const int r = match[col0];
      double delta = inf;
      int col1 = 0;
      const double* c = cost.data() + static_cast<size_t>(r - 1) * n;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double reduced = c[j - 1] - u[r] - v[j];
        if (reduced < minv[j]) minv[j] = reduced, way[j] = col0;
        if (minv[j] < delta) delta = minv[j], col1 = j;
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) u[match[j]] += delta, v[j] -= delta;
        else minv[j] -= delta;
      }
      col0 = col1;
    } while (match[col0] != 0);
    do {  // flip the augmenting path
      const int col1 = way[col0];
      match[col0] = match[col1];
      col0 = col1;
    } while (col0);
  }
  std::vector<int> assignment(n);
  for (int j = 1; j <= n; ++j) assignment[match[j] - 1] = j - 1;
  return assignment;
}

double log_normal_upper(double z) {
  if (z < 8) return std::log(0.5 * std::erfc(z / std::sqrt(2.0)));
  // Mills ratio series: Q(z) = φ(z)/z · (1 − 1/z² + 3/z⁴ − 15/z⁶ …).
  const double z2 = z * z;
  return -0.5 * z2 - std::log(z * std::sqrt(2 * M_PI)) + std::log1p(-1 / z2 + 3 / (z2 * z2) - 15 / (z2 * z2 * z2));
}

SpearmanTest spearman_identity(const std::vector<int>& perm) {
  const double n = static_cast<double>(perm.size());
  SpearmanTest t;
  if (perm.size() < 3) return t;
  double d2 = 0;
  for (size_t i = 0; i < perm.size(); ++i) {
    const double d = static_cast<double>(perm[i]) - static_cast<double>(i);
    d2 += d * d;
  }
  t.rho = 1 - 6 * d2 / (n * (n * n - 1));
  // Under a uniformly random permutation rho has mean 0 and variance 1/(n-1) exactly.
  t.log_p = log_normal_upper(t.rho * std::sqrt(n - 1));
  return t;
}

double fisher_combine_log(const std::vector<double>& log_p) {
  if (log_p.empty()) return 0;
  // X = -2 Σ log p ~ χ²(2k); its upper tail at X is e^{-S} Σ_{i<k} S^i / i!, S = X/2.
  double s = 0;
  for (double l : log_p) s -= std::min(0.0, l);
  if (s <= 0) return 0;
  const size_t k = log_p.size();
  std::vector<double> terms(k);
  for (size_t i = 0; i < k; ++i) terms[i] = static_cast<double>(i) * std::log(s) - std::lgamma(static_cast<double>(i) + 1);
  const double top = *std::max_element(terms.begin(), terms.end());
  double sum = 0;
  for (double t : terms) sum += std::exp(t - top);
  return std::min(0.0, -s + top + std::log(sum));
}

std::vector<double> holm(const std::vector<double>& p) {
  std::vector<size_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] < p[b]; });
  std::vector<double> adjusted(p.size());
  double running = 0;
  for (size_t r = 0; r < order.size(); ++r) {
    running = std::max(running, std::min(1.0, static_cast<double>(p.size() - r) * p[order[r]]));
    adjusted[order[r]] = running;
  }
  return adjusted;
}

double sign_flip_p(const std::vector<double>& d, int draws, uint64_t seed) {
  if (d.empty()) return 1;
  double observed = 0;
  for (double x : d) observed += x;
  std::mt19937_64 rng(splitmix64(seed));
  int at_least = 0;
  for (int b = 0; b < draws; ++b) {
    double s = 0;
    uint64_t bits = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      if (i % 64 == 0) bits = rng();
      s += (bits >> (i % 64)) & 1 ? d[i] : -d[i];
    }
    if (s >= observed - 1e-12) ++at_least;
  }
  return (1.0 + at_least) / (1.0 + draws);
}

double paired_z_p(const std::vector<double>& d) {
  const double n = static_cast<double>(d.size());
  if (d.size() < 2) return 1;
  double mean = 0;
  for (double x : d) mean += x;
  mean /= n;
  double var = 0;
  for (double x : d) var += (x - mean) * (x - mean);
  var /= n - 1;
  if (var <= 0) return mean > 0 ? 0 : 1;
  return std::exp(log_normal_upper(mean / std::sqrt(var / n)));
}

}  // namespace lineage::protect
