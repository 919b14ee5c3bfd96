// model: the decoder's properties checked against references — causality, KV-cache decoding
// equal to a full forward, GQA equal to multi-head attention with repeated heads, parameter
// counts against the closed form, dtype as a parameter — and the sampler against its definition.
#include "lineage/model/llama.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "lineage/core/error.h"
#include "lineage/core/threads.h"
#include "lineage/model/generate.h"
#include "lineage/model/sampler.h"
#include "test_util.h"

namespace lineage::model {
namespace {

ModelConfig tiny(bool tied = false, bool bias = false, int64_t kv = 2) {
  ModelConfig c;
  c.arch = bias ? "qwen2" : "llama";
  c.vocab_size = 37;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv;
  c.max_seq_len = 32;
  c.tie_embeddings = tied;
  c.qkv_bias = bias;
  return c;
}

Llama seeded(const ModelConfig& c, uint64_t seed = 7) {
  torch::manual_seed(seed);
  Llama m(c);
  torch::NoGradGuard g;
  for (auto& p : m->parameters())
    p.normal_(0.0, 0.3);  // larger than default init: non-trivial attention
  m->eval();
  return m;
}

torch::Tensor tokens(std::vector<int64_t> ids) {
  return torch::tensor(ids, torch::kLong).view({1, static_cast<int64_t>(ids.size())});
}

TEST(Llama, ForwardShape) {
  auto m = seeded(tiny());
  auto out = m->forward(torch::randint(0, 37, {3, 9}, torch::kLong));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 9, 37}));
}

TEST(Llama, CausalFutureTokensDoNotChangeThePast) {
  auto m = seeded(tiny());
  torch::NoGradGuard g;
  auto a = m->forward(tokens({1, 5, 9, 12, 3, 7}));
  auto b = m->forward(tokens({1, 5, 9, 30, 31, 32}));
  EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 3), b.narrow(1, 0, 3), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 3, 1), b.narrow(1, 3, 1), 1e-3, 1e-3));
}

TEST(Llama, KVCacheDecodingEqualsFullForward) {
  for (bool bias : {false, true}) {
    auto m = seeded(tiny(false, bias));
    torch::NoGradGuard g;
    std::vector<int64_t> ids{1, 4, 8, 15, 16, 23, 42 % 37, 2, 9, 11};
    auto full = m->forward(tokens(ids));  // (1, 10, V)
    auto cache = m->make_cache(1, 16);
    // Prefill 4 tokens at once, then 3 at once, then one at a time.
    std::vector<torch::Tensor> parts;
    parts.push_back(m->forward(tokens({ids.begin(), ids.begin() + 4}), &cache));
    parts.push_back(m->forward(tokens({ids.begin() + 4, ids.begin() + 7}), &cache));
    for (size_t i = 7; i < ids.size(); ++i) parts.push_back(m->forward(tokens({ids[i]}), &cache));
    auto inc = torch::cat(parts, 1);
    EXPECT_EQ(cache.length, 10);
    EXPECT_LT((inc - full).abs().max().item<float>(), 1e-5) << "bias=" << bias;
  }
}

TEST(Llama, GroupedQueryAttentionEqualsMultiHeadWithRepeatedHeads) {
  auto gqa = seeded(tiny(false, false, /*kv=*/2));
  auto mha = seeded(tiny(false, false, /*kv=*/4), 99);
  auto w = gqa->weights();
  const int64_t hd = 4, groups = 2;
  std::map<std::string, torch::Tensor> expanded;
  for (auto& [name, t] : w) {
    if (name.find("attention.wk") != std::string::npos ||
        name.find("attention.wv") != std::string::npos)
      expanded[name] = t.view({2, hd, 16}).repeat_interleave(groups, 0).reshape({4 * hd, 16});
    else
      expanded[name] = t;
  }
  mha->load_weights(expanded, "expanded");
  torch::NoGradGuard g;
  auto x = tokens({3, 1, 4, 1, 5, 9, 2, 6});
  EXPECT_LT((gqa->forward(x) - mha->forward(x)).abs().max().item<float>(), 1e-5);
}

