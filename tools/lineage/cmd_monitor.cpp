// lineage monitor: extraction-like use in a server's request log; --simulate writes labelled traffic.
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/protect/monitor.h"

namespace lineage::cli {

Run add_monitor(CLI::App& app) {
  struct Options {
    std::string log, simulate, json_out;
    protect::MonitorOptions monitor;
    protect::SimulationOptions sim;
    int top = 20;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("monitor", "Flag extraction-like traffic (per key and per cluster of keys) in a request log");
  sub->add_option("--log", o->log, "the request log lineage serve --log writes (SQLite)");
  sub->add_option("--simulate", o->simulate, "write labelled synthetic traffic to this new SQLite file, then analyse it");
  sub->add_option("--keys", o->sim.ordinary_keys, "--simulate: ordinary keys")->capture_default_str();
  sub->add_option("--campaign-keys", o->sim.campaign_keys, "--simulate: keys of extraction campaigns")->capture_default_str();
  sub->add_option("--days", o->sim.days, "--simulate: days of traffic")->capture_default_str();
  sub->add_option("--seed", o->sim.seed, "--simulate: random seed")->capture_default_str();
  sub->add_option("--threshold", o->monitor.threshold, "score at which a key or cluster is flagged")->capture_default_str();
  sub->add_option("--top", o->top, "flagged keys and clusters printed")->capture_default_str();
  sub->add_option("--json", o->json_out, "write every key's and cluster's findings here");
  return [o] {
    if (o->log.empty() == o->simulate.empty()) fail("lineage monitor needs --log DB, or --simulate OUT.db");
    std::string db = o->log;
    if (!o->simulate.empty()) {
      int64_t n = protect::simulate_traffic(o->simulate, o->sim);
      std::cerr << "simulated " << n << " requests from " << o->sim.ordinary_keys + o->sim.campaign_keys << " keys into "
                << o->simulate << "\n";
      db = o->simulate;
    }
    auto report = protect::analyze_log(db, o->monitor);
    int64_t flagged = 0;
    for (const auto& k : report.keys) flagged += k.flagged;
    std::cout << fmt::format("{} requests, {} keys, {} clusters of 2+ keys; {} keys flagged ({:.1f} s)\n", report.requests,
                             report.keys.size(), report.clusters.size(), flagged, report.seconds);
    int shown = 0;
    for (const auto& c : report.clusters) {
      if (!c.flagged || shown++ >= o->top) continue;
      std::cout << fmt::format("\ncluster {}: {} keys, {} requests, score {:.2f}\n", c.id, c.keys.size(), c.requests, c.score);
      for (const auto& r : c.reasons) std::cout << "  - " << r << "\n";
    }
    shown = 0;
    for (const auto& k : report.keys) {
      if (!k.flagged || shown++ >= o->top) continue;
      std::cout << fmt::format("\nkey {}: {} requests, score {:.2f}{}\n", k.key_id, k.requests, k.score,
                               k.cluster >= 0 ? fmt::format(", cluster {}", k.cluster) : "");
      for (const auto& r : k.reasons) std::cout << "  - " << r << "\n";
    }
    if (!o->simulate.empty()) {
      std::cout << "\nkind          keys  flagged   rate\n";
      for (const auto& s : protect::evaluate_monitor(db, report))
        std::cout << fmt::format("{:<12} {:>5}  {:>7}  {:>5.1f}%  {}\n", s.kind, s.keys, s.flagged, 100.0 * s.flagged / std::max<int64_t>(1, s.keys),
                                 s.campaign ? "recall" : "false positives");
    }
    if (!o->json_out.empty()) write_file_atomic(o->json_out, protect::to_json(report).dump(2) + "\n");
  };
}

}  // namespace lineage::cli
