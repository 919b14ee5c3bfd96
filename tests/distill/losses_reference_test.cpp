// distill/losses against an independent float64 reference of each formula, written here in plain
// loops over std::vector<double> (no torch): values, and gradients with respect to the student's
// logits by central differences of the reference (step 1e-5 in double: error ~1e-10).
//   forward/reverse KL, temperature   Hinton et al. (2015): softmax(z / tau), loss scaled by tau^2
//   generalized JSD(beta)             TRL's generalized_jsd_loss: m = beta*t + (1-beta)*s,
//                                     beta*KL(t||m) + (1-beta)*KL(s||m), beta 0 / 1 = forward / reverse
//                                     KL; per token summed over the vocabulary, mean over tokens
//   TVD                               (1/2) sum |t - s|
//   top-k                             k listed outcomes + one rest-of-mass outcome (tau acting on
//                                     the outcomes), or rest/m on each of m tail draws (forward KL)
// Distributions: random, peaked teacher, near-identical, and disjoint peaks (teacher and student
// sure of different tokens: where a bounded divergence saturates).
#include <cmath>
#include <functional>
#include <random>

#include "lineage/distill/losses.h"
#include "test_util.h"

namespace lineage::distill {
namespace {

using Vec = std::vector<double>;
using Rows = std::vector<Vec>;

Vec softmax(const Vec& z, double tau) {
  double mx = -INFINITY;
  for (double x : z) mx = std::max(mx, x / tau);
  double sum = 0;
  Vec p(z.size());
  for (size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] / tau - mx);
  for (double& x : p) x /= sum;
  return p;
}

double kl(const Vec& p, const Vec& q) {  // sum p log(p / q), 0 log 0 = 0
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0) s += p[i] * (std::log(p[i]) - std::log(q[i]));
  return s;
}

double divergence_ref(const Vec& s, const Vec& t, Divergence d, double beta) {
  switch (d) {
    case Divergence::kForwardKL: return kl(t, s);
    case Divergence::kReverseKL: return kl(s, t);
    case Divergence::kTVD: {
      double sum = 0;
      for (size_t i = 0; i < s.size(); ++i) sum += std::abs(t[i] - s[i]);
      return 0.5 * sum;
    }
    case Divergence::kJSD: {
      if (beta == 0) return kl(t, s);
      if (beta == 1) return kl(s, t);
      Vec m(s.size());
      for (size_t i = 0; i < s.size(); ++i) m[i] = beta * t[i] + (1 - beta) * s[i];
      return beta * kl(t, m) + (1 - beta) * kl(s, m);
    }
  }
  return NAN;
}

// Full vocabulary: mean over rows of tau^2 * D(softmax(t/tau), softmax(s/tau)).
double full_ref(const Rows& zs, const Rows& zt, const KDOptions& o) {
  double sum = 0;
  for (size_t r = 0; r < zs.size(); ++r)
    sum += divergence_ref(softmax(zs[r], o.temperature), softmax(zt[r], o.temperature), o.divergence, o.beta);
  return sum / static_cast<double>(zs.size()) * o.temperature * o.temperature;
}

// Top-k + rest: outcomes ids[r] and the rest of each model's mass; tau acts on the outcomes.
double top_k_ref(const Rows& zs, const std::vector<std::vector<int64_t>>& ids, const Rows& t_logp, const KDOptions& o) {
  double sum = 0;
  for (size_t r = 0; r < zs.size(); ++r) {
    Vec s_all = softmax(zs[r], 1.0), s, t;
    double s_in = 0, t_in = 0;
    for (size_t j = 0; j < ids[r].size(); ++j) {
      s.push_back(s_all[ids[r][j]]);
      t.push_back(std::exp(t_logp[r][j]));
      s_in += s.back();
      t_in += t.back();
    }
    s.push_back(1 - s_in);
    t.push_back(1 - t_in);
    if (o.temperature != 1.0) {  // q_i ∝ q_i^(1/tau)
      for (Vec* q : {&s, &t}) {
        Vec lq;
        for (double x : *q) lq.push_back(std::log(x));
        *q = softmax(lq, o.temperature);
      }
    }
    sum += divergence_ref(s, t, o.divergence, o.beta);
  }
  return sum / static_cast<double>(zs.size()) * o.temperature * o.temperature;
}

