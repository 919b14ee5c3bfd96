// The monitor's learned key score: the fitting recovers what separates labelled rows (a linear
// boundary for the logistic regression, an interaction it cannot draw for the boosted trees),
// explanations add up to the score, models survive JSON and bad ones are refused, the history
// signal tells a conversation the key held from a transcript it did not, and — on the development
// logs from outside (../shared/data/monitor-dev) — a model fit on one log is measured on the other.
#include <cmath>
#include <cstdlib>
#include <random>

#include <nlohmann/json.hpp>

#include "lineage/protect/monitor.h"
#include "lineage/core/error.h"
#include "lineage/protect/request_record.h"
#include "lineage/protect/traffic_sim.h"
#include "protect/monitor_internal.h"
#include "test_util.h"

namespace lineage::protect {
namespace {

using nlohmann::json;
using testing::error_of;
using testing::TempDir;

const size_t kF = monitor::key_feature_names().size();

// Rows with random features; the label is `rule` of features 0 and 1.
std::vector<FeatureRow> rows(int n, uint64_t seed, bool (*rule)(double, double)) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> z;
  std::vector<FeatureRow> out;
  for (int i = 0; i < n; ++i) {
    FeatureRow r;
    r.key_id = "k" + std::to_string(i);
    r.requests = 100;
    r.labelled = true;
    for (size_t j = 0; j < kF; ++j) r.features.push_back(z(rng));
    r.campaign = rule(r.features[0], r.features[1]);
    out.push_back(std::move(r));
  }
  return out;
}

bool linear(double a, double b) { return 2 * a - b > 0.5; }
bool checkerboard(double a, double b) { return (a > 0) != (b > 0); }

double accuracy(const LearnedModel& m, const std::vector<FeatureRow>& test) {
  double right = 0;
  for (const auto& r : test) right += (m.logit(r.features) >= 0) == r.campaign;
  return right / static_cast<double>(test.size());
}

TEST(MonitorLearned, LogisticRegressionFindsALinearBoundary) {
  FitOptions o;
  o.kind = "logistic_regression";
  auto m = fit_learned_model(rows(600, 1, linear), o);
  EXPECT_GT(m.weights[0], 0.5);
  EXPECT_LT(m.weights[1], -0.25);
  for (size_t j = 2; j < kF; ++j) EXPECT_LT(std::abs(m.weights[j]), 0.25) << monitor::key_feature_names()[j];
  EXPECT_GT(accuracy(m, rows(400, 2, linear)), 0.93);
  // The threshold is above every ordinary training row (FitOptions::target_fpr 0), or 1% of them.
  EXPECT_EQ(m.training_fpr, 0);
  o.target_fpr = 0.01;
  EXPECT_LE(fit_learned_model(rows(600, 1, linear), o).training_fpr, 0.01);
}

TEST(MonitorLearned, BoostedTreesFitAnInteractionALineCannot) {
  auto train = rows(1500, 3, checkerboard), test = rows(600, 4, checkerboard);
  FitOptions lr;
  lr.kind = "logistic_regression";
  FitOptions gb;
  gb.kind = "boosted_trees";
  gb.trees = 60;
  EXPECT_LT(accuracy(fit_learned_model(train, lr), test), 0.65);
  auto trees = fit_learned_model(train, gb);
  EXPECT_GT(accuracy(trees, test), 0.9);
  // Its explanation adds up: bias + every tree's root + the features' shares = the logit.
  for (int i = 0; i < 20; ++i) {
    const auto& x = test[i].features;
    double sum = trees.bias;
    for (const auto& t : trees.trees) sum += trees.learning_rate * t[0].value;
    for (const auto& e : trees.explain(x)) sum += e.weight;
    EXPECT_NEAR(sum, trees.logit(x), 0.05 * 24);  // shares under 0.05 are left out of the list
  }
  auto top = trees.explain(test[0].features);
  ASSERT_FALSE(top.empty());
  EXPECT_TRUE(top[0].signal == monitor::key_feature_names()[0] || top[0].signal == monitor::key_feature_names()[1]);
}

TEST(MonitorLearned, ModelsRoundTripThroughJsonAndBadOnesAreRefused) {
  auto train = rows(300, 5, linear);
  for (std::string kind : {"logistic_regression", "boosted_trees"}) {
    FitOptions o;
    o.kind = kind;
    o.trees = 20;
    auto m = fit_learned_model(train, o);
    auto back = LearnedModel::from_json(json::parse(m.to_json().dump()), "m.json");
    for (int i = 0; i < 10; ++i) EXPECT_DOUBLE_EQ(back.logit(train[i].features), m.logit(train[i].features)) << kind;
    EXPECT_EQ(back.threshold, m.threshold);
  }
  json bad = fit_learned_model(train, {}).to_json();
  bad["features"] = {"a", "b"};
  EXPECT_NE(error_of([&] { LearnedModel::from_json(bad, "m.json"); }).find("other features"), std::string::npos);
  bad = fit_learned_model(train, {}).to_json();
  bad["trees"][0][0] = {0, 0.5, 99, 1, 0.0};
  EXPECT_NE(error_of([&] { LearnedModel::from_json(bad, "m.json"); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { LearnedModel::from_json(json::object(), "m.json"); }).find("not a monitor model"), std::string::npos);
  std::vector<FeatureRow> one_class = rows(50, 6, [](double, double) { return false; });
  EXPECT_NE(error_of([&] { fit_learned_model(one_class, {}); }).find("campaign and ordinary"), std::string::npos);
  // The model Lineage ships reads, on the features this build computes.
  EXPECT_EQ(shipped_monitor_model().names, monitor::key_feature_names());
}

// Four requests of one key: a conversation it held (each turn's history is its previous request)
// and one turn whose history it never sent (a transcript made elsewhere).
TEST(MonitorLearned, NewHistoryCountsTranscriptsTheKeyNeverHeld) {
  TempDir tmp;
  json turn1 = {{"messages", {{{"role", "user"}, {"content", "What is a glacier made of?"}}}}};
  json turn2 = turn1;
  turn2["messages"].push_back({{"role", "assistant"}, {"content", "Compacted snow."}});
  turn2["messages"].push_back({{"role", "user"}, {"content", "How fast does it move?"}});
  json forged = {{"messages",
                  {{{"role", "user"}, {"content", "Explain tides."}},
                   {{"role", "assistant"}, {"content", "An answer this key never received."}},
                   {{"role", "user"}, {"content", "And neap tides?"}}}}};
  std::string log;
  int64_t ms = 1700000000000;
  for (const json& b : {turn1, turn2, forged, turn1}) {
    log += json({{"time", ms}, {"key", "k"}, {"client", "10.0.0.1"}, {"endpoint", "/v1/chat/completions"}, {"body", b},
                 {"status", 200}, {"prompt_tokens", 10}, {"completion_tokens", 20}})
               .dump() +
           "\n";
    ms += 60000;
  }
  testing::spit(tmp / "log.jsonl", log);
  auto r = key_feature_rows((tmp / "log.jsonl").string(), {});
  ASSERT_EQ(r.size(), 1u);
  const auto& names = monitor::key_feature_names();
  auto at = [&](const std::string& n) { return r[0].features[std::find(names.begin(), names.end(), n) - names.begin()]; };
  EXPECT_DOUBLE_EQ(at("follow_up"), 2.0 / 4);
  EXPECT_DOUBLE_EQ(at("new_history"), 1.0 / 4);
}

// combined = the learned score's flags, and the rules' flags that rest on log-probability harvest
// (the simulator's logit-KD keys score given text with echo), with those rules named as evidence.
TEST(MonitorLearned, CombinedKeepsTheRulesLogitHarvestFlags) {
  TempDir tmp;
  SimulationOptions so;
  so.ordinary_keys = 120;
  so.campaign_keys = 60;
  so.days = 2;
  so.seed = 21;
  auto sim = simulate_traffic((tmp / "sim.jsonl").string(), so);
  MonitorOptions rules, learned, combined;
  learned.scorer = "learned";
  combined.scorer = "combined";
  auto by_key = [&](const MonitorOptions& o) {
    std::map<std::string, KeyFindings> out;
    for (auto& k : analyze_log((tmp / "sim.jsonl").string(), o).keys) out[k.key_id] = k;
    return out;
  };
  auto r = by_key(rules), l = by_key(learned), c = by_key(combined);
  int from_rules = 0;
  for (auto& [id, k] : c) {
    bool logit = false;
    for (const auto& e : r[id].evidence) logit |= (e.signal == "scoring" || e.signal == "logprob_harvest") && e.weight >= 1;
    if (k.flagged) EXPECT_TRUE(l[id].flagged || r[id].flagged) << id;  // nothing flagged from nowhere
    if (l[id].flagged) EXPECT_TRUE(k.flagged) << id;
    if (r[id].flagged && logit) EXPECT_TRUE(k.flagged) << id;
    if (k.flagged && !l[id].flagged) {  // added by the rules: it says so
      ++from_rules;
      EXPECT_TRUE(r[id].flagged) << id;
      ASSERT_FALSE(k.evidence.empty());
      EXPECT_EQ(k.evidence[0].signal.rfind("rules:", 0), 0u) << id;
    }
  }
  EXPECT_GT(from_rules, 0) << "no logit-KD key was caught by the rules alone: the test shows nothing";
  EXPECT_THROW(by_key([] { MonitorOptions o; o.scorer = "nonsense"; return o; }()), Error);
}

// The development logs from outside: a model fit on one, measured on the other (neither was fit
// on what it is measured on). Figures at the time of writing (scripts/fit_monitor.sh): dev-b
// from dev-a recall 0.922 at 0.36% of ordinary keys, dev-a from dev-b 0.957 at 1.48%.
TEST(MonitorLearned, FitOnOneDevelopmentLogCatchesTheOthersCampaigns) {
  const auto dev = testing::shared_dir() / "data" / "monitor-dev";
  if (!std::filesystem::exists(dev / "dev-a.jsonl.xz"))
    GTEST_SKIP() << "../shared/data/monitor-dev is absent: the development-set check is skipped";
  TempDir tmp;
  std::map<std::string, std::vector<FeatureRow>> features;
  for (std::string d : {"dev-a", "dev-b"}) {
    const auto log = tmp / (d + ".jsonl");
    ASSERT_EQ(std::system(("xz -dc '" + (dev / (d + ".jsonl.xz")).string() + "' > '" + log.string() + "'").c_str()), 0);
    features[d] = key_feature_rows(log.string(), {}, read_labels((dev / (d + ".labels.json")).string()));
  }
  FitOptions o;
  o.kind = "logistic_regression";
  for (auto [train, test] : {std::pair<std::string, std::string>{"dev-a", "dev-b"}, {"dev-b", "dev-a"}}) {
    auto m = fit_learned_model(features[train], o);
    double campaign = 0, caught = 0, ordinary = 0, flagged = 0;
    for (const auto& r : features[test]) {
      if (!r.labelled || r.requests < 5) continue;
      const bool hit = m.logit(r.features) >= m.threshold;
      (r.campaign ? campaign : ordinary) += 1;
      (r.campaign ? caught : flagged) += hit;
    }
    std::printf("%s -> %s: recall %.3f (%.0f of %.0f), ordinary flagged %.0f of %.0f\n", train.c_str(), test.c_str(),
                caught / campaign, caught, campaign, flagged, ordinary);
    EXPECT_GE(caught / campaign, 0.9) << train << " -> " << test;
    EXPECT_LE(flagged / ordinary, 0.01) << train << " -> " << test;
    // The whole analysis with that model: keys, and communities taken together as one key
    // (a campaign's meek members flagged through their cohort). The bar: key recall >= 90%,
    // request recall >= 95%, at most 1% of every ordinary kind.
    MonitorOptions mo;
    mo.scorer = "learned";
    mo.model = std::make_shared<const LearnedModel>(m);
    const auto e = evaluate_monitor(analyze_log((tmp / (test + ".jsonl")).string(), mo),
                                    read_labels((dev / (test + ".labels.json")).string()));
    std::printf("%s -> %s, whole analysis: key recall %.3f, request recall %.3f, %lld of %lld ordinary keys flagged\n",
                train.c_str(), test.c_str(), e.recall, e.request_recall, static_cast<long long>(e.false_positives),
                static_cast<long long>(e.ordinary_keys));
    EXPECT_GE(e.recall, 0.9) << train << " -> " << test;
    EXPECT_GE(e.request_recall, 0.95) << train << " -> " << test;
    for (const auto& k : e.kinds)
      if (!k.campaign) EXPECT_LE(k.flagged, static_cast<int64_t>(0.01 * static_cast<double>(k.keys))) << k.kind;
  }
}

}  // namespace
}  // namespace lineage::protect
