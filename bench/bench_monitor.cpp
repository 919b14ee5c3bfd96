// `lineage monitor` on a request log of about a million requests: simulated traffic (2,500 keys,
// a week, made once per run in a temp folder), then the whole analysis (read, features,
// key graph, communities, scores) timed. Prints one JSON line.
//   bench_monitor [--keys N] [--campaign-keys N] [--days D] [--seed S]
#include <filesystem>
#include <string>
#include <unistd.h>

#include "bench_common.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/traffic_sim.h"

int main(int argc, char** argv) {
  using namespace lineage;
  protect::SimulationOptions so;
  so.ordinary_keys = 2000;
  so.campaign_keys = 500;
  so.days = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--keys") so.ordinary_keys = std::stoi(argv[i + 1]);
    if (a == "--days") so.days = std::stoi(argv[i + 1]);
    if (a == "--campaign-keys") so.campaign_keys = std::stoi(argv[i + 1]);
    if (a == "--seed") so.seed = std::stoull(argv[i + 1]);
  }
  auto dir = std::filesystem::temp_directory_path() / ("lineage-bench-monitor-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string db = (dir / "requests.db").string();
  double t0 = bench::now_s();
  int64_t n = protect::simulate_traffic(db, so).requests;
  double t1 = bench::now_s();
  auto report = protect::analyze_log(db);
  double t2 = bench::now_s();
  int64_t flagged = 0;
  for (const auto& k : report.keys) flagged += k.flagged;
  bench::emit({{"bench", "monitor"},
               {"requests", n},
               {"keys", report.keys.size()},
               {"analyze_s", t2 - t1},
               {"requests_per_s", n / (t2 - t1)},
               {"simulate_s", t1 - t0},
               {"db_bytes", std::filesystem::file_size(db)},
               {"flagged_keys", flagged}});
  std::filesystem::remove_all(dir);
  return 0;
}
