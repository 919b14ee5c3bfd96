// Provenance tests without a watermark: the statistics against their definitions (brute-force
// assignment, the Spearman and sign-flip nulls, Fisher and Holm by hand), and the three tests on
// tiny models: a model made from another's layers and one perturbed from it are attributed, models
// initialised independently are not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "lineage/core/error.h"
#include "lineage/distill/student.h"
#include "lineage/io/model_file.h"
#include "lineage/protect/provenance.h"
#include "test_util.h"
#include "tiny_teacher.h"

using namespace lineage;
namespace lt = lineage::testing;
using lt::TempDir;
namespace fs = std::filesystem;

TEST(Provenance, HungarianFindsTheCheapestAssignment) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-1, 1);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 6;
    std::vector<double> c(n * n);
    for (auto& x : c) x = u(rng);
    auto got = protect::hungarian(c, n);
    auto cost = [&](const std::vector<int>& a) {
      double s = 0;
      for (int i = 0; i < n; ++i) s += c[i * n + a[i]];
      return s;
    };
    std::vector<int> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    double best = 1e9;
    do best = std::min(best, cost(perm));
    while (std::next_permutation(perm.begin(), perm.end()));
    EXPECT_NEAR(cost(got), best, 1e-12);
  }
}

TEST(Provenance, SpearmanOfARandomPermutationIsCalibrated) {
  std::vector<int> id(200);
  std::iota(id.begin(), id.end(), 0);
  auto same = protect::spearman_identity(id);
  EXPECT_DOUBLE_EQ(same.rho, 1.0);
  EXPECT_LT(same.log_p / std::log(10.0), -40);  // z = sqrt(199): p ~ 1e-45
  std::mt19937_64 rng(5);
  int below_05 = 0, below_01 = 0;
  const int draws = 4000;
  for (int i = 0; i < draws; ++i) {
    auto p = id;
    std::shuffle(p.begin(), p.end(), rng);
    double pv = std::exp(protect::spearman_identity(p).log_p);
    below_05 += pv < 0.05;
    below_01 += pv < 0.01;
  }
  EXPECT_NEAR(below_05 / double(draws), 0.05, 0.012);
  EXPECT_NEAR(below_01 / double(draws), 0.01, 0.006);
}

TEST(Provenance, FisherHolmAndTheNormalTailMatchTheirFormulas) {
  // One p-value combines to itself; two of 0.05: X = 11.98 on 4 degrees of freedom.
  EXPECT_NEAR(std::exp(protect::fisher_combine_log({std::log(0.2)})), 0.2, 1e-12);
  const double s = -2 * std::log(0.05);
  EXPECT_NEAR(std::exp(protect::fisher_combine_log({std::log(0.05), std::log(0.05)})), std::exp(-s) * (1 + s), 1e-12);
  // Far below what a double holds, still finite.
  double tiny = protect::fisher_combine_log({-2000.0, -3000.0});
  EXPECT_TRUE(std::isfinite(tiny));
  EXPECT_LT(tiny, -4990);
  auto h = protect::holm({0.01, 0.04, 0.03});
  EXPECT_NEAR(h[0], 0.03, 1e-12);
  EXPECT_NEAR(h[2], 0.06, 1e-12);
  EXPECT_NEAR(h[1], 0.06, 1e-12);
  EXPECT_NEAR(std::exp(protect::log_normal_upper(1.6448536)), 0.05, 1e-6);
  EXPECT_NEAR(protect::log_normal_upper(10), std::log(7.61985302416e-24), 1e-6);
  EXPECT_NEAR(protect::log_normal_upper(40), std::log(3.655893540915) - 350 * std::log(10.0), 1e-4);
}

TEST(Provenance, SignFlipAndPairedTestsHoldTheirLevel) {
  std::vector<double> up(30, 0.1);
  EXPECT_NEAR(protect::sign_flip_p(up, 999, 1), 1.0 / 1000, 1e-12);  // the floor
  std::mt19937_64 rng(9);
  std::normal_distribution<double> g(0, 1);
  int below_sf = 0, below_z = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<double> d(40);
    for (auto& x : d) x = g(rng);
    below_sf += protect::sign_flip_p(d, 400, trial) < 0.05;
    below_z += protect::paired_z_p(d) < 0.05;
  }
  EXPECT_NEAR(below_sf / 400.0, 0.05, 0.03);
  EXPECT_NEAR(below_z / 400.0, 0.05, 0.03);
}

