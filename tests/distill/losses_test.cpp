// distill/losses: values against closed forms on hand-made distributions, the JSD endpoints,
// temperature scaling, masking, the top-k tail bucket, and gradients against finite differences.
#include "lineage/distill/losses.h"

#include <cmath>

#include "lineage/core/error.h"
#include "test_util.h"

namespace lineage::distill {
namespace {

double kl_closed(const std::vector<double>& p, const std::vector<double>& q) {
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0) s += p[i] * std::log(p[i] / q[i]);
  return s;
}

torch::Tensor logits_of(const std::vector<double>& p) {  // log-probs are valid logits
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return torch::tensor(l).view({1, -1});
}

const std::vector<double> kT{0.5, 0.25, 0.125, 0.125};  // teacher
const std::vector<double> kS{0.25, 0.25, 0.25, 0.25};   // student
const torch::Tensor kOne = torch::ones({1});

double loss(Divergence d, double beta = 0.5, double tau = 1.0) {
  return kd_loss(logits_of(kS), logits_of(kT), kOne, {d, beta, tau}).item<double>();
}

TEST(Losses, KLMatchesClosedForms) {
  EXPECT_NEAR(loss(Divergence::kForwardKL), kl_closed(kT, kS), 1e-6);  // = 0.25 * log 2
  EXPECT_NEAR(loss(Divergence::kForwardKL), 0.25 * std::log(2.0), 1e-6);
  EXPECT_NEAR(loss(Divergence::kReverseKL), kl_closed(kS, kT), 1e-6);
  EXPECT_NEAR(loss(Divergence::kTVD), 0.5 * (0.25 + 0 + 0.125 + 0.125), 1e-6);
}

TEST(Losses, JSDEndpointsAndMiddle) {
  EXPECT_NEAR(loss(Divergence::kJSD, 0.0), loss(Divergence::kForwardKL), 1e-7);
  EXPECT_NEAR(loss(Divergence::kJSD, 1.0), loss(Divergence::kReverseKL), 1e-7);
  for (double beta : {0.1, 0.5, 0.9}) {
    std::vector<double> m(4);
    for (int i = 0; i < 4; ++i) m[i] = beta * kT[i] + (1 - beta) * kS[i];
    EXPECT_NEAR(loss(Divergence::kJSD, beta), beta * kl_closed(kT, m) + (1 - beta) * kl_closed(kS, m), 1e-6) << beta;
  }
  // The symmetric JSD is bounded by log 2.
  EXPECT_LT(loss(Divergence::kJSD, 0.5), std::log(2.0));
}

TEST(Losses, TemperatureSoftensAndScalesByTauSquared) {
  const double tau = 2.0;
  std::vector<double> t(4), s(4);
  double zt = 0, zs = 0;
  for (int i = 0; i < 4; ++i) {
    zt += t[i] = std::pow(kT[i], 1 / tau);
    zs += s[i] = std::pow(kS[i], 1 / tau);
  }
  for (int i = 0; i < 4; ++i) t[i] /= zt, s[i] /= zs;
  EXPECT_NEAR(loss(Divergence::kForwardKL, 0.5, tau), tau * tau * kl_closed(t, s), 1e-6);
}

TEST(Losses, MaskedPositionsDoNotCount) {
  torch::manual_seed(1);
  auto s = torch::randn({3, 7}), t = torch::randn({3, 7});
  auto mask = torch::tensor({1, 0, 1});
  auto a = kd_loss(s, t, mask, {});
  auto s2 = s.clone();
  s2[1] += torch::randn({7}) * 5;
  EXPECT_FLOAT_EQ(kd_loss(s2, t, mask, {}).item<float>(), a.item<float>());
  auto rows = torch::tensor({0, 2});
  EXPECT_NEAR(a.item<float>(), kd_loss(s.index_select(0, rows), t.index_select(0, rows), torch::ones({2}), {}).item<float>(), 1e-6);
}

TEST(Losses, CrossEntropyIsNegativeLogLikelihood) {
  auto logits = logits_of(kT);
  EXPECT_NEAR(ce_loss(logits, torch::tensor({2}, torch::kLong), kOne).item<double>(), -std::log(0.125), 1e-6);
}

TEST(Losses, TopKWithTheWholeVocabularyEqualsFullLoss) {
  torch::manual_seed(2);
  auto s = torch::randn({4, 6}), t = torch::randn({4, 6});
  auto ids = torch::arange(6, torch::kLong).repeat({4, 1});
  auto tl = torch::log_softmax(t, -1);
  for (auto d : {Divergence::kForwardKL, Divergence::kReverseKL, Divergence::kJSD, Divergence::kTVD})
    EXPECT_NEAR(kd_loss_top_k(s, ids, tl, torch::ones({4}), {d}).item<float>(),
                kd_loss(s, t, torch::ones({4}), {d}).item<float>(), 2e-5);
}

TEST(Losses, TopKTailBucketByHand) {
  // Teacher keeps tokens 0 and 1 (0.5, 0.25) -> tail 0.25; student is uniform: 0.25, 0.25, tail 0.5.
  auto ids = torch::tensor({{0, 1}}, torch::kLong);
  auto tl = torch::tensor({{std::log(0.5f), std::log(0.25f)}});
  double want = kl_closed({0.5, 0.25, 0.25}, {0.25, 0.25, 0.5});
  EXPECT_NEAR(kd_loss_top_k(logits_of(kS), ids, tl, kOne, {}).item<double>(), want, 1e-6);
}

TEST(Losses, GradientsMatchFiniteDifferences) {
  torch::manual_seed(3);
  auto t = torch::randn({2, 5});
  auto ids = torch::tensor({{0, 3}, {4, 1}}, torch::kLong);
  auto tl = torch::log_softmax(t, -1).gather(-1, ids);
  for (auto d : {Divergence::kForwardKL, Divergence::kReverseKL, Divergence::kJSD, Divergence::kTVD}) {
    for (bool top_k : {false, true}) {
      KDOptions o{d, 0.3, 1.5};
      auto f = [&](const torch::Tensor& s) {
        return top_k ? kd_loss_top_k(s, ids, tl, torch::ones({2}), o) : kd_loss(s, t, torch::ones({2}), o);
      };
      auto s = torch::randn({2, 5}).requires_grad_(true);
      f(s).backward();
      auto grad = s.grad().clone();
      const float eps = 1e-2f;
      for (int64_t i = 0; i < s.numel(); ++i) {
        auto plus = s.detach().clone(), minus = s.detach().clone();
        plus.view(-1)[i] += eps;
        minus.view(-1)[i] -= eps;
        double numeric = (f(plus).item<double>() - f(minus).item<double>()) / (2 * eps);
        EXPECT_NEAR(grad.view(-1)[i].item<double>(), numeric, 2e-3 + 2e-2 * std::abs(numeric))
            << "divergence " << static_cast<int>(d) << " top_k " << top_k << " index " << i;
      }
    }
  }
}

TEST(Losses, BadInputsFailClearly) {
  try {
    parse_divergence("kld");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected forward_kl, reverse_kl, jsd or tvd"), std::string::npos);
  }
  auto ids = torch::zeros({1, 5}, torch::kLong);
  EXPECT_THROW(kd_loss_top_k(torch::zeros({1, 4}), ids, torch::zeros({1, 5}), kOne, {}), Error);
  EXPECT_THROW(kd_loss(torch::zeros({1, 4}), torch::zeros({1, 4}), kOne, {Divergence::kJSD, 1.5}), Error);
  EXPECT_THROW(kd_loss(torch::zeros({1, 4}), torch::zeros({1, 3}), kOne, {}), Error);
}

}  // namespace
}  // namespace lineage::distill