TEST(Llama, ParameterCountMatchesClosedForm) {
  for (bool tied : {false, true})
    for (bool bias : {false, true}) {
      auto c = tiny(tied, bias);
      Llama m(c);
      int64_t n = 0;
      for (auto& p : m->parameters()) n += p.numel();
      EXPECT_EQ(n, c.num_parameters()) << "tied=" << tied << " bias=" << bias;
      EXPECT_EQ(m->weights().count("output.weight"), tied ? 0u : 1u);
      EXPECT_EQ(m->weights().count("layers.0.attention.wq.bias"), bias ? 1u : 0u);
      EXPECT_EQ(m->weights().size(), expected_shapes(c).size());
    }
}

TEST(Llama, TiedOutputUsesTheEmbedding) {
  auto m = seeded(tiny(/*tied=*/true));
  torch::NoGradGuard g;
  auto before = m->forward(tokens({1, 2, 3}));
  m->weights().at("tok_embeddings.weight")[5].add_(1.0);
  auto after = m->forward(tokens({1, 2, 3}));
  // Row 5 of the embedding is also row 5 of the classifier: logit 5 moves at every position.
  EXPECT_GT((after.select(2, 5) - before.select(2, 5)).abs().min().item<float>(), 1e-4);
}

TEST(Llama, LoadWeightsNamesTheMisshapedTensor) {
  auto m = seeded(tiny());
  auto w = m->weights();
  w["layers.1.attention.wk.weight"] = torch::zeros({3, 16});
  try {
    m->load_weights(w, "x.gguf");
    FAIL();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("layers.1.attention.wk.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("3x16"), std::string::npos) << msg;
    EXPECT_NE(msg.find("8x16"), std::string::npos) << msg;
  }
}

TEST(Llama, DtypeIsAParameter) {
  auto m = seeded(tiny());
  torch::NoGradGuard g;
  auto x = tokens({1, 7, 3, 9, 4});
  auto ref = m->forward(x);
  m->to(torch::kBFloat16);
  EXPECT_EQ(m->dtype(), torch::kBFloat16);
  auto low = m->forward(x).to(torch::kFloat32);
  EXPECT_LT((low - ref).abs().max().item<float>() / ref.abs().max().item<float>(), 0.05);
}

TEST(Llama, ContextLengthIsEnforced) {
  auto m = seeded(tiny());
  EXPECT_THROW(m->forward(torch::zeros({1, 33}, torch::kLong)), Error);
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  std::vector<float> l{0.1f, 2.0f, -1.0f, 2.0f};
  Sampler s({/*temperature=*/0.0f});
  EXPECT_EQ(s.sample(l), 1);
  Sampler k1({/*temperature=*/5.0f, /*top_k=*/1});
  EXPECT_EQ(k1.sample(l), 1);
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  std::vector<float> l{0.0f, 1.0f, 2.0f};
  Sampler s({/*temperature=*/1.0f, /*top_k=*/0, /*top_p=*/1.0f, /*seed=*/123});
  std::vector<int> counts(3, 0);
  const int n = 30000;
  for (int i = 0; i < n; ++i) counts[s.sample(l)]++;
  double z = std::exp(0.0) + std::exp(1.0) + std::exp(2.0);
  for (int i = 0; i < 3; ++i) {
    double p = std::exp(double(i)) / z;
    double sd = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(counts[i] / double(n), p, 5 * sd) << "token " << i;
  }
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  std::vector<float> l{3.0f, 2.9f, -5.0f, -6.0f};  // the first two hold > 99.9% of the mass
  Sampler s({1.0f, 0, /*top_p=*/0.5f, 1});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s.sample(l), 0);  // 0 alone reaches 0.5
  Sampler s2({1.0f, 0, /*top_p=*/0.9f, 1});
  for (int i = 0; i < 200; ++i) EXPECT_LT(s2.sample(l), 2);
}