// Forward KL with tail draws: top-k outcomes, then each of the m draws gets rest/m of the
// teacher's mass and the student's own probability of the drawn token.
double tail_draws_ref(const Rows& zs, const std::vector<std::vector<int64_t>>& ids, const Rows& t_logp,
                      const std::vector<std::vector<int64_t>>& draws) {
  double sum = 0;
  for (size_t r = 0; r < zs.size(); ++r) {
    Vec s_all = softmax(zs[r], 1.0), s, t;
    double t_in = 0;
    for (size_t j = 0; j < ids[r].size(); ++j) {
      s.push_back(s_all[ids[r][j]]);
      t.push_back(std::exp(t_logp[r][j]));
      t_in += t.back();
    }
    for (int64_t d : draws[r]) {
      s.push_back(s_all[d]);
      t.push_back((1 - t_in) / static_cast<double>(draws[r].size()));
    }
    sum += kl(t, s);
  }
  return sum / static_cast<double>(zs.size());
}

double ce_ref(const Rows& zs, const std::vector<int64_t>& targets) {
  double sum = 0;
  for (size_t r = 0; r < zs.size(); ++r) sum -= std::log(softmax(zs[r], 1.0)[targets[r]]);
  return sum / static_cast<double>(zs.size());
}

// d f / d zs by central differences of the double reference.
Rows grad_ref(const std::function<double(const Rows&)>& f, Rows zs) {
  const double h = 1e-5;
  Rows g(zs.size(), Vec(zs[0].size()));
  for (size_t r = 0; r < zs.size(); ++r)
    for (size_t i = 0; i < zs[r].size(); ++i) {
      const double keep = zs[r][i];
      zs[r][i] = keep + h;
      const double up = f(zs);
      zs[r][i] = keep - h;
      const double down = f(zs);
      zs[r][i] = keep;
      g[r][i] = (up - down) / (2 * h);
    }
  return g;
}

torch::Tensor tensor_of(const Rows& rows) {
  std::vector<float> flat;
  for (const Vec& r : rows)
    for (double x : r) flat.push_back(static_cast<float>(x));
  return torch::tensor(flat).view({static_cast<int64_t>(rows.size()), -1});
}

// The library's value and gradient (float32, autograd) against the reference's.
void expect_matches(const std::function<torch::Tensor(const torch::Tensor&)>& lib,
                    const std::function<double(const Rows&)>& ref, const Rows& zs, const std::string& what) {
  // The reference sees exactly the float32 logits the library sees.
  Rows zs32 = zs;
  for (Vec& r : zs32)
    for (double& x : r) x = static_cast<double>(static_cast<float>(x));
  auto s = tensor_of(zs32).requires_grad_(true);
  auto value = lib(s);
  value.backward();
  const double want = ref(zs32);
  EXPECT_NEAR(value.item<double>(), want, 1e-5 * std::abs(want) + 2e-7) << what << ": value";
  const Rows g = grad_ref(ref, zs32);
  double scale = 0;
  for (const Vec& r : g)
    for (double x : r) scale = std::max(scale, std::abs(x));
  auto got = s.grad();
  double worst = 0;
  for (size_t r = 0; r < g.size(); ++r)
    for (size_t i = 0; i < g[r].size(); ++i)
      worst = std::max(worst, std::abs(got[r][i].item<double>() - g[r][i]));
  // float32 gradients of terms like s * (log s - log t) carry ~1e-7 of each term's size: 1e-6 absolute.
  EXPECT_LE(worst, 1e-5 * scale + 1e-6) << what << ": gradient (largest |reference| " << scale << ")";
}

struct Case {
  std::string name;
  Rows zs, zt;
};

// V = 67 (not a power of two), 3 rows each.
std::vector<Case> cases() {
  std::mt19937_64 rng(20);
  std::normal_distribution<double> n01(0, 1);
  const size_t V = 67, N = 3;
  auto random_rows = [&](double scale) {
    Rows r(N, Vec(V));
    for (Vec& row : r)
      for (double& x : row) x = scale * n01(rng);
    return r;
  };
  std::vector<Case> out;
  out.push_back({"random", random_rows(2.0), random_rows(2.0)});
  Case peaked{"peaked teacher", random_rows(1.0), random_rows(1.0)};
  for (size_t r = 0; r < N; ++r) peaked.zt[r][5 + r] += 12;  // the teacher is ~99.9% sure
  out.push_back(peaked);
  Case near{"near-identical", random_rows(2.0), {}};
  near.zt = near.zs;
  for (Vec& row : near.zt)
    for (double& x : row) x += 0.05 * n01(rng);
  out.push_back(near);
  Case disjoint{"disjoint peaks", random_rows(0.5), random_rows(0.5)};
  for (size_t r = 0; r < N; ++r) disjoint.zt[r][3] += 10, disjoint.zs[r][40] += 10;
  out.push_back(disjoint);
  return out;
}

