// lineage monitor: extraction campaigns in a request log; --simulate writes labelled traffic,
// --labels scores the result.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/traffic_sim.h"

namespace lineage::cli {

namespace {

std::vector<std::string> lines_of(const std::string& path, bool paragraphs) {
  std::ifstream in(path);
  if (!in) fail("cannot open '{}'", path);
  std::vector<std::string> out;
  std::string line, block;
  while (std::getline(in, line)) {
    if (!paragraphs) {
      if (!line.empty()) out.push_back(line);
    } else if (line.empty()) {
      if (!block.empty()) out.push_back(block), block.clear();
    } else {
      block += (block.empty() ? "" : "\n") + line;
    }
  }
  if (!block.empty()) out.push_back(block);
  return out;
}

std::string evidence_lines(const std::vector<protect::Evidence>& ev) {
  std::string out;
  for (const auto& e : ev) out += fmt::format("  {:+.2f} {:<16} {}\n", e.weight, e.signal, e.why);
  return out;
}

void print_report(const protect::MonitorReport& report, int top) {
  int64_t flagged = 0, communities = 0;
  for (const auto& k : report.keys) flagged += k.flagged;
  for (const auto& c : report.communities) communities += c.flagged;
  std::cout << fmt::format("{} requests, {} keys, {} communities of 2+ keys; {} keys flagged, {} communities ({:.1f} s, {:.0f} requests/s)\n",
                           report.requests, report.keys.size(), report.communities.size(), flagged, communities, report.seconds,
                           report.requests / std::max(1e-9, report.seconds));
  int shown = 0;
  for (const auto& c : report.communities) {
    if (!c.flagged || shown++ >= top) continue;
    std::cout << fmt::format("\ncommunity {}: {} keys, {} requests, score {:.2f}\n", c.id, c.keys.size(), c.requests, c.score)
              << evidence_lines(c.evidence);
  }
  shown = 0;
  for (const auto& k : report.keys) {
    if (!k.flagged || shown++ >= top) continue;
    std::cout << fmt::format("\nkey {}: {} requests, score {:.2f}{}\n", k.key_id, k.requests, k.score,
                             k.community >= 0 ? fmt::format(", community {} (score {:.2f})", k.community, k.community_score) : "")
              << evidence_lines(k.evidence);
  }
}

}  // namespace

Run add_monitor(CLI::App& app) {
  struct Options {
    std::string log, simulate, labels, json_out, allow_keys, allow_texts;
    bool calibrate = false;
    protect::MonitorOptions monitor;
    protect::SimulationOptions sim;
    int top = 10;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("monitor", "Flag extraction campaigns (keys and communities of keys) in a request log");
  sub->add_option("--log", o->log, "the request log: lineage serve --log (SQLite) or JSONL, one request per line (see README)");
  sub->add_option("--simulate", o->simulate, "write labelled synthetic traffic here (new .db, or .jsonl), with OUT.labels.json, then analyse it");
  sub->add_option("--keys", o->sim.ordinary_keys, "--simulate: ordinary keys")->capture_default_str();
  sub->add_option("--campaign-keys", o->sim.campaign_keys, "--simulate: keys of extraction campaigns")->capture_default_str();
  sub->add_option("--days", o->sim.days, "--simulate: days of traffic")->capture_default_str();
  sub->add_option("--seed", o->sim.seed, "--simulate: random seed (the monitor was tuned on seeds 1-6: report on others)")->capture_default_str();
  sub->add_option("--text", o->sim.text_dir, "--simulate: prompts from real text in this folder (laid out as ../shared/data)");
  sub->add_option("--labels", o->labels, "labels JSON {key: {label: campaign|ordinary, kind}}: print precision, recall and false positives per kind");
  sub->add_flag("--calibrate", o->calibrate, "with --labels: set the threshold for at most 1% false positives on these labels' ordinary keys");
  sub->add_option("--threshold", o->monitor.threshold, "score at which a key or community is flagged")->capture_default_str();
  sub->add_option("--window-days", o->monitor.window_days, "analyse only the last N days of the log (0: all)")->capture_default_str();
  sub->add_option("--allow-keys", o->allow_keys, "file of key ids (one per line) that are never flagged");
  sub->add_option("--allow-texts", o->allow_texts, "file of known templates or system prompts (blank-line separated): not evidence, no link");
  sub->add_option("--top", o->top, "flagged keys and communities printed")->capture_default_str();
  sub->add_option("--json", o->json_out, "write every key's and community's findings (and the evaluation) here");
  return [o] {
    if (o->log.empty() == o->simulate.empty()) fail("lineage monitor needs --log FILE, or --simulate OUT.db");
    if (o->calibrate && o->labels.empty() && o->simulate.empty()) fail("--calibrate needs --labels (or --simulate, which writes them)");
    std::string log = o->log, labels = o->labels;
    if (!o->simulate.empty()) {
      auto s = protect::simulate_traffic(o->simulate, o->sim);
      std::cerr << fmt::format("simulated {} requests from {} keys into {} (labels: {})\n", s.requests, s.keys, o->simulate, s.labels_path);
      log = o->simulate;
      if (labels.empty()) labels = s.labels_path;
    }
    if (!o->allow_keys.empty()) o->monitor.allow_keys = lines_of(o->allow_keys, false);
    if (!o->allow_texts.empty()) o->monitor.allow_texts = lines_of(o->allow_texts, true);
    auto report = protect::analyze_log(log, o->monitor);
    std::map<std::string, protect::KeyLabel> label_map;
    if (!labels.empty()) label_map = protect::read_labels(labels);
    std::string note = fmt::format("set on simulated ordinary traffic of tuning seeds {} for at most {:.0f}% false positives",
                                   protect::kTuningSeeds, 100 * protect::kTargetFpr);
    if (o->calibrate) {
      const double t = protect::evaluate_monitor(report, label_map).threshold_for_target_fpr;
      report = protect::analyze_log(log, [&] { auto m = o->monitor; m.threshold = t; return m; }());
      note = fmt::format("calibrated on the ordinary keys of '{}' for at most {:.0f}% false positives: "
                         "figures below are on the data it was set on", labels, 100 * protect::kTargetFpr);
    } else if (o->monitor.threshold != protect::kDefaultMonitorThreshold) {
      note = "given with --threshold";
    }
    std::cout << fmt::format("threshold {:.2f} ({})\n", report.threshold, note);
    print_report(report, o->top);
    nlohmann::json out = protect::to_json(report);
    out["threshold_note"] = note;
    if (!labels.empty()) {
      auto e = protect::evaluate_monitor(report, label_map);
      std::cout << "\n" << protect::format_evaluation(e);
      out["evaluation"] = protect::to_json(e);
    }
    if (!o->json_out.empty()) write_file_atomic(o->json_out, out.dump(2) + "\n");
  };
}

}  // namespace lineage::cli