TEST(Sampler, SameSeedSameDraws) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = std::sin(i * 1.3f);
  Sampler a({0.9f, 10, 0.95f, 42}), b({0.9f, 10, 0.95f, 42});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(l), b.sample(l));
}

// The draws are those of the rule as first written (ids sorted through a comparator that looks
// their logits up, then the walk down the sorted probabilities): the candidates now carry their
// logits, which only made it faster. Ties, top-k and top-p included.
TEST(Sampler, DrawsAreTheSameAsSortingIdsByTheirLogits) {
  auto reference = [](std::span<const float> logits, const SamplingOptions& o, std::mt19937_64& rng) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    size_t keep = o.top_k > 0 ? std::min<size_t>(o.top_k, ids.size()) : ids.size();
    std::partial_sort(ids.begin(), ids.begin() + static_cast<long>(keep), ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    ids.resize(keep);
    const double inv_t = 1.0 / o.temperature, max_logit = logits[ids[0]];
    std::vector<double> probs(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp((logits[ids[i]] - max_logit) * inv_t);
    for (auto& p : probs) p /= total;
    if (o.top_p < 1.0f) {
      double cum = 0;
      size_t n = 0;
      while (n < keep) {
        cum += probs[n++];
        if (cum >= o.top_p) break;
      }
      probs.resize(n);
      ids.resize(n);
      total = cum;
    } else {
      total = 1.0;
    }
    double r = std::uniform_real_distribution<double>(0.0, total)(rng);
    for (size_t i = 0; i < probs.size(); ++i) {
      r -= probs[i];
      if (r < 0) return ids[i];
    }
    return ids.back();
  };
  std::mt19937 gen(5);
  int draws = 0;
  for (SamplingOptions o : {SamplingOptions{0.8f, 0, 1.0f, 7}, SamplingOptions{1.3f, 40, 1.0f, 8},
                            SamplingOptions{1.0f, 0, 0.9f, 9}, SamplingOptions{0.6f, 100, 0.95f, 10}}) {
    Sampler s(o);
    std::mt19937_64 rng(o.seed);
    for (int t = 0; t < 200; ++t, ++draws) {
      std::vector<float> logits(2048);
      for (auto& l : logits) l = std::round(std::normal_distribution<float>(0, 3)(gen) * 4) / 4;  // many ties
      ASSERT_EQ(s.sample(logits), reference(logits, o, rng)) << "draw " << t;
    }
  }
  EXPECT_EQ(draws, 800);
}

TEST(Generate, StopsAtStopIdsAndMaxTokens) {
  auto m = seeded(tiny());
  GenerateOptions o;
  o.max_tokens = 5;
  o.sampling.temperature = 0;
  auto out = generate(m, {1, 2, 3}, o);
  EXPECT_EQ(out.size(), 5u);
  o.max_tokens = 20;
  o.stop_ids = {out[2]};
  auto stopped = generate(m, {1, 2, 3}, o);
  ASSERT_LE(stopped.size(), 2u);  // greedy repeats the same prefix, then stops before out[2]
  EXPECT_EQ(std::vector<int32_t>(out.begin(), out.begin() + stopped.size()), stopped);
}

TEST(Generate, GreedyEqualsArgmaxOfFullForward) {
  auto m = seeded(tiny());
  GenerateOptions o;
  o.max_tokens = 6;
  o.sampling.temperature = 0;
  std::vector<int32_t> seq{1, 5, 7};
  auto out = generate(m, seq, o);
  torch::NoGradGuard g;
  for (int32_t next : out) {
    auto logits = m->forward(tokens({seq.begin(), seq.end()}));
    auto last = logits[0][static_cast<int64_t>(seq.size()) - 1].contiguous();
    EXPECT_EQ(argmax({last.data_ptr<float>(), static_cast<size_t>(last.numel())}), next);
    seq.push_back(next);
  }
}

}  // namespace
}  // namespace lineage::model

