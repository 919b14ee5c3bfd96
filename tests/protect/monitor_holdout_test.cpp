// lineage monitor on traffic it was not tuned on. The monitor's weights and threshold were set
// on simulations of seeds 1-6 (protect::kTuningSeeds); these four configurations use seeds
// 101-104, which were not run before the figures below were first taken, and differ in size,
// mix, length and log format. Every behaviour in the simulator is drawn per run, per campaign and
// per key from wide ranges (src/protect/traffic_*.cpp); the fourth writes its prompts from real
// text nobody here wrote (../shared/data), so that content features meet real language. What each
// run must show (issue 13):
// recall >= 90% of campaign keys and >= 95% of their requests for hydra, logit-KD, seq-KD and
// reseller kinds, >= 50% of careful imitators, and at most 1% false positives in every ordinary
// kind. Each run prints its `--labels` table.
#include "lineage/protect/monitor.h"
#include "lineage/protect/traffic_sim.h"
#include "test_util.h"

namespace lineage::protect {
namespace {

struct Config {
  const char* name;
  int ordinary, campaign, days;
  uint64_t seed;
  const char* file;
  bool real_text = false;  // prompts from ../shared/data (HellaSwag topics, ARC/PIQA questions, WikiText)
};

void PrintTo(const Config& c, std::ostream* os) { *os << c.name << " (seed " << c.seed << ")"; }

class MonitorHoldout : public ::testing::TestWithParam<Config> {};

TEST_P(MonitorHoldout, FindsCampaignsAtFewFalsePositives) {
  const Config c = GetParam();
  testing::TempDir tmp;
  SimulationOptions so;
  so.ordinary_keys = c.ordinary, so.campaign_keys = c.campaign, so.days = c.days, so.seed = c.seed;
  if (c.real_text) {
    so.text_dir = (testing::shared_dir() / "data").string();
    if (!std::filesystem::exists(so.text_dir + "/eval/hellaswag_val_full.txt"))
      GTEST_SKIP() << "../shared/data is absent: the real-text configuration is skipped";
  }
  const std::string log = (tmp / c.file).string();
  auto sim = simulate_traffic(log, so);
  auto report = analyze_log(log);
  auto e = evaluate_monitor(report, read_labels(sim.labels_path));
  std::printf("%s: seed %llu, %d ordinary + %d campaign keys, %d days, %s%s: %lld requests, analysis %.1f s (%.0f requests/s)\n%s",
              c.name, static_cast<unsigned long long>(c.seed), c.ordinary, c.campaign, c.days, c.file, c.real_text ? ", real text" : "",
              static_cast<long long>(report.requests), report.seconds, report.requests / report.seconds, format_evaluation(e).c_str());
  EXPECT_EQ(e.unlabelled_keys, 0);
  for (const auto& s : e.kinds) {
    const double keys = static_cast<double>(s.flagged) / static_cast<double>(s.keys);
    const double requests = static_cast<double>(s.flagged_requests) / static_cast<double>(std::max<int64_t>(1, s.requests));
    if (!s.campaign) {
      EXPECT_LE(keys, 0.01) << s.kind << ": " << s.flagged << " of " << s.keys << " ordinary keys flagged";
    } else if (s.kind == "careful") {
      EXPECT_GE(keys, 0.5) << s.kind;
    } else {
      EXPECT_GE(keys, 0.9) << s.kind;
      EXPECT_GE(requests, 0.95) << s.kind;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(HeldOutSeeds, MonitorHoldout,
                         ::testing::Values(Config{"week", 1000, 300, 7, 101, "requests.db"},
                                           Config{"short_jsonl", 900, 250, 3, 102, "requests.jsonl"},
                                           Config{"fortnight", 700, 200, 14, 103, "requests.db"},
                                           Config{"real_text", 1000, 300, 7, 104, "requests.db", true}),
                         [](const ::testing::TestParamInfo<Config>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace lineage::protect
