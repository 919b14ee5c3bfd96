// `lineage monitor`: extraction campaigns in a server's request log (SQLite from `lineage serve
// --log`, or JSONL from another gateway: protect/request_record.h).
//
// A campaign is many keys that behave alike and harvest what a distiller needs. The monitor:
//  1. reads each request once into a few numbers and hashes (monitor_features.h): what it asks
//     for (log-probabilities of given text = logit-KD scoring; of generated text; long
//     completions), whose words it carries (system prompt, the user's own text, a conversation
//     that goes on), its sentences and content words;
//  2. sums each key's harvest and signs (harvested tokens per active day on prompts it had not
//     sent before, reasoning elicitation in its own words, address rotation, human interaction);
//  3. builds a key-similarity graph over the window (shared sentences and templates weighted by
//     how few keys share them, similar content profiles, shared addresses, networks and user
//     agents, keys that replace one another) and finds its communities (Louvain, Blondel et al.
//     2008);
//  4. scores keys and communities by adding evidence, each term with its reason and weight, and
//     flags those at the threshold. A community is judged by what its keys do together (their
//     harvest, coverage and signs), discounted where its members look like one product's users
//     (stable keys, conversations that go on, own addresses).
// The default threshold was set on simulated ordinary traffic of tuning seeds (kTuningSeeds) for
// a false-positive rate at most kTargetFpr; `lineage monitor --labels` measures it on any
// labelled log, and --calibrate sets the threshold from that log's ordinary keys.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lineage::protect {

constexpr double kDefaultMonitorThreshold = 4.0;
constexpr double kTargetFpr = 0.01;
constexpr const char* kTuningSeeds = "1-6";

struct Evidence {
  std::string signal;  // short name: harvest, scoring, reasoning, rotation, ...
  double weight = 0;   // added to the score (negative: evidence of ordinary use)
  std::string why;
};

// The learned key score over per-key features (monitor_learned.cpp names them), fit with
// fit_learned_model on labelled logs: a logistic regression, or gradient-boosted trees (Friedman
// 2001; Newton steps on the logistic loss, as XGBoost). `threshold` is on its logit, set at fitting
// for at most the target share of the training's ordinary keys.
struct TreeNode {
  int feature = -1;        // -1: a leaf
  double split = 0;        // go left when features[feature] < split
  int left = -1, right = -1;
  double value = 0;        // the node's own prediction (leaves: what the tree adds; inner: for explanations)
};
struct LearnedModel {
  std::string kind = "logistic_regression";  // or "boosted_trees"
  std::vector<std::string> names;
  std::vector<double> mean, scale, weights;  // logistic regression: standardisation and weights
  std::vector<std::vector<TreeNode>> trees;  // boosted trees: each a node table, root first
  double learning_rate = 0.1;                // boosted trees: each tree's share
  double bias = 0, threshold = 0;
  std::string trained_on;
  double training_fpr = 0, training_recall = 0;
  double logit(const std::vector<double>& features) const;
  // Each feature's contribution (weight × standardised value), largest first.
  std::vector<Evidence> explain(const std::vector<double>& features) const;
  nlohmann::json to_json() const;
  static LearnedModel from_json(const nlohmann::json& j, const std::string& where);
};
// The model Lineage ships: a logistic regression fit on both development logs of
// ../shared/data/monitor-dev (scripts/fit_monitor.sh makes it; monitor_shipped_model.cpp holds it).
const LearnedModel& shipped_monitor_model();

struct MonitorOptions {
  double threshold = kDefaultMonitorThreshold;  // score at which a key or community is flagged
  // "rules": the evidence rules and communities (threshold above); "learned": the learned key
  // score (model, or the shipped one when null) at the model's own threshold, for each key and for
  // each community's requests taken together (members within a margin of it flagged with their
  // community); "combined": the
  // learned score, and the rules' flags that rest on what the development logs cannot show:
  // log-probability harvest (logit KD) and transcripts this server never wrote or wrote for
  // another key (logs with response_sha256).
  std::string scorer = "rules";
  std::shared_ptr<const LearnedModel> model;
  int min_requests = 5;                         // keys with fewer are reported but never flagged
  double window_days = 0;                       // analyse the last N days of the log (0: all of it)
  std::vector<std::string> allow_keys;          // known keys: never flagged
  std::vector<std::string> allow_texts;         // known templates / system prompts: not a link between keys
};


struct KeyFindings {
  std::string key_id;
  int64_t requests = 0, prompt_tokens = 0, completion_tokens = 0;
  double active_days = 0, lifetime_days = 0;
  double generated_per_day = 0;   // completion tokens per active day on single-turn prompts it had not sent before
  double scored_per_day = 0;      // tokens of given text scored (echo + logprobs, no generation) per active day, new text only
  double logprob_generated_per_day = 0;  // completion tokens returned with log-probabilities per active day, new prompts
  double reasoning_share = 0;     // requests whose own words elicit step-by-step reasoning
  double follow_up_share = 0;     // requests that continue a conversation
  double interleaving = 0;        // of those, the share continuing another conversation than the previous request's (many people)
  double rotation = 0;            // distinct client addresses / requests
  double novelty = 0;             // distinct prompts / requests
  double hot_share = 0;           // requests at temperature >= 0.6 (or not given) with >= 256 tokens allowed
  int hours_of_day = 0;           // of the 24 hours of the day (UTC), those it was ever active in
  // Where the log records what the server sent (response_sha256), of the follow-ups that could be
  // checked: the share re-sending an assistant turn this server never wrote (distinct ones), and
  // the share re-sending one it wrote for another key (-1: not checked).
  double foreign_answers = -1, handed_over = -1;
  int64_t clients = 0, networks = 0, agents = 0;
  bool harvests = false;          // some evidence of harvest (tokens taken): nothing is flagged without it
  int community = -1;
  double score = 0;               // its own evidence
  double community_score = 0;     // its community's (0 when alone)
  bool takes_part = false;        // shows one of the signs its community was flagged for
  bool community_flagged = false, community_harvests = false;
  // flagged: it harvests and its own score reaches the threshold, or its community is flagged
  // and it takes part
  bool flagged = false;
  std::vector<Evidence> evidence;
  std::vector<int32_t> timeline;  // requests per bucket of MonitorReport::bucket_ms from its first_ms
};

