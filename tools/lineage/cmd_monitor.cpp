// lineage monitor: extraction campaigns in a request log; --simulate writes labelled traffic,
// --labels scores the result.
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/request_record.h"
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

std::string default_note(const protect::MonitorOptions& o) {
  if (o.scorer == "rules")
    return fmt::format("set on simulated ordinary traffic of tuning seeds {} for at most {:.0f}% false positives", protect::kTuningSeeds,
                       100 * protect::kTargetFpr);
  const auto& m = o.model ? *o.model : protect::shipped_monitor_model();
  return fmt::format("the learned score's, set at fitting on {} ({:.2f}% of its ordinary keys at or above it)", m.trained_on,
                     100 * m.training_fpr);
}

volatile std::sig_atomic_t g_stop = 0;

// --follow: reads what the log gained every `interval` seconds and prints each key newly flagged
// as one JSON line on stdout (progress as JSON lines on stderr).
void follow_log(const std::string& log, const protect::MonitorOptions& options, double interval, double seconds,
                const std::string& json_out, const std::string& html_out, const std::string& note) {
  g_stop = 0;
  auto on_signal = [](int) { g_stop = 1; };
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  protect::LogFollower follower(log, options);
  std::set<std::string> flagged;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  int64_t total = 0;
  bool first = true;
  while (!g_stop) {
    const int64_t added = follower.poll();
    if (follower.restarted()) {
      std::cerr << nlohmann::json({{"event", "restarted"},
                                   {"log", log},
                                   {"why", "the log is shorter than what was read: rotated or truncated"}})
                       .dump()
                << std::endl;
      flagged.clear(), total = 0;
    }
    total += added;
    if (added > 0 || first) {
      const auto report = follower.report();
      int64_t fresh = 0;
      for (const auto& k : report.keys) {
        if (!k.flagged || !flagged.insert(k.key_id).second) continue;
        ++fresh;
        std::cout << nlohmann::json({{"event", "flagged"},
                                     {"key_id", k.key_id},
                                     {"score", k.score},
                                     {"requests", k.requests},
                                     {"community", k.community},
                                     {"last_time", protect::iso_time_ms(report.last_ms)},
                                     {"evidence", protect::evidence_json(k.evidence)}})
                         .dump()
                  << std::endl;
      }
      std::cerr << nlohmann::json({{"event", "read"}, {"requests", total}, {"new_requests", added}, {"keys", report.keys.size()},
                                   {"flagged", flagged.size()}, {"new_flags", fresh}, {"analysis_seconds", report.seconds}})
                       .dump()
                << std::endl;
      if (!json_out.empty()) write_file_atomic(json_out, protect::to_json(report).dump(2) + "\n");
      if (!html_out.empty())
        write_file_atomic(html_out, protect::monitor_html(report, "lineage monitor --follow: " + log, note));
      first = false;
    }
    if (seconds > 0 && elapsed() >= seconds) break;
    const double wait = seconds > 0 ? std::min(interval, std::max(0.0, seconds - elapsed())) : interval;
    for (double waited = 0; waited < wait && !g_stop; waited += 0.05) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

}  // namespace

Run add_monitor(CLI::App& app) {
  struct Options {
    std::string log, simulate, labels, json_out, html_out, allow_keys, allow_texts, model, features_out, fit_out;
    bool follow = false;
    double interval = 5, follow_seconds = 0;
    std::vector<std::string> train;
    std::string fit_kind = "boosted_trees";
    double fit_fpr = 0;
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
  sub->add_option("--html", o->html_out,
                  "write a page for the owner here: flagged communities as graphs, each flagged key's evidence and timeline, "
                  "the ordinary keys nearest the threshold");
  sub->add_flag("--follow", o->follow,
                "keep reading the log as it grows (a live gateway's JSONL, or lineage serve's SQLite log) and print each new "
                "flag as a JSON line; --json and --html are rewritten after each read");
  sub->add_option("--interval", o->interval, "--follow: seconds between reads")->capture_default_str()->check(CLI::Range(0.05, 86400.0));
  sub->add_option("--follow-seconds", o->follow_seconds, "--follow: stop after this many seconds (0: until interrupted)")
      ->capture_default_str();
  sub->add_option("--scorer", o->monitor.scorer,
                  "rules (evidence rules and communities), learned (the learned key score) or combined (learned, and the "
                  "rules' flags on log-probability harvest and on transcripts this server never wrote)")
      ->capture_default_str();
  sub->add_option("--model", o->model, "--scorer learned: a model --fit wrote (default: the one Lineage ships)");
  sub->add_option("--features", o->features_out, "write each key's features (labelled with --labels) as JSONL here, for --fit");
  sub->add_option("--fit", o->fit_out, "fit the learned score on the --train feature files and write the model here");
  sub->add_option("--train", o->train, "--fit: feature files (--features), labelled; repeat for several logs");
  sub->add_option("--fit-kind", o->fit_kind, "--fit: boosted_trees or logistic_regression")->capture_default_str();
  sub->add_option("--fit-fpr", o->fit_fpr,
                  "--fit: share of the training's ordinary keys the threshold may leave above it (0: above every one)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.5));
  return [o] {
    if (!o->fit_out.empty()) {
      if (o->train.empty()) fail("--fit needs --train FEATURES.jsonl (write them with --log L --labels LL --features F)");
      std::vector<protect::FeatureRow> rows;
      std::string names;
      for (const auto& t : o->train) {
        std::ifstream in(t);
        if (!in) fail("cannot open the feature file '{}'", t);
        std::string line;
        for (int64_t n = 1; std::getline(in, line); ++n)
          if (!line.empty()) rows.push_back(protect::FeatureRow::from_json(nlohmann::json::parse(line), fmt::format("{}:{}", t, n)));
        names += (names.empty() ? "" : ", ") + std::filesystem::path(t).filename().string();
      }
      protect::FitOptions fo;
      fo.kind = o->fit_kind;
      fo.target_fpr = o->fit_fpr;
      fo.trained_on = names;
      fo.min_requests = o->monitor.min_requests;
      auto model = protect::fit_learned_model(rows, fo);
      write_file_atomic(o->fit_out, model.to_json().dump(2) + "\n");
      std::cout << fmt::format("fit on {} keys of {}: threshold {:.3f}, training recall {:.1f}% at {:.2f}% of ordinary keys\n",
                               rows.size(), names, model.threshold, 100 * model.training_recall, 100 * model.training_fpr);
      for (size_t j = 0; j < model.weights.size(); ++j)
        std::cout << fmt::format("  {:+.3f} {}\n", model.weights[j], model.names[j]);
      return;
    }
    if (!o->model.empty()) {
      o->monitor.model = std::make_shared<protect::LearnedModel>(
          protect::LearnedModel::from_json(nlohmann::json::parse(read_file(o->model)), o->model));
      if (o->monitor.scorer == "rules") o->monitor.scorer = "learned";
    }
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
    std::map<std::string, protect::KeyLabel> label_map;
    if (!labels.empty()) label_map = protect::read_labels(labels);
    if (o->follow) {
      const std::string note = o->monitor.threshold != protect::kDefaultMonitorThreshold && o->monitor.scorer == "rules"
                                   ? "given with --threshold"
                                   : default_note(o->monitor);
      if (!o->simulate.empty() || o->calibrate || !o->features_out.empty())
        fail("--follow reads a live log: not with --simulate, --calibrate or --features");
      follow_log(log, o->monitor, o->interval, o->follow_seconds, o->json_out, o->html_out, note);
      return;
    }
    if (!o->features_out.empty()) {
      std::string out;
      for (const auto& r : protect::key_feature_rows(log, o->monitor, label_map)) out += r.to_json().dump() + "\n";
      write_file_atomic(o->features_out, out);
    }
    auto report = protect::analyze_log(log, o->monitor);
    std::string note = default_note(o->monitor);
    if (o->calibrate) {
      const double t = protect::evaluate_monitor(report, label_map).threshold_for_target_fpr;
      report = protect::analyze_log(log, [&] {
        auto m = o->monitor;
        m.threshold = t;
        if (m.scorer != "rules") {  // the learned score's threshold is the model's
          auto copy = std::make_shared<protect::LearnedModel>(m.model ? *m.model : protect::shipped_monitor_model());
          copy->threshold = t;
          m.model = copy;
        }
        return m;
      }());
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
    if (!o->html_out.empty()) write_file_atomic(o->html_out, protect::monitor_html(report, "lineage monitor: " + log, note));
  };
}

}  // namespace lineage::cli
