// Width and depth pruning (distill/prune.h) on tiny models built here: cut to the full width it is
// the teacher; what it cuts is what carries no activation; cutting MLP neurons or whole KV groups
// equals the teacher with their output columns zeroed; bad targets are refused.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

#include "lineage/core/error.h"
#include "lineage/distill/prune.h"
#include "lineage/distill/student.h"
#include "test_util.h"

namespace lineage {
namespace {

using distill::activation_importance;
using distill::Importance;
using distill::plan_pruning;
using distill::prune_weights;
using distill::PruneTarget;

model::ModelConfig config(bool gqa_bias, bool tied) {
  model::ModelConfig c;
  c.vocab_size = 53;
  c.dim = 48;  // 6 heads of 8
  c.n_layers = 3;
  c.n_heads = 6;
  c.n_kv_heads = gqa_bias ? 3 : 6;
  c.hidden_dim = 64;
  c.max_seq_len = 32;
  c.qkv_bias = gqa_bias;
  c.tie_embeddings = tied;
  return c;
}

model::Llama make(const model::ModelConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  model::Llama m(c);
  m->init_weights(0.2);
  m->eval();
  return m;
}

distill::TokenRows rows(int64_t n, int64_t seq_len, int64_t vocab) {
  distill::TokenRows r;
  r.seq_len = seq_len;
  for (int64_t i = 0; i < n * (seq_len + 1); ++i) r.tokens.push_back(static_cast<int32_t>((i * 7 + i / 5) % vocab));
  r.mask.assign(r.tokens.size(), 1);
  return r;
}

torch::Tensor logits(model::Llama& m, int64_t vocab) {
  torch::NoGradGuard ng;
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 2 * 20; ++i) ids.push_back((i * 11 + 3) % vocab);
  return m->forward(torch::tensor(ids).view({2, 20}));
}

model::Llama pruned_model(model::Llama& teacher, const Importance& imp, const PruneTarget& target) {
  auto plan = plan_pruning(teacher->config(), imp, target);
  model::Llama s(plan.config);
  s->load_weights(prune_weights(teacher->config(), teacher->weights(), plan), "the pruned teacher");
  s->eval();
  return s;
}

// Nothing cut: every tensor is the teacher's and so are the logits, bit for bit (the kept units
// keep their order), with grouped heads and QKV bias, and tied or separate output.
TEST(Prune, ToTheFullWidthItIsTheTeacher) {
  for (bool gqa : {false, true})
    for (bool tied : {false, true}) {
      auto c = config(gqa, tied);
      auto t = make(c, 3);
      auto imp = activation_importance(t, rows(6, 16, c.vocab_size), 0, 4);
      EXPECT_EQ(imp.rows, 6);
      auto s = pruned_model(t, imp, {});
      EXPECT_EQ(s->config().num_parameters(), c.num_parameters());
      EXPECT_TRUE(torch::equal(logits(s, c.vocab_size), logits(t, c.vocab_size))) << gqa << tied;
    }
}

// Watching the activations does not change the forward pass.
TEST(Prune, TheObservedForwardIsTheSameForward) {
  auto c = config(true, false);
  auto t = make(c, 5);
  struct Nothing : model::ActivationObserver {
  } nothing;
  auto plain = logits(t, c.vocab_size);
  model::ObserveActivations watch(&nothing);
  EXPECT_TRUE(torch::equal(logits(t, c.vocab_size), plain));
}

// Units made silent in the teacher score zero and are the first cut: an MLP neuron whose w1 and w3
// rows are zero, a KV group whose values are zero (its query heads then output nothing), an
// embedding channel zero in the embedding and every norm weight, and a block whose wo and w2 are
// zero (its output is its input: cosine 1).
TEST(Prune, WhatCarriesNoActivationIsCutFirst) {
  auto c = config(true, true);  // 3 KV groups of 2 heads
  auto t = make(c, 7);
  {
    torch::NoGradGuard ng;
    auto w = t->weights();
    w["layers.1.feed_forward.w1.weight"][17].zero_();
    w["layers.1.feed_forward.w3.weight"][17].zero_();
    w["layers.0.attention.wv.weight"].narrow(0, 8, 8).zero_();  // group 1 of layer 0
    w["layers.0.attention.wv.bias"].narrow(0, 8, 8).zero_();
    w["tok_embeddings.weight"].select(1, 30).zero_();
    for (const auto& [name, p] : w)
      if (name.find("norm.weight") != std::string::npos) p[30].zero_();
    w["layers.2.attention.wo.weight"].zero_();
    w["layers.2.feed_forward.w2.weight"].zero_();
  }
  auto imp = activation_importance(t, rows(8, 16, c.vocab_size), 0, 3);
  EXPECT_EQ(imp.neurons[1][17], 0.0);
  EXPECT_EQ(imp.heads[0][2], 0.0);
  EXPECT_EQ(imp.heads[0][3], 0.0);
  EXPECT_EQ(imp.channels[30], 0.0);
  EXPECT_NEAR(imp.layers[2], 0.0, 1e-12);
  EXPECT_GT(imp.layers[0], 1e-3);
  auto plan = plan_pruning(c, imp, {32, 0, 2, 63, 2});  // 4 heads of 8 in 2 groups, 63 neurons, 2 layers
  EXPECT_EQ(plan.layers, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(std::count(plan.channels.begin(), plan.channels.end(), 30), 0);
  EXPECT_EQ(plan.kv_groups[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(std::count(plan.neurons[1].begin(), plan.neurons[1].end(), 17), 0);
}

// Cutting only MLP neurons is exactly the teacher with their w2 columns zeroed, and cutting only
// layers is the teacher's remaining layers (--init-from-teacher 0,1 with the layers it chose):
// nothing else changes. (Cutting heads cuts channels too — the width is heads × the head size —
// and RMSNorm then averages over fewer channels: no such identity.)
TEST(Prune, CuttingNeuronsOrLayersAloneIsTheTeacherWithoutThem) {
  auto c = config(true, false);
  auto t = make(c, 11);
  auto imp = activation_importance(t, rows(8, 16, c.vocab_size), 0, 4);
  PruneTarget neurons;
  neurons.hidden = 40;
  auto plan = plan_pruning(c, imp, neurons);
  auto s = pruned_model(t, imp, neurons);
  auto zeroed = make(c, 11);
  {
    torch::NoGradGuard ng;
    auto w = zeroed->weights();
    for (size_t l = 0; l < plan.layers.size(); ++l) {
      auto keep = torch::zeros({c.hidden_dim});
      for (int64_t n : plan.neurons[l]) keep[n] = 1;
      w[fmt::format("layers.{}.feed_forward.w2.weight", l)].mul_(keep.unsqueeze(0));
    }
  }
  auto a = logits(s, c.vocab_size), b = logits(zeroed, c.vocab_size);
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-5 * b.abs().max().item<double>());

  PruneTarget layers;
  layers.layers = 2;
  plan = plan_pruning(c, imp, layers);
  ASSERT_EQ(plan.layers.size(), 2u);
  model::ModelConfig dropped = c;
  dropped.n_layers = 2;
  model::Llama kept(dropped);
  kept->load_weights(distill::select_layers_weights(t->weights(), plan.layers), "the kept layers");
  kept->eval();
  auto p = pruned_model(t, imp, layers);
  EXPECT_TRUE(torch::equal(logits(p, c.vocab_size), logits(kept, c.vocab_size)));
}

TEST(Prune, TargetsTheTeacherCannotGiveAreRefused) {
  auto c = config(true, false);
  auto t = make(c, 2);
  auto imp = activation_importance(t, rows(2, 8, c.vocab_size), 0);
  auto refused = [&](PruneTarget target, const std::string& why) {
    std::string err;
    try {
      plan_pruning(c, imp, target);
    } catch (const Error& e) {
      err = e.what();
    }
    EXPECT_NE(err.find(why), std::string::npos) << err;
  };
  refused({64, 0, 0, 0, 0}, "the teacher has 48");
  refused({0, 0, 0, 0, 4}, "4 layers");
  refused({0, 0, 0, 80, 0}, "MLP neurons");
  refused({40, 5, 0, 0, 0}, "not a multiple");
  refused({24, 3, 2, 0, 0}, "not a multiple");
  refused({40, 4, 2, 0, 0}, "head size");
  refused({48, 6, 1, 0, 0}, "per group");
  EXPECT_THROW(distill::parse_prune_spec("dim=12,width=3"), Error);
  EXPECT_THROW(distill::parse_prune_spec("dim=x"), Error);
  EXPECT_THROW(distill::parse_prune_spec("dim=0"), Error);
  auto spec = distill::parse_prune_spec("dim=32,kv-heads=2,hidden=40,layers=2");
  EXPECT_EQ(spec.dim, 32);
  EXPECT_EQ(spec.kv_heads, 2);
  EXPECT_EQ(spec.hidden, 40);
  EXPECT_EQ(spec.layers, 2);
  EXPECT_THROW(activation_importance(t, rows(0, 8, c.vocab_size), 0), Error);
}

}  // namespace
}  // namespace lineage