#include "lineage/model/cpu_decoder.h"

namespace lineage::model {
namespace {

// The decoder's logits against the model's: within 1e-4 of the model's largest logit.
void expect_logits_equal(std::span<const float> got, const torch::Tensor& want,
                         const std::string& what) {
  auto got_t =
      torch::from_blob(const_cast<float*>(got.data()), {static_cast<int64_t>(got.size())}).clone();
  EXPECT_LE((got_t - want).abs().max().item<double>(), 1e-4 * want.abs().max().item<double>())
      << what;
}

// The matrix-vector decoder against the libtorch model: a prompt through the GEMM, then one token
// at a time through matrix-vector products, logits equal at every step (with and without grouped
// KV heads and QKV bias). The third case's weights are all binary16 numbers (as a 16-bit
// checkpoint's are): its products read the binary16 copies (panels with AVX-512, rows otherwise).
// Each case also with the portable kernels (sgemm, AVX2 or plain rows), which a CPU without
// AVX-512 runs.
TEST(CpuDecoder, LogitsEqualTheModelsForPromptAndEveryStep) {
  for (int variant : {0, 1, 2, 3, 4, 5}) {
    prefer_portable_cpu_kernels(variant >= 3);
    struct Restore {
      ~Restore() { prefer_portable_cpu_kernels(false); }
    } restore;
    const bool gqa_bias = variant % 3 == 1;
    ModelConfig c;
    c.vocab_size = 97;
    c.dim = 48;
    c.n_layers = 3;
    c.n_heads = 6;
    c.n_kv_heads = gqa_bias ? 2 : 6;
    c.hidden_dim = 80;
    c.max_seq_len = 64;
    c.qkv_bias = gqa_bias;
    c.tie_embeddings = !gqa_bias;
    torch::manual_seed(4);
    Llama m(c);
    m->init_weights(0.2);
    m->eval();
    torch::NoGradGuard ng;
    if (variant % 3 == 2)
      for (auto& p : m->parameters()) p.copy_(p.to(torch::kHalf).to(torch::kFloat32));
    std::vector<int32_t> ids = {5, 17, 3, 96, 0, 41, 8, 8, 22, 13, 77, 2};
    CpuDecoder d(m, 32);
    auto cache = m->make_cache(1, 32);
    const size_t prompt = 5;
    auto got = d.feed(std::span<const int32_t>(ids.data(), prompt));
    auto x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + prompt)).view({1, -1});
    auto want = m->forward(x, &cache).select(1, prompt - 1).reshape({-1});
    expect_logits_equal(got, want, "prompt, case " + std::to_string(variant));
    for (size_t i = prompt; i < ids.size(); ++i) {
      got = d.feed(std::span<const int32_t>(&ids[i], 1));
      want = m->forward(torch::full({1, 1}, static_cast<int64_t>(ids[i])), &cache).reshape({-1});
      expect_logits_equal(got, want,
                          "step " + std::to_string(i) + ", case " + std::to_string(variant));
    }
    EXPECT_EQ(d.length(), static_cast<int64_t>(ids.size()));
    std::vector<int32_t> too_many(30, 1);
    EXPECT_THROW(d.feed(too_many), lineage::Error);
  }
}

