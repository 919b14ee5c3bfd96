// lineage monitor: on labelled simulated traffic (1,300 keys, a week) every campaign kind is found
// (recall >= 95%) and no ordinary kind is flagged above 1%; reasons name the evidence; a log that
// is not a request log gives a clear error. (The same analysis over a real `lineage serve` log:
// tests/serve/serve_test.cpp writes one; tests/cli reads one with the CLI.)
#include <sqlite3.h>

#include "lineage/protect/monitor.h"
#include "test_util.h"

namespace lineage::protect {
namespace {

using testing::error_of;
using testing::TempDir;

TEST(Monitor, FindsEveryCampaignKindAtFewFalsePositivesOnSimulatedTraffic) {
  TempDir tmp;
  for (uint64_t seed : {11, 12}) {
    const std::string db = (tmp / ("sim" + std::to_string(seed) + ".db")).string();
    SimulationOptions so;
    so.seed = seed;
    int64_t n = simulate_traffic(db, so);
    EXPECT_GT(n, 200000);
    auto report = analyze_log(db);
    EXPECT_EQ(report.requests, n);
    EXPECT_EQ(report.keys.size(), 1300u);
    std::printf("seed %llu: %lld requests, %.1f s\n", static_cast<unsigned long long>(seed), static_cast<long long>(n),
                report.seconds);
    for (const auto& s : evaluate_monitor(db, report)) {
      double rate = double(s.flagged) / s.keys;
      std::printf("  %-12s %4lld keys, %4lld flagged (%.1f%% %s)\n", s.kind.c_str(), static_cast<long long>(s.keys),
                  static_cast<long long>(s.flagged), 100 * rate, s.campaign ? "recall" : "false positives");
      if (s.campaign)
        EXPECT_GE(rate, 0.95) << s.kind;
      else
        EXPECT_LE(rate, 0.01) << s.kind;
    }
    // Every flagged key says why.
    for (const auto& k : report.keys)
      if (k.flagged) EXPECT_FALSE(k.reasons.empty()) << k.key_id;
  }
}

TEST(Monitor, ABlatantKeyIsExplainedByItsEvidence) {
  TempDir tmp;
  const std::string db = (tmp / "sim.db").string();
  SimulationOptions so;
  so.ordinary_keys = 200;
  so.campaign_keys = 20;
  simulate_traffic(db, so);
  auto report = analyze_log(db);
  bool seen = false;
  for (const auto& k : report.keys) {
    if (k.key_id.rfind("blatant", 0) != 0) continue;
    seen = true;
    EXPECT_TRUE(k.flagged);
    EXPECT_GT(k.logprob_share, 0.99);
    EXPECT_GT(k.cot_share, 0.99);
    EXPECT_LT(k.timing_cv, 0.5);
    std::string all;
    for (const auto& r : k.reasons) all += r + "\n";
    EXPECT_NE(all.find("log-probabilities of generated text"), std::string::npos) << all;
    EXPECT_NE(all.find("machine-regular timing"), std::string::npos) << all;
  }
  EXPECT_TRUE(seen);
  EXPECT_NE(error_of([&] { simulate_traffic(db, so); }).find("exists"), std::string::npos);
}

TEST(Monitor, ALogThatIsNotARequestLogIsRefused) {
  TempDir tmp;
  EXPECT_NE(error_of([&] { analyze_log((tmp / "absent.db").string()); }).find("cannot open the request log"), std::string::npos);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((tmp / "other.db").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE t (x INTEGER);", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_NE(error_of([&] { analyze_log((tmp / "other.db").string()); }).find("is not a lineage request log"), std::string::npos);
  testing::spit(tmp / "junk.db", "this is not sqlite");
  EXPECT_NE(error_of([&] { analyze_log((tmp / "junk.db").string()); }).find("junk.db"), std::string::npos);
}

}  // namespace
}  // namespace lineage::protect
