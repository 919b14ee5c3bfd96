// Scoring the monitor on labelled traffic: precision, recall per campaign kind (of keys and of
// requests), false positives per ordinary kind, and the threshold these labels would call for.
#include <algorithm>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/protect/monitor.h"

namespace lineage::protect {

std::map<std::string, KeyLabel> read_labels(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open the labels file '{}'", path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is not JSON: {}", path, e.what());
  }
  if (!j.is_object()) fail("'{}': expected an object {{\"key\": {{\"label\": \"campaign\"|\"ordinary\", \"kind\": ...}}}}", path);
  // The labels may sit under "keys" ({"keys": {KEY: {...}}, ...}), as generators that write other
  // fields beside them do; a key literally named "keys" is told apart by having a "label".
  if (j.contains("keys") && j["keys"].is_object() && !j["keys"].contains("label")) {
    nlohmann::json inner = j["keys"];
    j = std::move(inner);
  }
  std::map<std::string, KeyLabel> out;
  for (auto& [key, v] : j.items()) {
    if (!v.is_object() || !v.contains("label") || !v["label"].is_string())
      fail("'{}': key '{}' needs {{\"label\": \"campaign\" or \"ordinary\", \"kind\": \"...\"}}", path, key);
    const std::string label = v["label"].get<std::string>();
    if (label != "campaign" && label != "ordinary") fail("'{}': key '{}' has label '{}', expected campaign or ordinary", path, key, label);
    KeyLabel l;
    l.campaign = label == "campaign";
    l.kind = v.contains("kind") && v["kind"].is_string() ? v["kind"].get<std::string>() : label;
    l.campaign_id = v.contains("campaign") && v["campaign"].is_string() ? v["campaign"].get<std::string>() : "";
    out[key] = l;
  }
  return out;
}

Evaluation evaluate_monitor(const MonitorReport& report, const std::map<std::string, KeyLabel>& labels) {
  Evaluation e;
  std::map<std::string, KindScore> kinds;
  int64_t campaign_requests = 0, caught_requests = 0;
  std::vector<double> ordinary_scores;
  for (const auto& k : report.keys) {
    auto it = labels.find(k.key_id);
    if (it == labels.end()) {
      ++e.unlabelled_keys;
      continue;
    }
    auto& s = kinds[it->second.kind];
    s.kind = it->second.kind;
    s.campaign = it->second.campaign;
    ++s.keys, s.requests += k.requests;
    if (k.flagged) ++s.flagged, s.flagged_requests += k.requests;
    e.flagged_keys += k.flagged;
    if (s.campaign) {
      ++e.campaign_keys, e.true_positives += k.flagged;
      campaign_requests += k.requests, caught_requests += k.flagged ? k.requests : 0;
    } else {
      ++e.ordinary_keys, e.false_positives += k.flagged;
      // The score at which this key would be flagged (a key with no harvest never is).
      double at = k.harvests ? k.score : -1e9;
      if (k.takes_part && k.community_harvests) at = std::max(at, k.community_score);
      ordinary_scores.push_back(at);
    }
  }
  for (auto& [name, s] : kinds) e.kinds.push_back(s);
  std::stable_sort(e.kinds.begin(), e.kinds.end(), [](const KindScore& a, const KindScore& b) { return a.campaign > b.campaign; });
  e.precision = e.flagged_keys ? double(e.true_positives) / double(e.flagged_keys) : 1.0;
  e.recall = e.campaign_keys ? double(e.true_positives) / double(e.campaign_keys) : 0.0;
  e.request_recall = campaign_requests ? double(caught_requests) / double(campaign_requests) : 0.0;
  e.false_positive_rate = e.ordinary_keys ? double(e.false_positives) / double(e.ordinary_keys) : 0.0;
  // The lowest threshold that flags at most kTargetFpr of these ordinary keys.
  std::sort(ordinary_scores.begin(), ordinary_scores.end(), std::greater<>());
  const size_t allowed = static_cast<size_t>(kTargetFpr * static_cast<double>(ordinary_scores.size()));
  e.threshold_for_target_fpr = allowed < ordinary_scores.size() ? ordinary_scores[allowed] + 1e-6 : 0.0;
  return e;
}

std::string format_evaluation(const Evaluation& e) {
  std::string out = fmt::format("{:<14} {:>6} {:>8} {:>8}  {:>9} {:>9}\n", "kind", "keys", "flagged", "rate", "requests", "caught");
  for (const auto& s : e.kinds)
    out += fmt::format("{:<14} {:>6} {:>8} {:>7.1f}%  {:>9} {:>8.1f}%  {}\n", s.kind, s.keys, s.flagged,
                       100.0 * s.flagged / std::max<int64_t>(1, s.keys), s.requests,
                       100.0 * s.flagged_requests / std::max<int64_t>(1, s.requests), s.campaign ? "recall" : "false positives");
  out += fmt::format("precision {:.3f}  recall {:.3f} of campaign keys, {:.3f} of their requests  false positives {} of {} ordinary keys ({:.2f}%)\n",
                     e.precision, e.recall, e.request_recall, e.false_positives, e.ordinary_keys, 100 * e.false_positive_rate);
  out += fmt::format("threshold for at most {:.0f}% false positives on these labels: {:.2f}\n", 100 * kTargetFpr, e.threshold_for_target_fpr);
  if (e.unlabelled_keys) out += fmt::format("{} keys of the log have no label and were left out\n", e.unlabelled_keys);
  return out;
}

nlohmann::json to_json(const Evaluation& e) {
  nlohmann::json kinds = nlohmann::json::array();
  for (const auto& s : e.kinds)
    kinds.push_back({{"kind", s.kind}, {"campaign", s.campaign}, {"keys", s.keys}, {"flagged", s.flagged},
                     {"requests", s.requests}, {"flagged_requests", s.flagged_requests}});
  return {{"kinds", kinds},           {"precision", e.precision},       {"recall", e.recall},
          {"request_recall", e.request_recall}, {"false_positive_rate", e.false_positive_rate},
          {"false_positives", e.false_positives}, {"ordinary_keys", e.ordinary_keys}, {"campaign_keys", e.campaign_keys},
          {"threshold_for_target_fpr", e.threshold_for_target_fpr}, {"unlabelled_keys", e.unlabelled_keys}};
}

}  // namespace lineage::protect