struct CommunityLink {
  std::string a, b;  // key ids
  double weight = 0;
};

struct CommunityFindings {
  int id = 0;
  std::vector<std::string> keys;
  int64_t requests = 0, completion_tokens = 0;
  double generated_per_day = 0, scored_per_day = 0;  // together, per day of its span
  double generated_per_key_day = 0, scored_per_key_day = 0, logprob_generated_per_key_day = 0;
  double reasoning_share = 0, follow_up_share = 0, rotation = 0;
  double foreign_answers = 0, handed_over = 0;  // as KeyFindings', over its keys' checked follow-ups
  double churn = 0;         // keys active under half the community's span, as a share
  double template_share = 0;  // requests carrying a sentence of its own (sent by 3+ of its keys, few others)
  double cohesion = 0;      // share of its members' edge weight that stays inside it
  double score = 0;  // learned scorers: the model's score of its keys' requests taken as one key's
  bool harvests = false;
  bool flagged = false;
  std::vector<Evidence> evidence;
  std::vector<CommunityLink> links;  // the similarity graph's edges between its keys
};

struct MonitorReport {
  int64_t requests = 0;
  double seconds = 0;  // reading and analysis
  double threshold = 0;
  int64_t first_ms = 0, last_ms = 0, bucket_ms = 0;  // the log's span, and the keys' timeline buckets
  std::vector<KeyFindings> keys;                // flagged first, then by score
  std::vector<CommunityFindings> communities;   // communities of 2+ keys, by score
};

MonitorReport analyze_log(const std::string& log_path, const MonitorOptions& options = {});
nlohmann::json to_json(const MonitorReport& r);
nlohmann::json evidence_json(const std::vector<Evidence>& ev);  // [{signal, weight, why}]

// A log that grows (a live gateway's JSONL, or lineage serve's SQLite log): each poll reads what
// was appended since the last (complete lines, new rows), and report() analyses everything read
// so far (the last window_days of it, when set: older requests are dropped from memory).
class LogFollower {
 public:
  LogFollower(std::string path, MonitorOptions options);
  ~LogFollower();
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;
  // Requests read by this call. A log now shorter than what was read (rotated or truncated) is
  // read again from its start, and restarted() says so.
  int64_t poll();
  bool restarted() const;
  MonitorReport report() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// The page an owner reads (lineage monitor --html): flagged communities drawn as graphs, each
// flagged key's evidence and timeline, and the ordinary keys nearest the threshold. Self-contained:
// no script, nothing fetched.
std::string monitor_html(const MonitorReport& report, const std::string& title, const std::string& threshold_note);

// Labels (JSON: {"key": {"label": "campaign"|"ordinary", "kind": "...", "campaign": "..."}}).
struct KeyLabel {
  bool campaign = false;
  std::string kind, campaign_id;
};
std::map<std::string, KeyLabel> read_labels(const std::string& path);

struct KindScore {
  std::string kind;
  bool campaign = false;
  int64_t keys = 0, flagged = 0, requests = 0, flagged_requests = 0;
};
struct Evaluation {
  std::vector<KindScore> kinds;  // campaign kinds first
  int64_t flagged_keys = 0, true_positives = 0, campaign_keys = 0, ordinary_keys = 0, false_positives = 0;
  double precision = 0, recall = 0, request_recall = 0, false_positive_rate = 0;
  double threshold_for_target_fpr = 0;  // the lowest threshold whose FPR on these ordinary keys is <= kTargetFpr
  int64_t unlabelled_keys = 0;
};
Evaluation evaluate_monitor(const MonitorReport& report, const std::map<std::string, KeyLabel>& labels);

// Per-key features of a log (the learned score's inputs), labelled where `labels` names the key.
struct FeatureRow {
  std::string key_id, kind, source;
  int64_t requests = 0;
  bool labelled = false, campaign = false;
  std::vector<double> features;
  nlohmann::json to_json() const;
  static FeatureRow from_json(const nlohmann::json& j, const std::string& where);
};
std::vector<FeatureRow> key_feature_rows(const std::string& log_path, const MonitorOptions& options,
                                         const std::map<std::string, KeyLabel>& labels = {});
struct FitOptions {
  std::string kind = "boosted_trees";  // or "logistic_regression"
  int iterations = 3000;               // logistic regression: gradient steps
  // target_fpr: the share of the training's ordinary keys the threshold may leave above it. 0 (the
  // default): above every one of them. At 1% a model fit on one development log flagged 3 of 30 IDE
  // agents (or 2 of 33 power users) of the other; above every one, none (closing note of issue 29).
  double learning_rate = 0.5, l2 = 0.01, target_fpr = 0;
  int trees = 200, depth = 3;          // boosted trees
  double shrinkage = 0.1, min_hessian = 1.0;
  int64_t min_requests = 5;  // keys with fewer are never flagged: not fit on either
  std::string trained_on;
};
LearnedModel fit_learned_model(const std::vector<FeatureRow>& rows, const FitOptions& options = {});
std::string format_evaluation(const Evaluation& e);
nlohmann::json to_json(const Evaluation& e);

}  // namespace lineage::protect