const Divergence kAll[] = {Divergence::kForwardKL, Divergence::kReverseKL, Divergence::kJSD, Divergence::kTVD};

std::string label(const Case& c, const KDOptions& o) {
  return fmt::format("{} / divergence {} beta {} tau {}", c.name, static_cast<int>(o.divergence), o.beta, o.temperature);
}

TEST(LossReference, FullVocabularyEveryDivergenceBetaAndTemperature) {
  for (const Case& c : cases()) {
    auto t = tensor_of(c.zt);
    auto mask = torch::ones({static_cast<int64_t>(c.zs.size())});
    for (Divergence d : kAll)
      for (double beta : d == Divergence::kJSD ? Vec{0.0, 0.1, 0.5, 0.9, 1.0} : Vec{0.5})
        for (double tau : {1.0, 2.0, 0.5}) {
          KDOptions o{d, beta, tau};
          // TVD has kinks where t = s; near-identical rows put the difference quotient on them.
          if (d == Divergence::kTVD && c.name == "near-identical") continue;
          expect_matches([&](const torch::Tensor& s) { return kd_loss(s, t, mask, o); },
                         [&](const Rows& zs) { return full_ref(zs, c.zt, o); }, c.zs, label(c, o));
        }
  }
}

TEST(LossReference, TopKWithTheRestAsOneOutcome) {
  for (const Case& c : cases()) {
    // The teacher's 20 most likely tokens (its top k), from the float64 log-softmax.
    std::vector<std::vector<int64_t>> ids;
    Rows logp;
    for (const Vec& zt : c.zt) {
      Vec p = softmax(zt, 1.0);
      std::vector<int64_t> order(p.size());
      for (size_t i = 0; i < p.size(); ++i) order[i] = static_cast<int64_t>(i);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
      order.resize(20);
      Vec lp;
      for (int64_t i : order) lp.push_back(std::log(p[i]));
      ids.push_back(order);
      logp.push_back(lp);
    }
    std::vector<int64_t> flat_ids;
    for (auto& r : ids) flat_ids.insert(flat_ids.end(), r.begin(), r.end());
    auto ids_t = torch::tensor(flat_ids, torch::kLong).view({static_cast<int64_t>(ids.size()), -1});
    auto logp_t = tensor_of(logp);
    // What the library reads is float32: the reference takes the same numbers.
    for (Vec& r : logp)
      for (double& x : r) x = static_cast<double>(static_cast<float>(x));
    auto mask = torch::ones({static_cast<int64_t>(c.zs.size())});
    for (Divergence d : kAll)
      for (double tau : {1.0, 2.0}) {
        KDOptions o{d, 0.5, tau};
        if (d == Divergence::kTVD && c.name == "near-identical") continue;
        expect_matches([&](const torch::Tensor& s) { return kd_loss_top_k(s, ids_t, logp_t, mask, o); },
                       [&](const Rows& zs) { return top_k_ref(zs, ids, logp, o); }, c.zs, "top-20 " + label(c, o));
      }
    // Forward KL at tau 1 with 6 tail draws per row (a token may be drawn twice).
    std::mt19937_64 rng(7);
    std::vector<std::vector<int64_t>> draws;
    std::vector<int64_t> flat_draws;
    for (size_t r = 0; r < ids.size(); ++r) {
      std::vector<int64_t> row;
      while (row.size() < 6) {
        const int64_t tok = static_cast<int64_t>(rng() % c.zs[r].size());
        if (std::find(ids[r].begin(), ids[r].end(), tok) == ids[r].end()) row.push_back(tok);
      }
      flat_draws.insert(flat_draws.end(), row.begin(), row.end());
      draws.push_back(row);
    }
    SparseTeacher st;
    st.ids = ids_t;
    st.logprobs = logp_t;
    st.tail_ids = torch::tensor(flat_draws, torch::kLong).view({static_cast<int64_t>(draws.size()), -1});
    expect_matches([&](const torch::Tensor& s) { return kd_loss_sparse(s, st, mask, {}); },
                   [&](const Rows& zs) { return tail_draws_ref(zs, ids, logp, draws); }, c.zs, "tail draws " + c.name);
  }
}

