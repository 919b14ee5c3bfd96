// `lineage monitor`: extraction-like use in a server's request log (serve/request_log.h).
//
// Distillation through an API leaves traces that single requests do not show but a key's, or a
// group of keys', whole history does (as the labs' 2025-26 public reports on distillation campaigns
// describe them): large volumes; asking for log-probabilities; the same prompt template filled with
// systematically varied content; prompts that elicit step-by-step reasoning; machine-regular timing
// around the clock; and, to stay under per-key limits, the same templates spread over many keys
// that share client addresses, user agents and their hours of activity.
//
// Method. Each logged prompt is reduced to its skeleton (the words that recur across that key's
// prompts: what a template keeps, without what it fills in), then to a MinHash signature over the
// skeleton's word 3-shingles (one-permutation hashing, Li, Owen & Zhang 2012), cut into LSH bands;
// a band bucket that holds many different prompts is a template. Keys are linked when they share such a template or a client address, and
// linked keys form clusters (union-find). Each key and each cluster gets features, a score that
// adds the evidence, and the reasons behind it; a key is flagged when its own score or its
// cluster's reaches the threshold.
//
// `simulate_traffic` writes labelled synthetic traffic (ordinary users of several kinds, campaigns
// from blatant to careful) into the same table, plus a `labels` table, so that recall and the
// false-positive rate can be measured per kind (`evaluate_monitor`).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lineage::protect {

struct MonitorOptions {
  double threshold = 1.0;      // score at which a key (or its cluster) is flagged
  int min_requests = 5;        // keys with fewer are reported but never flagged on their own
};

struct KeyFindings {
  std::string key_id;
  int64_t requests = 0, prompt_tokens = 0, completion_tokens = 0;
  double logprob_share = 0;    // requests asking for logprobs, top_logprobs or echo
  double logprob_generated = 0;  // tokens generated per such request (0: scoring only, as benchmarks do)
  double template_share = 0;   // requests whose prompt follows a template this key reuses
  double cot_share = 0;        // requests eliciting step-by-step reasoning
  double novelty = 0;          // distinct prompts / requests
  double timing_cv = 0;        // coefficient of variation of the gaps between requests (humans > 1)
  double hours_active = 0;     // share of the 24 hours of the day with requests
  int64_t keys_on_template = 0;  // most keys sharing one of this key's templates
  int64_t keys_on_client = 0;    // keys sharing one of this key's client addresses
  int cluster = -1;
  double score = 0;
  bool flagged = false;
  std::vector<std::string> reasons;
};

struct ClusterFindings {
  int id = 0;
  std::vector<std::string> keys;
  int64_t requests = 0, completion_tokens = 0;
  int64_t shared_templates = 0;   // templates used by at least 3 of its keys
  double logprob_share = 0, cot_share = 0, template_share = 0;
  double synchrony = 0;           // share of its requests in minutes when 3+ of its keys are active
  int64_t user_agents = 0, clients = 0;
  double score = 0;
  bool flagged = false;
  std::vector<std::string> reasons;
};

struct MonitorReport {
  int64_t requests = 0;
  double seconds = 0;  // reading and analysis
  std::vector<KeyFindings> keys;          // by score, highest first
  std::vector<ClusterFindings> clusters;  // clusters of 2+ keys, by score
};

MonitorReport analyze_log(const std::string& db_path, const MonitorOptions& options = {});
nlohmann::json to_json(const MonitorReport& r);

struct SimulationOptions {
  int ordinary_keys = 1000;   // split over the ordinary kinds
  int campaign_keys = 300;    // split over the campaign kinds
  int days = 7;
  uint64_t seed = 1;
};
// Writes `path` (refused if it exists): requests + labels(key_id, kind, campaign, label).
// Returns the number of requests.
int64_t simulate_traffic(const std::string& path, const SimulationOptions& options);

// With a labels table: per kind, keys, flagged keys and the rate (recall for campaign kinds,
// false-positive rate for ordinary ones).
struct KindScore {
  std::string kind;
  bool campaign = false;
  int64_t keys = 0, flagged = 0;
};
std::vector<KindScore> evaluate_monitor(const std::string& db_path, const MonitorReport& report);

}  // namespace lineage::protect