// Prompts longer than the decoder's 64-row attention blocks, fed in two pieces (the second starting
// past cached positions), against the libtorch model's logits: float32 weights, and binary16-valued
// ones (read from packed panels), with a feed-forward width past one 256-deep block of K.
TEST(CpuDecoder, LongPromptsInBlocksEqualTheModel) {
  ModelConfig c;
  c.vocab_size = 61;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 288;
  c.max_seq_len = 256;
  for (bool half : {false, true}) {
    torch::manual_seed(9);
    Llama m(c);
    m->init_weights(0.2);
    m->eval();
    torch::NoGradGuard ng;
    if (half)
      for (auto& p : m->parameters()) p.copy_(p.to(torch::kHalf).to(torch::kFloat32));
    std::vector<int32_t> ids(230);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % 61);
    CpuDecoder d(m, 256);
    auto cache = m->make_cache(1, 256);
    size_t done = 0;
    for (size_t piece : {size_t{150}, size_t{80}}) {
      auto got = d.feed(std::span<const int32_t>(ids.data() + done, piece));
      auto x = torch::tensor(std::vector<int64_t>(ids.begin() + done, ids.begin() + done + piece))
                   .view({1, -1});
      auto want = m->forward(x, &cache).select(1, static_cast<int64_t>(piece) - 1).reshape({-1});
      expect_logits_equal(
          got, want,
          std::string(half ? "binary16" : "float32") + ", after " + std::to_string(done + piece));
      done += piece;
    }
  }
}

// The batched step (the server's): sequences of different lengths, one new token each, their
// projections in one GEMM and each attention over its own cache — every row equal to the logits
// of that sequence's own decoder fed the same token, step after step, with sequences joining and
// leaving (float32 and binary16-valued weights, grouped KV heads, the AVX-512 and the portable
// kernels). Decoders of another model, a
// count mismatch and a full cache are refused.
TEST(CpuDecoder, BatchedStepEqualsEachSequencesOwnFeed) {
  ModelConfig c;
  c.vocab_size = 89;
  c.dim = 48;
  c.n_layers = 2;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.hidden_dim = 96;
  c.max_seq_len = 64;
  struct Restore {
    ~Restore() { prefer_portable_cpu_kernels(false); }
  } restore;
  for (int variant : {0, 1, 2, 3}) {  // float32 / binary16-valued weights, own / portable kernels
    const bool half = variant % 2 == 1;
    prefer_portable_cpu_kernels(variant >= 2);
    torch::manual_seed(12);
    Llama m(c);
    m->init_weights(0.2);
    m->eval();
    torch::NoGradGuard ng;
    if (half)
      for (auto& p : m->parameters()) p.copy_(p.to(torch::kHalf).to(torch::kFloat32));
    const int n = 5;
    std::vector<CpuDecoder> batched, alone;
    for (int i = 0; i < n; ++i) {
      batched.emplace_back(m, 40);
      std::vector<int32_t> prompt(static_cast<size_t>(1 + 3 * i));
      for (size_t j = 0; j < prompt.size(); ++j) prompt[j] = static_cast<int32_t>((7 * j + 13 * i + 1) % 89);
      batched.back().feed(prompt);
      alone.push_back(batched.back());  // a copy: the same cache
    }
    CpuDecoderBatch batch;
    for (int step = 0; step < 6; ++step) {
      std::vector<CpuDecoder*> seqs;
      std::vector<int32_t> tokens;
      for (int i = step % 2; i < n; ++i) {  // odd steps leave sequence 0 out
        seqs.push_back(&batched[static_cast<size_t>(i)]);
        tokens.push_back(static_cast<int32_t>((31 * step + 5 * i) % 89));
      }
      auto rows = batch.step(seqs, tokens);
      ASSERT_EQ(rows.size(), seqs.size() * static_cast<size_t>(c.vocab_size));
      for (size_t r = 0; r < seqs.size(); ++r) {
        auto& own = alone[static_cast<size_t>(seqs[r] - batched.data())];
        auto want_span = own.feed(std::span<const int32_t>(&tokens[r], 1));
        auto want = torch::from_blob(const_cast<float*>(want_span.data()), {c.vocab_size}).clone();
        expect_logits_equal(rows.subspan(r * static_cast<size_t>(c.vocab_size), static_cast<size_t>(c.vocab_size)), want,
                            std::string(half ? "binary16" : "float32") + (variant >= 2 ? " portable" : "") + ", step " + std::to_string(step) + ", row " +
                                std::to_string(r));
        EXPECT_EQ(seqs[r]->length(), own.length());
      }
    }
    Llama other(c);
    CpuDecoder stranger(other, 8);
    std::vector<CpuDecoder*> mixed{&batched[0], &stranger};
    std::vector<int32_t> two{1, 2}, one{1};
    EXPECT_THROW(batch.step(mixed, two), lineage::Error);
    std::vector<CpuDecoder*> pair{&batched[0], &batched[1]};
    EXPECT_THROW(batch.step(pair, one), lineage::Error);
    CpuDecoder full(m, 2);
    full.feed(two);
    std::vector<CpuDecoder*> only{&full};
    EXPECT_THROW(batch.step(only, one), lineage::Error);
  }
}