TEST(LossReference, CrossEntropyAndTheAlphaMix) {
  for (const Case& c : cases()) {
    std::vector<int64_t> targets{3, 40, 66};
    auto tg = torch::tensor(targets, torch::kLong);
    auto t = tensor_of(c.zt);
    auto mask = torch::ones({3});
    expect_matches([&](const torch::Tensor& s) { return ce_loss(s, tg, mask); },
                   [&](const Rows& zs) { return ce_ref(zs, targets); }, c.zs, "cross-entropy " + c.name);
    // alpha * KD + (1 - alpha) * CE, as the modes combine them (src/distill/modes/common.cpp).
    for (double alpha : {0.5, 0.9}) {
      KDOptions o{Divergence::kJSD, 0.5, 2.0};
      expect_matches(
          [&](const torch::Tensor& s) { return alpha * kd_loss(s, t, mask, o) + (1 - alpha) * ce_loss(s, tg, mask); },
          [&](const Rows& zs) { return alpha * full_ref(zs, c.zt, o) + (1 - alpha) * ce_ref(zs, targets); }, c.zs,
          fmt::format("alpha {} {}", alpha, c.name));
    }
  }
}

// Why JSD(0.5) trains a fresh student slowly (issue 20's study): the gradient a divergence gives
// the logit of token i. Forward KL's is s_i - t_i: a token the teacher likes and the student does
// not yet predict gets pulled up at the teacher's probability. Reverse KL's and JSD's are s_i
// times a logarithm: they vanish as s_i -> 0, so a student learns little about the teacher's
// tokens that it does not already give some mass to (GKD starts from a fine-tuned student).
TEST(LossReference, JsdAndReverseKlBarelyPullUpTokensTheStudentDoesNotPredict) {
  const size_t V = 50;
  Vec zt(V, 0.0), zs(V, 0.0);
  zt[7] = std::log(0.5 * (V - 1) / 0.5);  // the teacher: 0.5 on token 7
  zs[7] = -8;                             // the student: ~1.7e-5 on it
  auto grad7 = [&](Divergence d, double beta) {
    return grad_ref([&](const Rows& s) { return full_ref(s, Rows{zt}, {d, beta, 1.0}); }, Rows{zs})[0][7];
  };
  const double forward = grad7(Divergence::kForwardKL, 0.5);
  EXPECT_NEAR(forward, softmax(zs, 1)[7] - softmax(zt, 1)[7], 1e-8);  // s - t: about -0.5
  EXPECT_LT(forward, -0.49);
  for (double beta : {0.1, 0.5, 0.9}) {
    const double jsd = grad7(Divergence::kJSD, beta);
    EXPECT_LT(jsd, 0) << beta;  // the right direction ...
    EXPECT_GT(jsd, forward / 100) << beta;  // ... at under 1% of forward KL's pull
  }
  EXPECT_GT(grad7(Divergence::kReverseKL, 0.5), forward / 100);
}

TEST(LossReference, MaskedRowsAreLeftOutOfTheMean) {
  const Case c = cases()[0];
  auto t = tensor_of(c.zt);
  auto mask = torch::tensor({1.0f, 0.0f, 1.0f});
  KDOptions o{Divergence::kJSD, 0.5, 1.0};
  Rows zt_kept{c.zt[0], c.zt[2]};
  expect_matches(
      [&](const torch::Tensor& s) { return kd_loss(s, t.index_select(0, torch::tensor({0, 2})), torch::ones({2}), o); },
      [&](const Rows& zs) { return full_ref(zs, zt_kept, o); }, Rows{c.zs[0], c.zs[2]}, "masked reference");
  auto s = tensor_of(c.zs);
  EXPECT_NEAR(kd_loss(s, t, mask, o).item<double>(), full_ref(Rows{c.zs[0], c.zs[2]}, zt_kept, o), 1e-6);
}

}  // namespace
}  // namespace lineage::distill
