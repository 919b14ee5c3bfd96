// Antidistillation's proxy-gradient core (protect/antidistill.h): the finite-difference Δ against
// the exact directional derivative from autograd in float64, for both objectives; the batched step
// against feeding the whole context again; the float32 default step against float64; and the
// objectives themselves against their definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lineage/protect/antidistill.h"
#include "lineage/protect/watermark.h"

namespace lineage::protect {
namespace {

model::Llama tiny(torch::Dtype dtype, uint64_t seed = 5, int64_t vocab = 48) {
  model::ModelConfig c;
  c.vocab_size = vocab;
  c.dim = 16;
  c.hidden_dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 32;
  torch::manual_seed(seed);
  model::Llama m(c);
  {
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.normal_(0.0, 0.3);
  }
  m->to(dtype);
  m->eval();
  return m;
}

std::vector<std::vector<int32_t>> random_windows(int rows, int len, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> out(rows);
  for (auto& w : out)
    for (int i = 0; i < len; ++i) w.push_back(static_cast<int32_t>(rng() % vocab));
  return out;
}

// The exact Δ(x) = ⟨∇θ log p(x | context), g/‖g‖⟩ for every x, by autograd on `net` (no cache).
std::vector<double> exact_delta(model::Llama& net, const std::vector<std::vector<int32_t>>& windows,
                                const ProxyObjective& objective, const std::vector<int32_t>& context) {
  auto params = net->parameters();
  for (auto& p : params) p.set_requires_grad(true);
  torch::AutoGradMode on(true);
  auto g = torch::autograd::grad({proxy_objective(net, windows, objective)}, params);
  double sq = 0;
  for (auto& t : g) sq += t.pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  std::vector<int64_t> ids(context.begin(), context.end());
  auto tokens = torch::tensor(ids, torch::kLong).view({1, static_cast<int64_t>(ids.size())});
  auto logp = torch::log_softmax(net->forward(tokens).select(1, -1)[0], -1);  // (V)
  std::vector<double> out;
  for (int64_t x = 0; x < logp.size(0); ++x) {
    auto gx = torch::autograd::grad({logp[x]}, params, {}, /*retain_graph=*/true);
    double dot = 0;
    for (size_t i = 0; i < params.size(); ++i) dot += (gx[i] * g[i]).sum().item<double>();
    out.push_back(dot / norm);
  }
  for (auto& p : params) p.set_requires_grad(false);
  return out;
}

// A copy of `net` as a new model (the adjuster takes its proxy by value and owns it).
model::Llama copy_of(model::Llama& net, torch::Dtype dtype) {
  model::Llama m(net->config());
  m->to(dtype);
  torch::NoGradGuard g;
  auto src = net->named_parameters(true);
  for (auto& p : m->named_parameters(true)) p.value().copy_(src[p.key()]);
  m->eval();
  return m;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

class AntidistillObjectives : public ::testing::TestWithParam<ProxyObjective::Kind> {};

TEST_P(AntidistillObjectives, FiniteDifferenceDeltaIsTheAutogradDirectionalDerivative) {
  auto reference = tiny(torch::kDouble);
  const int64_t V = reference->config().vocab_size;
  auto data = random_windows(6, 12, V, 1);
  ProxyObjective objective{GetParam(), nullptr};
  if (GetParam() == ProxyObjective::Kind::kGreenMass)
    objective.green = std::make_shared<Watermark>(WatermarkKey::random(), WatermarkParams{0.25, 2.0, 1});
  AntidistillParams params;
  params.epsilon = 1e-5;
  params.rows = 6;  // every window: the same J as exact_delta's
  ProxyAdjuster adj(copy_of(reference, torch::kDouble), data, objective, params);
  EXPECT_GT(adj.gradient_norm(), 0);

  std::vector<int32_t> context{3, 17, 9, 40, 2};
  ProxyAdjuster::Stream s;
  adj.advance(s, context, 16);
  auto exact = exact_delta(reference, data, objective, context);
  ASSERT_EQ(s.delta.numel(), V);
  const double scale = max_abs(exact);
  ASSERT_GT(scale, 1e-3);  // a direction that moves the distribution at all
  for (int64_t x = 0; x < V; ++x)
    EXPECT_NEAR(s.delta[x].item<double>(), exact[x], 1e-6 * scale) << "token " << x;

  // The batched step (decode_slots with the streams' caches) gives the Δ of the longer context.
  ProxyAdjuster::Stream other;
  adj.advance(other, std::vector<int32_t>{7, 7, 1}, 16);
  adj.step({&s, &other}, {11, 30});
  context.push_back(11);
  exact = exact_delta(reference, data, objective, context);
  for (int64_t x = 0; x < V; ++x) EXPECT_NEAR(s.delta[x].item<double>(), exact[x], 1e-6 * scale) << "token " << x;
  auto again = exact_delta(reference, data, objective, {7, 7, 1, 30});
  for (int64_t x = 0; x < V; ++x) EXPECT_NEAR(other.delta[x].item<double>(), again[x], 1e-6 * scale) << "token " << x;

  // A context that shares a prefix with what the stream holds (a rejected speculative draft), or
  // is a prefix of it, rewinds the caches to what they share.
  for (const std::vector<int32_t>& back : {std::vector<int32_t>{3, 17, 9, 8}, std::vector<int32_t>{3, 17, 9}}) {
    adj.advance(s, back, 16);
    again = exact_delta(reference, data, objective, back);
    for (int64_t x = 0; x < V; ++x) EXPECT_NEAR(s.delta[x].item<double>(), again[x], 1e-6 * scale) << "token " << x;
  }
  // A context that does not extend what the stream holds (a context shift) starts it over.
  adj.advance(s, std::vector<int32_t>{5, 6}, 16);
  again = exact_delta(reference, data, objective, {5, 6});
  for (int64_t x = 0; x < V; ++x) EXPECT_NEAR(s.delta[x].item<double>(), again[x], 1e-6 * scale) << "token " << x;
}

INSTANTIATE_TEST_SUITE_P(Both, AntidistillObjectives,
                         ::testing::Values(ProxyObjective::Kind::kHeldOutLoss, ProxyObjective::Kind::kGreenMass),
                         [](const auto& info) {
                           return info.param == ProxyObjective::Kind::kHeldOutLoss ? "HeldOutLoss" : "GreenMass";
                         });

TEST(Antidistill, TheFloat32DefaultStepStaysCloseToTheFloat64Derivative) {
  auto reference = tiny(torch::kDouble, 9);
  const int64_t V = reference->config().vocab_size;
  auto data = random_windows(4, 16, V, 2);
  ProxyObjective objective{ProxyObjective::Kind::kHeldOutLoss, nullptr};
  AntidistillParams params;  // the default ε
  params.rows = 4;
  ProxyAdjuster adj(copy_of(reference, torch::kFloat32), data, objective, params);
  std::vector<int32_t> context{1, 2, 3, 4, 5, 6};
  ProxyAdjuster::Stream s;
  adj.advance(s, context, 8);
  auto exact = exact_delta(reference, data, objective, context);
  double err = 0;
  for (int64_t x = 0; x < V; ++x) err = std::max(err, std::abs(s.delta[x].item<double>() - exact[x]));
  EXPECT_LT(err, 0.01 * max_abs(exact)) << "largest error " << err << " of max |Δ| " << max_abs(exact);
}

TEST(Antidistill, ObjectivesAreTheirDefinitions) {
  auto net = tiny(torch::kDouble, 4);
  const int64_t V = net->config().vocab_size;
  auto windows = random_windows(2, 5, V, 3);
  torch::NoGradGuard g;
  std::vector<int64_t> ids;
  for (auto& w : windows) ids.insert(ids.end(), w.begin(), w.end());
  auto logp = torch::log_softmax(net->forward(torch::tensor(ids, torch::kLong).view({2, 5})), -1);
  auto wm = std::make_shared<Watermark>(WatermarkKey::random(), WatermarkParams{0.25, 2.0, 1});
  double nll = 0, log_green = 0;
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < 4; ++t) {
      nll -= logp[r][t][windows[r][t + 1]].item<double>();
      auto mask = wm->green_mask(std::span<const int32_t>(windows[r].data(), t + 1), V);
      double mass = 0;
      for (int64_t v = 0; v < V; ++v)
        if (mask[v]) mass += std::exp(logp[r][t][v].item<double>());
      log_green += std::log(mass);
    }
  EXPECT_NEAR(proxy_objective(net, windows, {ProxyObjective::Kind::kHeldOutLoss, nullptr}).item<double>(), nll / 8, 1e-9);
  EXPECT_NEAR(proxy_objective(net, windows, {ProxyObjective::Kind::kGreenMass, wm}).item<double>(), log_green / 8, 1e-9);
}

TEST(Antidistill, ApplyAddsLambdaTimesTemperatureTimesDelta) {
  auto net = tiny(torch::kFloat32, 6);
  AntidistillParams params;
  params.lambda = 0.5;
  ProxyAdjuster adj(copy_of(net, torch::kFloat32), random_windows(3, 10, 48, 4), {}, params);
  ProxyAdjuster::Stream s;
  adj.advance(s, std::vector<int32_t>{1, 2}, 8);
  std::vector<float> z(48, 1.0f), greedy(48, 1.0f);
  adj.apply(s, z, 2.0);
  adj.apply(s, greedy, 0.0);
  for (int v = 0; v < 48; ++v) {
    EXPECT_NEAR(z[v], 1.0f + 0.5f * 2.0f * s.delta[v].item<float>(), 1e-5);
    EXPECT_NEAR(greedy[v], 1.0f + 0.5f * s.delta[v].item<float>(), 1e-5);
  }
  std::vector<float> wrong(47);
  EXPECT_THROW(adj.apply(s, wrong, 1.0), std::exception);
}

TEST(Antidistill, RefreshDrawsNewWindowsAndStreamsFollowTheNewDirection) {
  auto net = tiny(torch::kDouble, 8);
  AntidistillParams params;
  params.rows = 2;
  params.refresh_every = 3;
  params.epsilon = 1e-5;
  auto data = random_windows(12, 10, 48, 5);
  ProxyAdjuster adj(copy_of(net, torch::kDouble), data, {}, params);
  ProxyAdjuster::Stream s;
  adj.advance(s, std::vector<int32_t>{4, 5}, 8);
  const double before = adj.gradient_norm();
  auto delta_before = s.delta.clone();
  for (int i = 0; i < 3; ++i) adj.count_request();  // the third starts a new draw
  EXPECT_NE(adj.gradient_norm(), before);
  adj.step({&s}, {6});  // made with the old ĝ: fed again under the new one
  ProxyAdjuster::Stream fresh;
  adj.advance(fresh, std::vector<int32_t>{4, 5, 6}, 8);
  EXPECT_TRUE(torch::allclose(s.delta, fresh.delta));
}

TEST(Antidistill, BadParametersAndShortTextAreNamed) {
  AntidistillParams p;
  p.epsilon = 0;
  try {
    validate(p);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("epsilon"), std::string::npos);
  }
  std::vector<int32_t> ids{1, 2, 3};
  try {
    token_windows(ids, 8, "held.txt");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("held.txt"), std::string::npos);
  }
  EXPECT_EQ(token_windows(std::vector<int32_t>(20, 1), 4, "x").size(), 4u);
}

}  // namespace
}  // namespace lineage::protect