// The decoder's weights (binary16 copies, panels) are derived once per model and kept while the
// weights stay as they are; an in-place update (as an optimizer step makes) is seen by the next
// decoder, whose logits follow the updated model.
TEST(CpuDecoder, WeightsAreDerivedOncePerModelAndAgainAfterAnUpdate) {
  ModelConfig c = tiny(true);
  torch::manual_seed(3);
  Llama m(c);
  m->init_weights(0.2);
  m->eval();
  torch::NoGradGuard ng;
  for (auto& p : m->parameters()) p.copy_(p.to(torch::kHalf).to(torch::kFloat32));
  auto first = CpuDecoderWeights::of(m);
  EXPECT_EQ(CpuDecoderWeights::of(m), first);
  EXPECT_TRUE(first->head.panels || first->head.h);  // binary16 copies made
  auto w = m->weights().at("layers.1.feed_forward.w2.weight");
  w.mul_(0.5);  // still binary16 values
  auto second = CpuDecoderWeights::of(m);
  EXPECT_NE(second, first);
  std::vector<int32_t> ids = {3, 9, 27, 1, 30};
  CpuDecoder d(m, 8);
  auto got = d.feed(ids);
  auto want = m->forward(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1}))
                  .select(1, 4)
                  .reshape({-1});
  expect_logits_equal(got, want, "after the update");
}

// The binary16 conversion of CPUs without F16C, against libtorch's, for every one of the 65,536
// bit patterns (NaNs compared as NaNs).
TEST(CpuDecoder, HalfToFloatMatchesLibtorchForEveryValue) {
  std::vector<int16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = static_cast<int16_t>(static_cast<uint16_t>(i));
  auto want =
      torch::from_blob(all.data(), {65536}, torch::kInt16).view(torch::kHalf).to(torch::kFloat32);
  auto w = want.accessor<float, 1>();
  int wrong = 0;
  for (int i = 0; i < 65536; ++i) {
    float got = half_to_float(static_cast<uint16_t>(i));
    bool same = std::isnan(w[i]) ? std::isnan(got) : std::memcmp(&got, &w[i], sizeof got) == 0;
    if (!same && ++wrong < 5)
      ADD_FAILURE() << "0x" << std::hex << i << ": " << got << " against " << w[i];
  }
  EXPECT_EQ(wrong, 0);
}

// exact_half gives back every finite binary16 value's bits, and refuses what binary16 cannot hold.
TEST(CpuDecoder, ExactHalfTakesBackEveryBinary16ValueAndNothingElse) {
  int wrong = 0;
  for (int i = 0; i < 65536; ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    if (((bits >> 10) & 0x1f) == 0x1f) continue;  // inf, nan
    uint16_t h = 0;
    bool ok = exact_half(half_to_float(bits), h);
    if ((!ok || h != bits) && ++wrong < 5)
      ADD_FAILURE() << "0x" << std::hex << i << " came back as 0x" << h;
  }
  EXPECT_EQ(wrong, 0);
  uint16_t h;
  for (float x : {0.1f, 1.0f + 0x1p-11f, 65520.0f, 0x1p-25f, 0x1p-24f * 1.5f, 1e-40f})
    EXPECT_FALSE(exact_half(x, h)) << x;
  for (float x : {1.0f + 0x1p-10f, 65504.0f, 0x1p-24f, -0x1p-14f * 1.5f})
    EXPECT_TRUE(exact_half(x, h)) << x;
}

