// The monitor's stages, between reading (monitor_features.h) and the report (monitor.cpp):
// per-key statistics (monitor_keys.cpp), the key-similarity graph and its communities
// (monitor_graph.cpp), and the evidence that scores keys and communities (monitor_score.cpp).
#pragma once

#include <bitset>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "lineage/protect/monitor.h"
#include "monitor_features.h"

namespace lineage::protect::monitor {

class Interner {
 public:
  uint32_t operator()(const std::string& s) {
    auto [it, fresh] = ids_.emplace(s, static_cast<uint32_t>(names_.size()));
    if (fresh) names_.push_back(s);
    return it->second;
  }
  const std::string& name(uint32_t id) const { return names_[id]; }
  size_t size() const { return names_.size(); }

 private:
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::string> names_;
};

constexpr size_t kCoverageBits = 4096;
constexpr size_t kProfileWords = 600;  // distinct content words kept per key

// Everything read from the log.
struct Corpus {
  std::vector<Request> requests;  // sorted by key, then time
  std::vector<uint64_t> sentences;
  Interner keys, clients, networks, agents;
  std::vector<std::unordered_map<uint64_t, uint32_t>> profile;  // per key: content word -> count
  std::vector<std::bitset<kCoverageBits>> coverage;             // per key: content words seen, hashed
  std::vector<int64_t> words_seen;                              // per key: content words read, repeats included
  std::vector<std::pair<size_t, size_t>> range;                 // per key: its requests
  std::unordered_map<uint64_t, uint32_t> sentence_keys;         // sentence -> distinct keys, when 2+ (boilerplate when many)
  uint32_t boilerplate_keys = 0;                                // keys at which a shared sentence is boilerplate
  // What the server sent, where the log records it (response_sha256): answer digest -> the key it
  // was sent to (first). Follow-ups from an hour after the first such record on are checked.
  std::unordered_map<uint64_t, uint32_t> served;
  bool answers_logged = false;
  int64_t answers_from_ms = 0;
};

// Reads the log (window and allowlists applied), marks own-words reasoning, groups by key.
Corpus read_corpus(const std::string& path, const MonitorOptions& options);
// The same in two steps, for a log that grows (--follow): add records as they come, then finish
// (window, grouping by key, shared sentences) before each analysis; finishing again is fine.
class CorpusReader {
 public:
  explicit CorpusReader(const MonitorOptions& options);
  // `body`: the request body already parsed by the reader (request_reader_internal.h), or null.
  void add(Corpus& c, RequestRecord&& rec, const simdjson::dom::element* body, const std::string& path);

 private:
  std::unordered_set<std::string> allow_keys_;
  std::unordered_set<uint64_t> allowed_;
  std::vector<uint64_t> words_;
};
void finish_corpus(Corpus& c, const MonitorOptions& options);
// Keys, communities and their evidence for what has been read (analyze_log after reading).
MonitorReport analyze_corpus(const Corpus& c, const MonitorOptions& options, double read_seconds = 0);

struct KeyStats {
  int64_t requests = 0, prompt_tokens = 0, completion_tokens = 0;
  int64_t first_ms = 0, last_ms = 0;
  double active_days = 0;
  double generated = 0, scored = 0, logprob_generated = 0;  // new-prompt tokens (totals)
  double reasoning = 0, reasoning_any = 0, follow_up = 0, hot = 0;
  double interleaved = 0;  // follow-ups continuing another conversation than the key's previous request's
  int64_t distinct_content = 0, clients = 0, networks = 0, agents = 0;
  uint32_t hours_of_day = 0;    // bit h: a request in hour h (UTC) of some day
  // Follow-ups whose last assistant turn could be checked against what the server sent: never
  // sent (distinct answers), and sent to another key.
  double answers_checked = 0, answers_foreign = 0, answers_elsewhere = 0;
};

// Who was sent the last assistant turn request r re-sends: the key's id, kNeverSent when the log
// records no such answer, kUnchecked when r cannot be checked (no digests logged, no assistant
// turn, or within the first hour of digests).
constexpr int64_t kUnchecked = -2, kNeverSent = -1;
int64_t answer_sent_to(const Corpus& c, const Request& r);
std::vector<KeyStats> key_stats(const Corpus& c);
// The same for any set of requests (a unit: one key's, or a community's keys' merged in time
// order), and the indices of one key's requests.
KeyStats unit_stats(const Corpus& c, std::span<const size_t> requests);
std::vector<size_t> key_requests(const Corpus& c, uint32_t key);

struct Edge {
  uint32_t to;
  float weight;
};
struct Graph {
  std::vector<std::vector<Edge>> adj;  // symmetric, no self loops
  std::vector<double> loops;           // per node: twice the weight inside it (aggregated levels; empty: none)
  double total_weight = 0;             // of every edge, inside aggregated nodes too
};
Graph build_graph(const Corpus& c);
// Community of each node (Louvain: local moves, then aggregation, until nothing improves).
std::vector<int> louvain(const Graph& g, uint64_t seed = 1);

// Per community: the share of its requests that carry a sentence sent by 3+ of its keys and
// (nearly) nobody outside it: a template of its own.
std::unordered_map<int, double> own_template_shares(const Corpus& c, const std::vector<int>& community);

// The learned key score (monitor_learned.cpp): per-key features, a logistic regression over them.
const std::vector<std::string>& key_feature_names();
std::vector<double> key_features(const Corpus& c, uint32_t key, const KeyStats& s);
// The same features for any unit of requests, with the distinct content words it read (bits set
// in a coverage bitmap) and all the content words it read.
std::vector<double> unit_features(const Corpus& c, std::span<const size_t> requests, const KeyStats& s, size_t coverage_bits,
                                  double words);

// Evidence for one key, and for one community of keys.
void score_key(const KeyStats& s, KeyFindings& f);
void score_community(const std::vector<uint32_t>& members, const std::vector<KeyStats>& stats, const Graph& g,
                     const std::vector<int>& community, CommunityFindings& out);
// Whether a member of a flagged community shows, itself, one of the signs the community was
// flagged for.
bool takes_part(const KeyStats& s, const CommunityFindings& c);

}  // namespace lineage::protect::monitor
