// `lineage monitor`: read, per-key statistics, graph and communities, evidence, report.
// See include/lineage/protect/monitor.h for the method.
#include "lineage/protect/monitor.h"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "monitor_internal.h"

namespace lineage::protect {

namespace {

using namespace monitor;

KeyFindings key_findings(const Corpus& c, uint32_t k, const KeyStats& s) {
  KeyFindings f;
  f.key_id = c.keys.name(k);
  f.requests = s.requests;
  f.prompt_tokens = s.prompt_tokens;
  f.completion_tokens = s.completion_tokens;
  f.active_days = s.active_days;
  f.lifetime_days = static_cast<double>(s.last_ms - s.first_ms) / 86400000.0;
  f.clients = s.clients;
  f.networks = s.networks;
  f.agents = s.agents;
  score_key(s, f);
  return f;
}

// The rules' evidence of log-probability harvest (echo scoring, answers with log-probabilities).
bool logit_harvest(const std::vector<Evidence>& ev) {
  for (const auto& e : ev)
    if ((e.signal == "scoring" || e.signal == "logprob_harvest") && e.weight >= 1) return true;
  return false;
}

}  // namespace

MonitorReport analyze_log(const std::string& log_path, const MonitorOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const Corpus corpus = read_corpus(log_path, options);
  const auto stats = key_stats(corpus);
  const Graph graph = build_graph(corpus);
  const std::vector<int> community = louvain(graph);

  MonitorReport report;
  report.requests = static_cast<int64_t>(corpus.requests.size());
  report.threshold = options.threshold;
  std::vector<KeyFindings> keys(corpus.keys.size());
  for (uint32_t k = 0; k < corpus.keys.size(); ++k)
    if (stats[k].requests > 0) keys[k] = key_findings(corpus, k, stats[k]);

  const auto templates = own_template_shares(corpus, community);
  std::unordered_map<int, std::vector<uint32_t>> members;
  for (uint32_t k = 0; k < corpus.keys.size(); ++k)
    if (stats[k].requests > 0) members[community[k]].push_back(k);
  for (auto& [id, ks] : members) {
    if (ks.size() < 2) continue;
    CommunityFindings c;
    c.id = static_cast<int>(report.communities.size());
    if (auto it = templates.find(id); it != templates.end()) c.template_share = it->second;
    score_community(ks, stats, graph, community, c);
    c.flagged = c.harvests && c.score >= options.threshold;
    for (uint32_t k : ks) {
      c.keys.push_back(keys[k].key_id);
      keys[k].community = c.id;
      keys[k].community_score = c.score;
      keys[k].takes_part = takes_part(stats[k], c);
      keys[k].community_flagged = c.flagged;
      keys[k].community_harvests = c.harvests;
    }
    report.communities.push_back(std::move(c));
  }
  if (options.scorer != "rules" && options.scorer != "learned" && options.scorer != "combined")
    fail("unknown monitor scorer '{}': expected rules, learned or combined", options.scorer);
  for (auto& f : keys)
    if (f.requests > 0)
      f.flagged = f.requests >= options.min_requests &&
                  ((f.harvests && f.score >= options.threshold) || (f.takes_part && f.community_flagged));
  if (options.scorer != "rules") {
    // The learned key score: each key by its own features, at the model's threshold. "combined"
    // also keeps the rules' flags that rest on log-probability harvest (echo scoring, answers with
    // log-probabilities): logit distillation through the API, which the development logs the
    // model was fit on hardly show.
    const LearnedModel& model = options.model ? *options.model : shipped_monitor_model();
    report.threshold = model.threshold;
    for (uint32_t k = 0; k < corpus.keys.size(); ++k) {
      auto& f = keys[k];
      if (stats[k].requests == 0) continue;
      // Communities are not sorted yet: a key's community is report.communities[f.community].
      const bool rules_logit = f.flagged && (logit_harvest(f.evidence) ||
                                             (f.takes_part && f.community >= 0 &&
                                              logit_harvest(report.communities[static_cast<size_t>(f.community)].evidence)));
      const auto x = key_features(corpus, k, stats[k]);
      f.score = model.logit(x);
      auto rules_evidence = std::move(f.evidence);
      f.evidence = model.explain(x);
      f.flagged = f.requests >= options.min_requests && f.score >= report.threshold;
      if (options.scorer == "combined" && rules_logit) {
        f.flagged = true;
        for (auto& e : rules_evidence) e.signal = "rules:" + e.signal;
        f.evidence.insert(f.evidence.begin(), rules_evidence.begin(), rules_evidence.end());
      }
      f.takes_part = false;
    }
    for (auto& c : report.communities) c.flagged = false;
  }
  for (auto& f : keys)
    if (f.requests > 0) report.keys.push_back(std::move(f));
  std::sort(report.keys.begin(), report.keys.end(), [](const KeyFindings& a, const KeyFindings& b) {
    const double sa = std::max(a.score, a.takes_part ? a.community_score : 0.0), sb = std::max(b.score, b.takes_part ? b.community_score : 0.0);
    return a.flagged != b.flagged ? a.flagged : sa != sb ? sa > sb : a.key_id < b.key_id;
  });
  std::sort(report.communities.begin(), report.communities.end(),
            [](const CommunityFindings& a, const CommunityFindings& b) { return a.score > b.score; });
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

namespace {

nlohmann::json evidence_json(const std::vector<Evidence>& ev) {
  auto out = nlohmann::json::array();
  for (const auto& e : ev) out.push_back({{"signal", e.signal}, {"weight", e.weight}, {"why", e.why}});
  return out;
}

}  // namespace

nlohmann::json to_json(const MonitorReport& r) {
  nlohmann::json keys = nlohmann::json::array(), communities = nlohmann::json::array();
  for (const auto& f : r.keys)
    keys.push_back({{"key_id", f.key_id},
                    {"flagged", f.flagged},
                    {"score", f.score},
                    {"community", f.community},
                    {"community_score", f.community_score},
                    {"takes_part", f.takes_part},
                    {"community_flagged", f.community_flagged},
                    {"community_harvests", f.community_harvests},
                    {"requests", f.requests},
                    {"prompt_tokens", f.prompt_tokens},
                    {"completion_tokens", f.completion_tokens},
                    {"active_days", f.active_days},
                    {"lifetime_days", f.lifetime_days},
                    {"generated_tokens_per_day", f.generated_per_day},
                    {"scored_tokens_per_day", f.scored_per_day},
                    {"logprob_generated_tokens_per_day", f.logprob_generated_per_day},
                    {"reasoning_share", f.reasoning_share},
                    {"follow_up_share", f.follow_up_share},
                    {"interleaving", f.interleaving},
                    {"harvests", f.harvests},
                    {"rotation", f.rotation},
                    {"novelty", f.novelty},
                    {"hot_share", f.hot_share},
                    {"hours_of_day", f.hours_of_day},
                    {"clients", f.clients},
                    {"networks", f.networks},
                    {"user_agents", f.agents},
                    {"evidence", evidence_json(f.evidence)}});
  for (const auto& c : r.communities)
    communities.push_back({{"id", c.id},
                           {"flagged", c.flagged},
                           {"score", c.score},
                           {"keys", c.keys},
                           {"requests", c.requests},
                           {"completion_tokens", c.completion_tokens},
                           {"generated_tokens_per_day", c.generated_per_day},
                           {"generated_tokens_per_key_day", c.generated_per_key_day},
                           {"scored_tokens_per_key_day", c.scored_per_key_day},
                           {"scored_tokens_per_day", c.scored_per_day},
                           {"reasoning_share", c.reasoning_share},
                           {"follow_up_share", c.follow_up_share},
                           {"rotation", c.rotation},
                           {"churn", c.churn},
                           {"cohesion", c.cohesion},
                           {"template_share", c.template_share},
                           {"evidence", evidence_json(c.evidence)}});
  return {{"requests", r.requests}, {"seconds", r.seconds}, {"threshold", r.threshold}, {"keys", keys}, {"communities", communities}};
}

nlohmann::json FeatureRow::to_json() const {
  nlohmann::json j = {{"key", key_id}, {"requests", requests}, {"features", features}};
  if (labelled) j["label"] = campaign ? "campaign" : "ordinary", j["kind"] = kind;
  if (!source.empty()) j["source"] = source;
  return j;
}

FeatureRow FeatureRow::from_json(const nlohmann::json& j, const std::string& where) {
  FeatureRow r;
  try {
    r.key_id = j.at("key").get<std::string>();
    r.requests = j.at("requests").get<int64_t>();
    r.features = j.at("features").get<std::vector<double>>();
    if (j.contains("label")) {
      const std::string label = j["label"].get<std::string>();
      if (label != "campaign" && label != "ordinary") fail("{}: label '{}', expected campaign or ordinary", where, label);
      r.labelled = true;
      r.campaign = label == "campaign";
      r.kind = j.value("kind", label);
    }
    r.source = j.value("source", std::string());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a feature row {{\"key\", \"requests\", \"features\": [...], \"label\"}}: {}", where, e.what());
  }
  if (r.features.size() != key_feature_names().size())
    fail("{}: {} features, expected {} (rows written by another lineage: write them again with --features)", where,
         r.features.size(), key_feature_names().size());
  return r;
}

std::vector<FeatureRow> key_feature_rows(const std::string& log_path, const MonitorOptions& options,
                                         const std::map<std::string, KeyLabel>& labels) {
  const Corpus corpus = read_corpus(log_path, options);
  const auto stats = key_stats(corpus);
  std::vector<FeatureRow> out;
  for (uint32_t k = 0; k < corpus.keys.size(); ++k) {
    if (stats[k].requests == 0) continue;
    FeatureRow r;
    r.key_id = corpus.keys.name(k);
    r.requests = stats[k].requests;
    r.features = key_features(corpus, k, stats[k]);
    r.source = log_path;
    if (auto it = labels.find(r.key_id); it != labels.end()) {
      r.labelled = true;
      r.campaign = it->second.campaign;
      r.kind = it->second.kind;
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace lineage::protect