// The prompt's GEMM against a float64 reference: shapes that are not multiples of the kernel's
// 6-row tiles, 32-column panels or 256-deep blocks of K (masked edges, several passes over y),
// on one thread and on two.
TEST(CpuDecoder, MatmulNtEqualsTheProductForRaggedShapes) {
  torch::manual_seed(11);
  const int saved = torch::get_num_threads();
  for (int threads : {1, 2, 0}) {  // 0: the portable kernels (sgemm)
    set_cpu_threads(std::max(threads, 1));
    prefer_portable_cpu_kernels(threads == 0);
    for (auto [n, in, out] : {std::tuple{2, 7, 1},
                              {5, 33, 31},
                              {6, 32, 32},
                              {7, 256, 65},
                              {13, 257, 100},
                              {64, 600, 97},
                              {3, 1, 40}}) {
      auto x = torch::randn({n, in}), w = torch::randn({out, in});
      std::vector<float> y(static_cast<size_t>(n * out), std::nanf(""));
      matmul_nt(x.data_ptr<float>(), w.data_ptr<float>(), y.data(), n, in, out);
      auto want = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
      auto got = torch::from_blob(y.data(), {n, out}).to(torch::kFloat64);
      EXPECT_LE((got - want).abs().max().item<double>(),
                1e-5 * std::sqrt(static_cast<double>(in)) * want.abs().max().item<double>())
          << n << "x" << in << "x" << out << " on " << threads << " threads";
    }
  }
  prefer_portable_cpu_kernels(false);
  set_cpu_threads(saved);
}

}  // namespace
}  // namespace lineage::model

namespace lineage {
namespace {

// parallel_for covers every index once in ranges of at least the grain, runs on more than one
// thread when it may, runs inline when nested, and hands back the first exception.
TEST(Threads, ParallelForCoversEachIndexOnceAndRethrows) {
  const int saved = torch::get_num_threads();
  model::set_cpu_threads(2);
  std::vector<std::atomic<int>> hits(1000);
  std::mutex mutex;
  std::set<std::thread::id> ids;
  parallel_for(0, 1000, 10, [&](int64_t b, int64_t e) {
    EXPECT_TRUE(e - b >= 10 || e == 1000);
    {
      std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
    }
    for (int64_t i = b; i < e; ++i) hits[i]++;
    // Nested: on this thread, in one range.
    int inner = 0;
    parallel_for(0, 50, 1, [&](int64_t ib, int64_t ie) {
      inner++;
      EXPECT_EQ(ib, 0);
      EXPECT_EQ(ie, 50);
    });
    EXPECT_EQ(inner, 1);
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_EQ(ids.size(), 2u);
  int calls = 0;
  parallel_for(0, 5, 10, [&](int64_t b, int64_t e) {  // under one grain: one call
    calls++;
    EXPECT_EQ(e - b, 5);
  });
  EXPECT_EQ(calls, 1);
  // The count holds in threads other than the one that set it (a server's workers).
  model::set_cpu_threads(1);
  std::set<std::thread::id> other;
  std::thread([&] {
    parallel_for(0, 1000, 10, [&](int64_t, int64_t) {
      std::lock_guard<std::mutex> lock(mutex);
      other.insert(std::this_thread::get_id());
    });
  }).join();
  EXPECT_EQ(other.size(), 1u);
  model::set_cpu_threads(2);
  EXPECT_THROW(parallel_for(0, 100, 1,
                            [](int64_t b, int64_t) {
                              if (b > 0) fail("range at {}", b);
                            }),
               lineage::Error);
  model::set_cpu_threads(saved);
}

}  // namespace
}  // namespace lineage
