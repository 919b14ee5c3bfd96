// distill/losses: values against closed forms on hand-made distributions, the JSD endpoints,
// temperature scaling, masking, the top-k tail bucket, and gradients against finite differences.
#include "lineage/distill/losses.h"

#include <cmath>

#include "lineage/core/error.h"
#include "lineage/teacher/teacher.h"
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

TEST(Losses, TopKWithTheNextTokenOutsideIsItsOwnOutcome) {
  // Teacher keeps tokens 0 and 1 (0.5, 0.25); the next token is 3, which the teacher gives 0.125:
  // outcomes {0, 1, 3, rest} = {0.5, 0.25, 0.125, 0.125}; the uniform student {0.25, 0.25, 0.25, 0.25}.
  auto ids = torch::tensor({{0, 1}}, torch::kLong);
  auto tl = torch::tensor({{std::log(0.5f), std::log(0.25f)}});
  auto next = torch::tensor({3}, torch::kLong);
  auto next_lp = torch::tensor({std::log(0.125f)});
  double want = kl_closed({0.5, 0.25, 0.125, 0.125}, {0.25, 0.25, 0.25, 0.25});
  EXPECT_NEAR(kd_loss_sparse(logits_of(kS), {ids, tl, next, next_lp, {}}, kOne, {}).item<double>(), want, 1e-6);
  // Inside the top k it is nothing new: the k+1 outcomes of TopKTailBucketByHand.
  auto inside = torch::tensor({1}, torch::kLong);
  EXPECT_NEAR(kd_loss_sparse(logits_of(kS), {ids, tl, inside, torch::tensor({std::log(0.25f)}), {}}, kOne, {}).item<double>(),
              kl_closed({0.5, 0.25, 0.25}, {0.25, 0.25, 0.5}), 1e-6);
  // With the whole vocabulary listed, still the full loss, for every divergence.
  torch::manual_seed(4);
  auto s = torch::randn({4, 6}), t = torch::randn({4, 6});
  auto all = torch::arange(6, torch::kLong).repeat({4, 1});
  auto targets = torch::tensor({0, 5, 2, 2}, torch::kLong);
  auto tlog = torch::log_softmax(t, -1);
  for (auto d : {Divergence::kForwardKL, Divergence::kReverseKL, Divergence::kJSD, Divergence::kTVD})
    EXPECT_NEAR(kd_loss_sparse(s, {all, tlog, targets, tlog.gather(-1, targets.unsqueeze(-1)).squeeze(-1), {}},
                               torch::ones({4}), {d})
                    .item<float>(),
                kd_loss(s, t, torch::ones({4}), {d}).item<float>(), 2e-5);
  EXPECT_THROW(kd_loss_sparse(logits_of(kS), {ids, tl, next, {}, {}}, kOne, {}), Error);
}

TEST(Losses, TailDrawsGiveTheFullGradientInExpectation) {
  // Forward KL against top-2 + next + m tail draws: averaged over many draws, the gradient with
  // respect to the student's logits is the full-vocabulary one (Anshumann et al. 2025); top-2 +
  // one tail bucket is not.
  torch::manual_seed(5);
  const int64_t V = 12, M = 3;
  auto t = torch::randn({1, V}) * 1.5;
  auto s0 = torch::randn({1, V});
  auto logp = torch::log_softmax(t, -1);
  auto grad_of = [&](const std::function<torch::Tensor(const torch::Tensor&)>& f) {
    auto s = s0.clone().requires_grad_(true);
    f(s).backward();
    return s.grad().clone();
  };
  auto full = grad_of([&](const torch::Tensor& s) { return kd_loss(s, t, kOne, {}); });
  teacher::TopKRequest req;
  req.k = 2;
  req.next = torch::tensor({{7}}, torch::kLong);
  req.tail_samples = M;
  auto mean = torch::zeros_like(full);
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    req.seed = static_cast<uint64_t>(i);
    auto top = teacher::top_k_of(logp.unsqueeze(0), req);
    SparseTeacher st{top.ids[0], top.logprobs[0], req.next[0], top.target_logprobs[0], top.tail_ids[0]};
    mean += grad_of([&](const torch::Tensor& s) { return kd_loss_sparse(s, st, kOne, {}); });
  }
  mean /= n;
  EXPECT_LT((mean - full).abs().max().item<double>(), 0.01) << "mean " << mean << "\nfull " << full;
  auto top = teacher::top_k_of(logp.unsqueeze(0), req);
  auto bucket = grad_of([&](const torch::Tensor& s) { return kd_loss_top_k(s, top.ids[0], top.logprobs[0], kOne, {}); });
  EXPECT_GT((bucket - full).abs().max().item<double>(), 0.02) << "the tail bucket should differ from the full gradient";
}

TEST(Losses, GradientsMatchFiniteDifferences) {
  torch::manual_seed(3);
  auto t = torch::randn({2, 5});
  auto ids = torch::tensor({{0, 3}, {4, 1}}, torch::kLong);
  auto tl = torch::log_softmax(t, -1).gather(-1, ids);
  // Row 0's next token (2) is outside its top 2, row 1's (1) inside.
  auto next = torch::tensor({2, 1}, torch::kLong);
  auto next_lp = torch::log_softmax(t, -1).gather(-1, next.unsqueeze(-1)).squeeze(-1);
  auto tail = torch::tensor({{1, 4, 1}, {2, 2, 3}}, torch::kLong);  // draws (used by forward KL at tau 1)
  for (auto d : {Divergence::kForwardKL, Divergence::kReverseKL, Divergence::kJSD, Divergence::kTVD}) {
    for (int top_k : {0, 1, 2}) {
      // At tau = 1 forward KL uses the tail draws; elsewhere they are ignored.
      KDOptions o{d, 0.3, (top_k == 2 && d == Divergence::kForwardKL) ? 1.0 : 1.5};
      auto f = [&](const torch::Tensor& s) {
        if (top_k == 2) return kd_loss_sparse(s, {ids, tl, next, next_lp, tail}, torch::ones({2}), o);
        return top_k ? kd_loss_top_k(s, ids, tl, torch::ones({2}), o) : kd_loss(s, t, torch::ones({2}), o);
      };
      auto s = torch::randn({2, 5}).requires_grad_(true);
      f(s).backward();
      auto grad = s.grad().clone();
      // TVD has kinks where t = s; a smaller step keeps the difference quotient off them.
      const float eps = d == Divergence::kTVD ? 1e-3f : 1e-2f;
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
