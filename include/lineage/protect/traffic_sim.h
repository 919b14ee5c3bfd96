// Labelled synthetic API traffic for testing `lineage monitor`: ordinary users of eight kinds and
// extraction campaigns of five, written as a request log (SQLite, or JSONL when the path ends in
// .jsonl) and a labels file (key -> label, kind, campaign) that `lineage monitor --labels` reads.
//
// Every behaviour is drawn from a wide range per run, per campaign and per key (volumes, reasoning
// and cover-traffic shares, address and agent rotation, key lifetimes, paraphrasing), so that a
// detector tuned on some seeds can be scored on others it never saw. The kinds follow the public
// descriptions of distillation campaigns (the labs' 2025-26 reports: "hydra" clusters of proxied
// keys mixing reasoning elicitation into cover traffic, logit harvesting through echo +
// top_logprobs, sequence-level harvests, resellers, careful imitators) and of ordinary API use
// (chat users, students, IDE agents with reasoning system prompts, calibration studies that ask
// for log-probabilities of generated text, evaluation harnesses, enterprise integrations).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace lineage::protect {

struct SimulationOptions {
  int ordinary_keys = 1000;  // split over the ordinary kinds (mix drawn from the seed)
  int campaign_keys = 300;   // split over the campaign kinds
  int days = 7;
  uint64_t seed = 1;
  std::string labels_path;   // default: the log's path + ".labels.json"
  // Prompts from real text (a folder laid out as ../shared/data: HellaSwag contexts by activity
  // as the topics, ARC and PIQA questions, WikiText paragraphs) instead of the built-in phrases.
  std::string text_dir;
};

struct SimulationSummary {
  int64_t requests = 0, keys = 0;
  std::string labels_path;
};

// Writes a new log at `path` (refused if it exists) and its labels file.
SimulationSummary simulate_traffic(const std::string& path, const SimulationOptions& options);

}  // namespace lineage::protect
