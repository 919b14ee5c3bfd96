// Hidden-state distillation (distill/hidden_loss.h) against a float64 reference written here in
// plain loops (no torch): the cosine and MSE terms' values and their gradients with respect to the
// student's states by central differences of the reference; the default block pairing; the
// projection only where the widths differ; bad pairings refused.
#include <cmath>
#include <random>

#include "lineage/core/error.h"
#include "lineage/distill/hidden_loss.h"
#include "test_util.h"

namespace lineage::distill {
namespace {

using Rows = std::vector<std::vector<double>>;

double reference(const Rows& s, const Rows& t, const std::vector<double>& m, HiddenLoss kind) {
  double total = 0, count = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    double per = 0;
    if (kind == HiddenLoss::kMse) {
      for (size_t c = 0; c < s[i].size(); ++c) per += (s[i][c] - t[i][c]) * (s[i][c] - t[i][c]);
      per /= static_cast<double>(s[i].size());
    } else {
      double st = 0, ss = 0, tt = 0;
      for (size_t c = 0; c < s[i].size(); ++c) st += s[i][c] * t[i][c], ss += s[i][c] * s[i][c], tt += t[i][c] * t[i][c];
      per = 1 - st / (std::sqrt(ss) * std::sqrt(tt));
    }
    total += m[i] * per;
    count += m[i];
  }
  return count > 0 ? total / count : 0;
}

torch::Tensor to_tensor(const Rows& r) {
  auto t = torch::empty({static_cast<int64_t>(r.size()), static_cast<int64_t>(r[0].size())}, torch::kFloat64);
  for (size_t i = 0; i < r.size(); ++i)
    for (size_t c = 0; c < r[i].size(); ++c) t[i][c] = r[i][c];
  return t;
}

TEST(HiddenLoss, ValuesAndGradientsMatchTheFloat64Reference) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> n(0, 1);
  const size_t N = 9, C = 6;
  for (HiddenLoss kind : {HiddenLoss::kCosine, HiddenLoss::kMse})
    for (int variant = 0; variant < 3; ++variant) {  // independent; near-identical; some positions masked out
      Rows s(N, std::vector<double>(C)), t = s;
      std::vector<double> m(N, 1.0);
      for (size_t i = 0; i < N; ++i)
        for (size_t c = 0; c < C; ++c) {
          t[i][c] = n(rng);
          s[i][c] = variant == 1 ? t[i][c] + 1e-3 * n(rng) : n(rng);
        }
      if (variant == 2) m[1] = m[4] = m[8] = 0;
      auto st = to_tensor(s).to(torch::kFloat32).requires_grad_(true);
      auto loss = hidden_state_loss(st, to_tensor(t).to(torch::kFloat32),
                                    torch::tensor(std::vector<double>(m.begin(), m.end())), kind);
      loss.backward();
      const double want = reference(s, t, m, kind);
      EXPECT_NEAR(loss.item<double>(), want, 1e-6 * std::max(1.0, std::abs(want))) << static_cast<int>(kind) << variant;
      auto grad = st.grad();
      double worst = 0, scale = 0;
      for (size_t i = 0; i < N; ++i)
        for (size_t c = 0; c < C; ++c) {
          Rows up = s, down = s;
          up[i][c] += 1e-5;
          down[i][c] -= 1e-5;
          const double g = (reference(up, t, m, kind) - reference(down, t, m, kind)) / 2e-5;
          worst = std::max(worst, std::abs(grad[i][c].item<double>() - g));
          scale = std::max(scale, std::abs(g));
        }
      EXPECT_LE(worst, 1e-4 * std::max(scale, 1e-3)) << static_cast<int>(kind) << " variant " << variant;
    }
  // Nothing counts: 0, not NaN.
  auto z = hidden_state_loss(torch::randn({3, 4}), torch::randn({3, 4}), torch::zeros({3}), HiddenLoss::kCosine);
  EXPECT_EQ(z.item<double>(), 0.0);
}

TEST(HiddenLoss, PairsDefaultToEveryStudentBlockAndBadOnesAreRefused) {
  using P = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(parse_hidden_layers("", 3, 6), (P{{0, 1}, {1, 3}, {2, 5}}));
  EXPECT_EQ(parse_hidden_layers("", 4, 6), (P{{0, 1}, {1, 2}, {2, 4}, {3, 5}}));
  EXPECT_EQ(parse_hidden_layers("", 2, 2), (P{{0, 0}, {1, 1}}));
  EXPECT_EQ(parse_hidden_layers("1:2,0:5", 2, 6), (P{{1, 2}, {0, 5}}));
  EXPECT_THROW(parse_hidden_layers("2:1", 2, 6), Error);
  EXPECT_THROW(parse_hidden_layers("0:6", 2, 6), Error);
  EXPECT_THROW(parse_hidden_layers("0-1", 2, 6), Error);
  EXPECT_THROW(parse_hidden_layers("a:1", 2, 6), Error);
  EXPECT_THROW(parse_hidden_loss("l1"), Error);
}

// Equal widths: no projection, the loss is the pairs' mean of hidden_state_loss times the weight.
// Other widths: one projection per pair, trained (it has gradients).
TEST(HiddenLoss, AProjectionOnlyWhereTheWidthsDiffer) {
  const std::vector<std::pair<int64_t, int64_t>> pairs{{0, 1}, {1, 3}};
  HiddenDistill same(pairs, 8, 8, HiddenLoss::kMse, 0.5);
  EXPECT_TRUE(same->parameters().empty());
  std::map<int64_t, torch::Tensor> s{{0, torch::randn({2, 3, 8})}, {1, torch::randn({2, 3, 8})}};
  std::map<int64_t, torch::Tensor> t{{1, torch::randn({2, 3, 8})}, {3, torch::randn({2, 3, 8})}};
  auto mask = torch::ones({6});
  auto want = 0.5 *
              (hidden_state_loss(s[0].reshape({6, 8}), t[1].reshape({6, 8}), mask, HiddenLoss::kMse) +
               hidden_state_loss(s[1].reshape({6, 8}), t[3].reshape({6, 8}), mask, HiddenLoss::kMse)) /
              2;
  EXPECT_NEAR(same->loss(s, t, mask).item<double>(), want.item<double>(), 1e-6);
  HiddenDistill wider(pairs, 8, 12, HiddenLoss::kCosine, 1.0);
  ASSERT_EQ(wider->parameters().size(), 2u);
  std::map<int64_t, torch::Tensor> t12{{1, torch::randn({2, 3, 12})}, {3, torch::randn({2, 3, 12})}};
  wider->loss(s, t12, mask).backward();
  for (auto& p : wider->parameters()) EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  std::map<int64_t, torch::Tensor> missing{{1, t12[1]}};
  EXPECT_THROW(wider->loss(s, missing, mask), Error);
}

}  // namespace
}  // namespace lineage::distill
