// `lineage monitor` on a request log: by default simulated traffic of about 1.6M requests (2,500
// keys, a week, made once per run in a temp folder), or a given log (--log: a gateway's JSONL such
// as ../shared/data/monitor-dev's, or lineage serve's SQLite). The whole analysis (read, features,
// key graph, communities, scores) is timed in wall and CPU seconds, with the process's peak
// memory. Prints one JSON line.
//   bench_monitor [--keys N] [--campaign-keys N] [--days D] [--seed S] [--format sqlite|jsonl]
//   bench_monitor --log FILE [--scorer rules|learned|combined]
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "bench_common.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/traffic_sim.h"

namespace {

double cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lineage;
  protect::SimulationOptions so;
  so.ordinary_keys = 2000;
  so.campaign_keys = 500;
  so.days = 7;
  std::string log, format = "sqlite";
  protect::MonitorOptions mo;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--keys") so.ordinary_keys = std::stoi(argv[i + 1]);
    if (a == "--days") so.days = std::stoi(argv[i + 1]);
    if (a == "--campaign-keys") so.campaign_keys = std::stoi(argv[i + 1]);
    if (a == "--seed") so.seed = std::stoull(argv[i + 1]);
    if (a == "--format") format = argv[i + 1];
    if (a == "--log") log = argv[i + 1];
    if (a == "--scorer") mo.scorer = argv[i + 1];
  }
  auto dir = std::filesystem::temp_directory_path() / ("lineage-bench-monitor-" + std::to_string(::getpid()));
  double simulate_s = 0;
  if (log.empty()) {
    std::filesystem::create_directories(dir);
    log = (dir / (format == "jsonl" ? "requests.jsonl" : "requests.db")).string();
    const double t0 = bench::now_s();
    protect::simulate_traffic(log, so);
    simulate_s = bench::now_s() - t0;
  }
  const double rss_before = peak_rss_mb();
  const double t1 = bench::now_s(), c1 = cpu_s();
  auto report = protect::analyze_log(log, mo);
  const double t2 = bench::now_s(), c2 = cpu_s();
  int64_t flagged = 0;
  for (const auto& k : report.keys) flagged += k.flagged;
  const auto bytes = std::filesystem::file_size(log);
  bench::emit({{"bench", "monitor"},
               {"log", log},
               {"requests", report.requests},
               {"keys", report.keys.size()},
               {"log_bytes", bytes},
               {"scorer", mo.scorer},
               {"analyze_s", t2 - t1},
               {"cpu_s", c2 - c1},
               {"requests_per_s", report.requests / (t2 - t1)},
               {"requests_per_cpu_s", report.requests / (c2 - c1)},
               {"peak_rss_mb", peak_rss_mb()},
               {"peak_rss_mb_before", rss_before},
               {"simulate_s", simulate_s},
               {"flagged_keys", flagged}});
  std::filesystem::remove_all(dir);
  return 0;
}
