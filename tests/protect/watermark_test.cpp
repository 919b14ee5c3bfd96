// The green-list watermark: its statistics against closed forms, the bias, the key file rules, and
// detection on a tiny model's generations with and without the watermark.
#include <sys/stat.h>

#include <cmath>
#include <random>

#include "lineage/model/generate.h"
#include "lineage/protect/detect.h"
#include "lineage/protect/trace.h"
#include "lineage/protect/watermark.h"
#include "test_util.h"

namespace lineage::protect {
namespace {

using testing::error_of;
using testing::TempDir;

Watermark make(double gamma = 0.25, int h = 1, uint64_t seed = 1) {
  // A fixed key, so failures repeat.
  std::mt19937_64 rng(seed);
  TempDir tmp;
  std::string hexkey;
  for (int i = 0; i < 32; ++i) hexkey += fmt::format("{:02x}", rng() & 0xff);
  testing::spit(tmp / "k", hexkey + "\n");
  ::chmod((tmp / "k").c_str(), 0600);
  return Watermark(WatermarkKey::read(tmp / "k"), {gamma, 2.0, h});
}

TEST(Watermark, TheGreenShareIsGammaAndTheTailIsExact) {
  // Closed forms: Φ̄(4) = 3.1671241833e-05, Φ̄(6) = 9.8658765219e-10, Φ̄(10) = 7.6198530242e-24.
  EXPECT_NEAR(normal_upper_tail(4) / 3.1671241833e-05, 1, 1e-8);
  EXPECT_NEAR(normal_upper_tail(6) / 9.8658765219e-10, 1, 1e-8);
  EXPECT_NEAR(normal_upper_tail(10) / 7.6198530242e-24, 1, 1e-7);
  EXPECT_NEAR(green_z(40, 100, 0.25), 15 / std::sqrt(18.75), 1e-12);

  for (double gamma : {0.1, 0.25, 0.5}) {
    auto wm = make(gamma, 2);
    int64_t green = 0, n = 0;
    for (int32_t a = 0; a < 30; ++a)
      for (int32_t b = 0; b < 30; ++b)
        for (int32_t t = 0; t < 200; ++t, ++n) {
          std::vector<int32_t> ctx{a, b};
          green += wm.is_green(ctx, t);
        }
    // Independent Bernoulli(γ): within 4.5 standard deviations.
    EXPECT_LT(std::abs(green_z(green, n, gamma)), 4.5) << "gamma " << gamma;
  }
}

TEST(Watermark, BiasAddsDeltaExactlyToTheGreenList) {
  auto wm = make();
  std::vector<int32_t> ctx{5, 9};
  std::vector<float> logits(300), before;
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  before = logits;
  wm.bias(ctx, logits);
  auto mask = wm.green_mask(ctx, 300);
  int greens = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_FLOAT_EQ(logits[i] - before[i], mask[i] ? 2.0f : 0.0f);
    EXPECT_EQ(mask[i] != 0, wm.is_green(ctx, static_cast<int32_t>(i)));
    greens += mask[i];
  }
  EXPECT_GT(greens, 40);
  EXPECT_LT(greens, 110);
  // Only the last h ids matter; with fewer than h there is no list and nothing changes.
  EXPECT_EQ(wm.green_mask(std::vector<int32_t>{1, 2, 9}, 300), wm.green_mask(std::vector<int32_t>{7, 9}, 300));
  std::vector<float> untouched = before;
  wm.bias({}, untouched);
  EXPECT_EQ(untouched, before);
  // Another key gives another list.
  EXPECT_NE(make(0.25, 1, 2).green_mask(ctx, 300), mask);
}

TEST(Watermark, CountsEachWindowOnceAndSkipsExcludedOnes) {
  auto wm = make();
  GreenCounter c(wm);
  std::vector<int32_t> ids{1, 2, 3, 1, 2, 3, 1, 2, 4};
  c.add(ids);  // windows (1,2) (2,3) (3,1) (1,2)* (2,3)* (3,1)* (1,2)* (2,4): 4 new, 4 repeated
  EXPECT_EQ(c.scored(), 4);
  EXPECT_EQ(c.repeated(), 4);
  int greens = wm.is_green(std::vector<int32_t>{1}, 2) + wm.is_green(std::vector<int32_t>{2}, 3) +
               wm.is_green(std::vector<int32_t>{3}, 1) + wm.is_green(std::vector<int32_t>{2}, 4);
  EXPECT_EQ(c.green(), greens);
  EXPECT_NEAR(c.z(), green_z(greens, 4, 0.25), 1e-12);

  GreenCounter d(wm);
  d.exclude(std::vector<int32_t>{7, 1, 2});  // windows (7,1) (1,2)
  d.add(std::vector<int32_t>{1, 2, 5}, /*from=*/1);
  EXPECT_EQ(d.excluded(), 1);
  EXPECT_EQ(d.scored(), 1);  // (2,5)
}

TEST(Watermark, KeyFilesArePrivateAndWellFormed) {
  TempDir tmp;
  auto key = WatermarkKey::random();
  key.write(tmp / "wm.key");
  struct stat st {};
  ASSERT_EQ(::stat((tmp / "wm.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(WatermarkKey::read(tmp / "wm.key").bytes(), key.bytes());
  EXPECT_EQ(WatermarkKey::read(tmp / "wm.key").fingerprint(), key.fingerprint());
  EXPECT_NE(error_of([&] { key.write(tmp / "wm.key"); }).find("cannot create key file"), std::string::npos);

  ::chmod((tmp / "wm.key").c_str(), 0644);
  EXPECT_NE(error_of([&] { WatermarkKey::read(tmp / "wm.key"); }).find("can be read by others"), std::string::npos);
  testing::spit(tmp / "short.key", "abcd\n");
  ::chmod((tmp / "short.key").c_str(), 0600);
  EXPECT_NE(error_of([&] { WatermarkKey::read(tmp / "short.key"); }).find("64 hex digits"), std::string::npos);
  EXPECT_NE(error_of([&] { WatermarkKey::read(tmp / "absent.key"); }).find("absent.key"), std::string::npos);
  EXPECT_NE(error_of([&] { Watermark(key, {1.0, 2.0, 1}); }).find("gamma"), std::string::npos);
  EXPECT_NE(error_of([&] { Watermark(key, {0.25, 2.0, 0}); }).find("context h"), std::string::npos);
}

model::Llama tiny_model() {
  model::ModelConfig c;
  c.vocab_size = 512;
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 256;
  torch::manual_seed(3);
  model::Llama m(c);
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.05);  // a spread-out next-token distribution
  m->eval();
  return m;
}

TEST(Watermark, WatermarkedGenerationsAreDetectedAndPlainOnesAreNot) {
  auto m = tiny_model();
  auto wm = make();
  int flagged_wm = 0, flagged_plain = 0;
  const int n = 20;
  for (int i = 0; i < n; ++i) {
    model::GenerateOptions g;
    g.max_tokens = 200;
    g.sampling = {1.0f, 0, 1.0f, static_cast<uint64_t>(i)};
    std::vector<int32_t> prompt{static_cast<int32_t>(i + 1)};
    auto plain = model::generate(m, prompt, g);
    g.logits_processor = [&](std::span<const int32_t> ctx, std::span<float> l) { wm.bias(ctx, l); };
    auto marked = model::generate(m, prompt, g);
    ASSERT_EQ(marked.size(), 200u);
    GreenCounter a(wm), b(wm);
    std::vector<int32_t> all(prompt);
    all.insert(all.end(), marked.begin(), marked.end());
    a.add(all, 1);
    all.resize(1);
    all.insert(all.end(), plain.begin(), plain.end());
    b.add(all, 1);
    flagged_wm += a.z() > 4;
    flagged_plain += b.z() > 4;
    EXPECT_GT(static_cast<double>(a.green()) / a.scored(), 0.5);
  }
  EXPECT_EQ(flagged_wm, n);
  EXPECT_EQ(flagged_plain, 0);
}

TEST(Trace, ACleanModelIsNotFlaggedAndWatermarkedGenerationsAre) {
  // The clean suspect's next-token predictions over plain text are green by chance only. (A
  // suspect trained on watermarked text is the end-to-end test in tests/cli/protect_cli_test.cpp.)
  auto m = tiny_model();
  auto wm = make();
  std::mt19937 rng(5);
  std::vector<int32_t> text(2000);
  for (auto& t : text) t = static_cast<int32_t>(rng() % 512);
  TraceOptions o;
  o.top_n = 4;
  auto clean = trace_predictions(m, wm, {text}, {}, o);
  EXPECT_GT(clean.scored, 1500);
  EXPECT_GT(clean.p_value, 1e-3);
  EXPECT_FALSE(clean.flagged);

  // Generations: the clean model's completions are not flagged, watermarked ones are.
  std::vector<std::vector<int32_t>> prompts, plain, marked;
  for (int i = 0; i < 10; ++i) {
    prompts.push_back({text.begin() + 100 * i, text.begin() + 100 * i + 8});
    model::GenerateOptions g;
    g.max_tokens = 64;
    g.sampling = {1.0f, 0, 1.0f, static_cast<uint64_t>(i)};
    plain.push_back(model::generate(m, prompts.back(), g));
    g.logits_processor = [&](std::span<const int32_t> ctx, std::span<float> l) { wm.bias(ctx, l); };
    marked.push_back(model::generate(m, prompts.back(), g));
  }
  EXPECT_FALSE(trace_generations(wm, prompts, plain, {}, o).flagged);
  auto guilty = trace_generations(wm, prompts, marked, {}, o);
  EXPECT_TRUE(guilty.flagged);
  EXPECT_LT(guilty.p_value, 1e-10);
  // Our own outputs, passed as ours, are never scored: nothing is left to flag.
  std::vector<std::vector<int32_t>> ours;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ours.push_back(prompts[i]);
    ours.back().insert(ours.back().end(), marked[i].begin(), marked[i].end());
  }
  auto excluded = trace_generations(wm, prompts, marked, ours, o);
  EXPECT_EQ(excluded.scored, 0);
  EXPECT_FALSE(excluded.flagged);
}

TEST(Trace, GreenMassAgainstAReferenceIsCalibratedAndSeesASmallLean) {
  // 400 contexts over 512 tokens: a reference distribution per context; an innocent suspect that
  // differs from it by key-independent noise; a guilty one that also adds 0.05 to the log-odds of
  // our green tokens. With the reference the lean shows far above chance, the innocent suspect's
  // p-values over wrong keys stay uniform, and the lean is clearer than without the reference.
  const int C = 400, V = 512;
  auto wm = make();
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal;
  ContextDistributions ref, innocent, guilty;
  for (auto* cd : {&ref, &innocent, &guilty}) cd->h = 1, cd->texts = 1;
  auto softmax = [](std::vector<double> l) {
    double mx = *std::max_element(l.begin(), l.end()), z = 0;
    for (auto& x : l) z += (x = std::exp(x - mx));
    std::vector<float> p(l.size());
    for (size_t i = 0; i < l.size(); ++i) p[i] = static_cast<float>(l[i] / z);
    return p;
  };
  for (int c = 0; c < C; ++c) {
    std::vector<int32_t> ctx{c};
    std::vector<double> base(V), noisy(V), leaning(V);
    auto mask = wm.green_mask(ctx, V);
    for (int v = 0; v < V; ++v) {
      base[v] = 2.5 * normal(rng);
      noisy[v] = base[v] + 0.3 * normal(rng);
      leaning[v] = noisy[v] + (mask[v] ? 0.05 : 0.0);
    }
    const int64_t n = 1 + c % 7;
    for (auto [cd, l] : {std::pair{&ref, &base}, {&innocent, &noisy}, {&guilty, &leaning}}) {
      cd->contexts.push_back(ctx);
      cd->probs.push_back(softmax(*l));
      cd->counts.push_back(n);
    }
  }
  TraceOptions o;
  auto with_ref = score_green_mass(wm, guilty, &ref, {}, o), alone = score_green_mass(wm, guilty, nullptr, {}, o);
  EXPECT_LT(with_ref.p_value, 1e-6) << describe(with_ref);
  EXPECT_GT(with_ref.z, 2 * alone.z) << describe(with_ref) << "\n" << describe(alone);
  ASSERT_TRUE(with_ref.reference_mass.has_value());
  EXPECT_GT(score_green_mass(wm, innocent, &ref, {}, o).p_value, 1e-3);
  auto cal = calibrate_green_mass(innocent, &ref, {}, wm.params(), 300, o);
  EXPECT_EQ(cal.keys, 300);
  EXPECT_LE(cal.below_01, 9);  // Binomial(300, 0.01): P(X > 9) < 0.2%
  EXPECT_GT(cal.smallest_p, 1e-5);
  // The reference must have read the same contexts.
  auto other = ref;
  other.contexts[0] = {C + 1};
  EXPECT_NE(error_of([&] { score_green_mass(wm, guilty, &other, {}, o); }).find("other contexts"), std::string::npos);
}

TEST(Trace, AnApisTopKReadsLikeTheWeightsWhenItGivesEveryToken) {
  // The logprobs reading (what an API gives) with k = V is the weights reading, for the suspect and
  // for the reference kept on the suspect's ids.
  auto m = tiny_model();
  const int V = 512;
  std::mt19937 rng(9);
  std::vector<std::vector<int32_t>> texts(3, std::vector<int32_t>(100));
  for (auto& t : texts)
    for (auto& x : t) x = static_cast<int32_t>(rng() % 40);  // few contexts, each met several times
  auto full = read_contexts(m, texts, 1, 50000);
  TopPredictions top;
  top.k = V;
  {
    torch::NoGradGuard g;
    for (const auto& t : texts) {
      auto p = torch::softmax(m->forward(torch::tensor(std::vector<int64_t>(t.begin(), t.end())).view({1, -1})), -1)[0];
      auto [vals, idx] = p.topk(V, -1);
      auto vi = idx.contiguous(), vv = vals.contiguous();
      top.ids.emplace_back(vi.data_ptr<int64_t>(), vi.data_ptr<int64_t>() + vi.numel());
      top.probs.emplace_back(vv.data_ptr<float>(), vv.data_ptr<float>() + vv.numel());
    }
  }
  ContextDistributions ref;
  auto api = read_contexts_top_k(texts, top, V, 1, 50000, &m, &ref);
  ASSERT_EQ(api.contexts, full.contexts);
  ASSERT_EQ(ref.contexts, full.contexts);
  EXPECT_EQ(api.counts, full.counts);
  for (size_t c = 0; c < full.probs.size(); ++c)
    for (int v = 0; v < V; ++v) {
      ASSERT_NEAR(api.probs[c][v], full.probs[c][v], 1e-6);
      ASSERT_NEAR(ref.probs[c][v], full.probs[c][v], 1e-6);
    }
  top.ids[1].pop_back();
  EXPECT_NE(error_of([&] { read_contexts_top_k(texts, top, V, 1, 50000, nullptr, nullptr); }).find("text 1"), std::string::npos);
}

}  // namespace
}  // namespace lineage::protect
