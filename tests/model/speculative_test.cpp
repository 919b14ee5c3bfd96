// Speculative decoding (model/speculative.h): greedy output token for token the target's own, on
// the CPU decoder and on libtorch, whatever the draft; sampled output distributed as the target's
// sampling distribution (chi-square over seeded draws of the first two tokens, against the exact
// joint probability), with temperature, top-k and a logits processor; and the same test rejects
// the draft's own distribution, so it can fail.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "lineage/model/generate.h"
#include "lineage/model/sampler.h"
#include "lineage/model/speculative.h"

namespace lineage::model {
namespace {

Llama tiny(uint64_t seed, int64_t vocab, int64_t dim, double scale) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.dim = dim;
  c.hidden_dim = 2 * dim;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 64;
  torch::manual_seed(seed);
  Llama m(c);
  {
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.normal_(0.0, scale);
  }
  m->eval();
  return m;
}

TEST(Speculative, GreedyIsTheTargetsOwnTextOnBothPathsAtEveryK) {
  auto target = tiny(1, 96, 32, 0.3), other = tiny(2, 96, 16, 0.3);
  for (bool cpu : {true, false}) {
    Llama t = target, d = other;
    if (!cpu) {  // float64 models take the libtorch path
      t = tiny(1, 96, 32, 0.3);
      d = tiny(2, 96, 16, 0.3);
      t->to(torch::kDouble);
      d->to(torch::kDouble);
    }
    for (const std::vector<int32_t>& prompt : {std::vector<int32_t>{5}, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7}}) {
      GenerateOptions g;
      g.max_tokens = 40;
      g.sampling.temperature = 0;
      auto plain = generate(t, prompt, g);
      ASSERT_EQ(plain.size(), 40u);
      for (int k : {1, 2, 3, 4, 8}) {
        SpeculativeStats s;
        EXPECT_EQ(generate_speculative(t, d, prompt, g, k, &s), plain) << "k " << k << (cpu ? " cpu" : " torch");
        EXPECT_EQ(s.emitted, 40);
        EXPECT_LE(s.accepted, s.drafted);
        // The target as its own draft: every draft token is kept.
        SpeculativeStats self;
        EXPECT_EQ(generate_speculative(t, t, prompt, g, k, &self), plain);
        EXPECT_EQ(self.accepted, self.drafted);
        EXPECT_NEAR(self.tokens_per_verification(), std::min(k + 1, 40), 1.0 + 1e-9);
      }
    }
  }
}

TEST(Speculative, StopsAtStopIdsMaxTokensAndTheContextLikeGenerate) {
  auto t = tiny(3, 64, 32, 0.3), d = tiny(4, 64, 16, 0.3);
  GenerateOptions g;
  g.sampling.temperature = 0;
  g.max_tokens = 100;  // more than the 64 positions: stops where generate stops
  std::vector<int32_t> prompt{1, 2, 3};
  auto plain = generate(t, prompt, g);
  EXPECT_EQ(generate_speculative(t, d, prompt, g, 4), plain);
  g.stop_ids = {plain[5]};
  EXPECT_EQ(generate_speculative(t, d, prompt, g, 4), generate(t, prompt, g));
  g.stop_ids.clear();
  std::vector<int32_t> seen;
  auto got = generate_speculative(t, d, prompt, g, 4, nullptr, [&](int32_t id) {
    seen.push_back(id);
    return seen.size() < 3;
  });
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(seen, got);
}

// The exact joint probability of the first two tokens under the sampling distribution of `m`
// after `prompt`, with the processor applied.
std::map<std::pair<int32_t, int32_t>, double> exact_pairs(Llama& m, const std::vector<int32_t>& prompt,
                                                          const GenerateOptions& g) {
  torch::NoGradGuard ng;
  Sampler s(g.sampling);
  auto dist = [&](const std::vector<int32_t>& ctx) {
    auto t = torch::tensor(std::vector<int64_t>(ctx.begin(), ctx.end()), torch::kLong).view({1, -1});
    auto row = m->forward(t)[0][static_cast<int64_t>(ctx.size()) - 1].to(torch::kFloat32).contiguous();
    std::span<float> logits(row.data_ptr<float>(), static_cast<size_t>(row.numel()));
    if (g.logits_processor) g.logits_processor(ctx, logits);
    return s.distribution(logits);
  };
  std::map<std::pair<int32_t, int32_t>, double> out;
  auto p1 = dist(prompt);
  for (size_t a = 0; a < p1.size(); ++a) {
    if (p1[a] == 0) continue;
    auto ctx = prompt;
    ctx.push_back(static_cast<int32_t>(a));
    auto p2 = dist(ctx);
    for (size_t b = 0; b < p2.size(); ++b)
      if (p2[b] > 0) out[{static_cast<int32_t>(a), static_cast<int32_t>(b)}] = p1[a] * p2[b];
  }
  return out;
}