namespace {

// A model whose layers are `parent`'s (selected), perturbed as fine-tuning would: the white-box
// test's positive case.
void write_derived(const fs::path& parent, const fs::path& out, const std::vector<int64_t>& layers, double noise) {
  io::ModelFile pm = io::read_model(parent.string());
  io::ModelFile m = pm;
  m.config = distill::select_layers_config(pm.config, layers);
  m.weights = distill::select_layers_weights(pm.weights, layers);
  torch::manual_seed(11);
  for (auto& [name, t] : m.weights) t = t + noise * t.std().item<double>() * torch::randn(t.sizes());
  m.path = out.string();
  io::write_model(m, out.string());
}

protect::ProvenanceRequest request(const TempDir& tmp, const std::string& suspect, std::vector<std::string> candidates) {
  protect::ProvenanceRequest q;
  q.suspect = (tmp / suspect).string();
  for (auto& c : candidates) q.candidates.push_back((tmp / c).string());
  q.text = (tmp / "text.txt").string();
  q.quiet = true;
  q.queries = 200;
  q.prompt_tokens = 8;
  q.gen_tokens = 12;
  q.windows = 40;
  q.window = 48;
  q.permutations = 4000;
  return q;
}

const protect::ProvenanceRow& row(const protect::ProvenanceResult& r, const std::string& candidate, const std::string& method) {
  for (const auto& x : r.rows)
    if (x.candidate == candidate && x.method == method) return x;
  throw std::runtime_error("no row " + candidate + " " + method);
}

}  // namespace

TEST(Provenance, ALayerCopiedModelIsTracedByItsWeightsAndIndependentOnesAreNot) {
  TempDir tmp;
  lt::spit(tmp / "text.txt", lt::tiny_corpus(400));
  lt::write_tiny_teacher(tmp / "ours.gguf", 7, 32, 4);
  lt::write_tiny_teacher(tmp / "other.gguf", 8, 32, 4);
  write_derived(tmp / "ours.gguf", tmp / "pruned.gguf", {0, 2}, 0.3);
  auto q = request(tmp, "pruned.gguf", {"ours.gguf", "other.gguf"});
  q.method = "weights";
  auto r = protect::run_provenance(q);
  EXPECT_LT(row(r, "ours.gguf", "weights").log10_p, -6);
  EXPECT_GT(row(r, "other.gguf", "weights").p_value, 0.01);
  EXPECT_EQ(r.verdict_candidate, "ours.gguf");
  // Independently initialised models of the same shape: no pair below 0.01 (10 pairs).
  int flagged = 0;
  for (uint64_t seed = 20; seed < 30; ++seed) {
    lt::write_tiny_teacher(tmp / "indep.gguf", seed, 32, 4);
    auto qi = request(tmp, "indep.gguf", {"ours.gguf"});
    qi.method = "weights";
    flagged += protect::run_provenance(qi).rows[0].p_value < 0.01;
  }
  EXPECT_LE(flagged, 1);
  // Another width: the test says it does not apply.
  lt::write_tiny_teacher(tmp / "wide.gguf", 3, 48, 2);
  auto qw = request(tmp, "wide.gguf", {"ours.gguf"});
  qw.method = "weights";
  EXPECT_FALSE(protect::run_provenance(qw).rows[0].applies);
}

TEST(Provenance, OutputsOfAPerturbedCopyPointToItsParentAndAnIndependentModelsDoNot) {
  TempDir tmp;
  lt::spit(tmp / "text.txt", lt::tiny_corpus(400));
  lt::write_tiny_teacher(tmp / "ours.gguf", 7, 32, 2, 0.5);
  lt::write_tiny_teacher(tmp / "other.gguf", 8, 32, 2, 0.5);
  lt::write_tiny_teacher(tmp / "indep.gguf", 9, 32, 2, 0.5);
  lt::write_tiny_teacher(tmp / "control.gguf", 10, 32, 2, 0.5);
  write_derived(tmp / "ours.gguf", tmp / "copy.gguf", {0, 1}, 0.15);
  auto q = request(tmp, "copy.gguf", {"ours.gguf", "other.gguf"});
  // Without a reference the output tests do not attribute anyone: only independent models say how
  // close is close.
  auto none = protect::run_provenance(q);
  EXPECT_FALSE(row(none, "ours.gguf", "logprobs").applies);
  EXPECT_FALSE(row(none, "ours.gguf", "blackbox").applies);
  q.references = {(tmp / "control.gguf").string()};
  q.outputs_decide = true;
  auto r = protect::run_provenance(q);
  EXPECT_LT(row(r, "ours.gguf", "blackbox").p_value, 0.01);
  EXPECT_LT(row(r, "ours.gguf", "logprobs").p_value, 0.01);
  EXPECT_EQ(r.verdict_candidate, "ours.gguf");
  auto qi = request(tmp, "indep.gguf", {"ours.gguf", "other.gguf"});
  qi.references = q.references;
  qi.outputs_decide = true;
  auto ri = protect::run_provenance(qi);
  EXPECT_EQ(ri.verdict_candidate, "") << ri.table();
  EXPECT_NE(r.table().find("verdict: derived from ours.gguf"), std::string::npos);
  // Bad inputs name what is wrong.
  auto bad = q;
  bad.candidates.clear();
  EXPECT_NE(lt::error_of([&] { protect::run_provenance(bad); }).find("--candidate"), std::string::npos);
  bad = q;
  bad.text = (tmp / "missing.txt").string();
  EXPECT_NE(lt::error_of([&] { protect::run_provenance(bad); }).find("missing.txt"), std::string::npos);
}