// Pearson's chi-square of `counts` (n draws) against `expected`, cells under 5 expected pooled;
// returns the statistic over its 0.999 quantile (Wilson-Hilferty), so > 1 rejects at 0.1%.
double chi_square_ratio(const std::map<std::pair<int32_t, int32_t>, int>& counts,
                        const std::map<std::pair<int32_t, int32_t>, double>& expected, int n) {
  double chi = 0, pooled_e = 0, pooled_o = 0;
  int cells = 0, unexpected = 0;
  for (const auto& [cell, p] : expected) {
    const double e = p * n;
    auto it = counts.find(cell);
    const double o = it == counts.end() ? 0 : it->second;
    if (e < 5) {
      pooled_e += e;
      pooled_o += o;
      continue;
    }
    chi += (o - e) * (o - e) / e;
    ++cells;
  }
  for (const auto& [cell, c] : counts)
    if (!expected.count(cell)) unexpected += c;  // a pair the target never makes
  if (pooled_e > 0) {
    chi += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
    ++cells;
  }
  if (unexpected > 0) return 1e9;
  const double dof = cells - 1, z = 3.090;  // the normal's 0.999 quantile
  const double q = dof * std::pow(1 - 2 / (9 * dof) + z * std::sqrt(2 / (9 * dof)), 3);
  return chi / q;
}

struct Case {
  const char* name;
  float temperature;
  int top_k;
  bool processor;
};

TEST(Speculative, SampledOutputFollowsTheTargetsDistributionExactly) {
  auto t = tiny(5, 12, 32, 0.5), d = tiny(6, 12, 16, 0.5);
  const std::vector<int32_t> prompt{1, 4, 2};
  constexpr int kDraws = 12000;
  for (const Case& c : {Case{"temperature 1", 1.0f, 0, false}, Case{"temperature 0.7, top-k 5", 0.7f, 5, false},
                        Case{"a processor's bias", 1.0f, 0, true}}) {
    GenerateOptions g;
    g.max_tokens = 2;
    g.sampling.temperature = c.temperature;
    g.sampling.top_k = c.top_k;
    if (c.processor)  // as a watermark would: +1.5 on ids whose sum with the last id is even
      g.logits_processor = [](std::span<const int32_t> ctx, std::span<float> logits) {
        for (size_t v = 0; v < logits.size(); ++v)
          if ((v + ctx.back()) % 2 == 0) logits[v] += 1.5f;
      };
    auto expected = exact_pairs(t, prompt, g);
    std::map<std::pair<int32_t, int32_t>, int> spec, drafted;
    SpeculativeStats stats;
    for (int i = 0; i < kDraws; ++i) {
      g.sampling.seed = 1000 + i;
      auto got = generate_speculative(t, d, prompt, g, i % 2 ? 2 : 3, &stats);
      ASSERT_EQ(got.size(), 2u);
      ++spec[{got[0], got[1]}];
      GenerateOptions alone = g;  // the draft sampling by itself: what the test must tell apart
      alone.logits_processor = nullptr;
      auto own = generate(d, prompt, alone);
      ++drafted[{own[0], own[1]}];
    }
    const double ratio = chi_square_ratio(spec, expected, kDraws);
    EXPECT_LT(ratio, 1.0) << c.name << ": chi-square " << ratio << " of its 0.999 quantile";
    EXPECT_GT(chi_square_ratio(drafted, expected, kDraws), 1.0) << c.name << ": the test cannot tell the draft apart";
    EXPECT_GT(stats.accepted, 0) << c.name;
    EXPECT_LT(stats.accepted, stats.drafted) << c.name;
  }
}

TEST(Speculative, SamplerDistributionIsWhatSampleDrawsFrom) {
  std::vector<float> logits{0.5f, 2.0f, -1.0f, 1.5f, 1.5f, 0.0f};
  for (const SamplingOptions& o : {SamplingOptions{1.0f, 0, 1.0f, 1}, SamplingOptions{0.6f, 3, 1.0f, 2},
                                   SamplingOptions{1.3f, 0, 0.7f, 3}, SamplingOptions{0.0f, 0, 1.0f, 4}}) {
    Sampler s(o);
    auto p = s.distribution(logits);
    std::vector<double> freq(logits.size());
    constexpr int kN = 60000;
    for (int i = 0; i < kN; ++i) freq[s.sample(logits)] += 1.0 / kN;
    double total = 0;
    for (size_t v = 0; v < p.size(); ++v) {
      total += p[v];
      EXPECT_NEAR(freq[v], p[v], 0.01) << "token " << v << " temperature " << o.temperature;
      if (p[v] == 0) EXPECT_EQ(freq[v], 0) << "token " << v;
    }
    EXPECT_NEAR(total, 1.0, 1e-12);
  }
}

TEST(Speculative, ADraftOfAnotherVocabularyIsRefused) {
  auto t = tiny(7, 64, 32, 0.3), d = tiny(8, 65, 16, 0.3);
  GenerateOptions g;
  try {
    generate_speculative(t, d, {1, 2}, g, 4);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lineage::model
