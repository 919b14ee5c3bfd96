// Prometheus text format for `lineage serve` (see metrics.h).
#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace lineage::serve {

std::string prometheus_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Histogram::observe(double v) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);  // first bound >= v: "le"
  if (it != bounds_.end()) ++counts_[static_cast<size_t>(it - bounds_.begin())];
  ++count_;
  sum_ += v;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cum);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name, count_);
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      per_token_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
      duration_({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}) {}

void Metrics::request(const std::string& endpoint, int status, const std::string& key, int64_t prompt_tokens,
                      int64_t completion_tokens, double seconds, double ttft_s, double per_token_s) {
  std::lock_guard lock(mu_);
  ++requests_[{endpoint, status, key}];
  auto& t = tokens_[key];
  t[0] += static_cast<uint64_t>(std::max<int64_t>(0, prompt_tokens));
  t[1] += static_cast<uint64_t>(std::max<int64_t>(0, completion_tokens));
  duration_.observe(seconds);
  if (ttft_s >= 0) ttft_.observe(ttft_s);
  if (per_token_s >= 0) per_token_.observe(per_token_s);
}

void Metrics::rejected(const std::string& reason) {
  std::lock_guard lock(mu_);
  ++rejected_[reason];
}

std::string Metrics::render(const EngineGauges& g) const {
  std::lock_guard lock(mu_);
  std::string out;
  out += "# HELP lineage_requests_total Requests answered, by endpoint, HTTP status and API key id.\n"
         "# TYPE lineage_requests_total counter\n";
  for (const auto& [k, n] : requests_)
    out += fmt::format("lineage_requests_total{{endpoint=\"{}\",status=\"{}\",key=\"{}\"}} {}\n",
                       prometheus_label(std::get<0>(k)), std::get<1>(k), prometheus_label(std::get<2>(k)), n);
  out += "# HELP lineage_prompt_tokens_total Prompt tokens processed, by API key id.\n"
         "# TYPE lineage_prompt_tokens_total counter\n";
  for (const auto& [key, t] : tokens_) out += fmt::format("lineage_prompt_tokens_total{{key=\"{}\"}} {}\n", prometheus_label(key), t[0]);
  out += "# HELP lineage_completion_tokens_total Tokens generated, by API key id.\n"
         "# TYPE lineage_completion_tokens_total counter\n";
  for (const auto& [key, t] : tokens_)
    out += fmt::format("lineage_completion_tokens_total{{key=\"{}\"}} {}\n", prometheus_label(key), t[1]);
  out += "# HELP lineage_rejected_total Requests refused before any work, by reason.\n"
         "# TYPE lineage_rejected_total counter\n";
  for (const auto& [reason, n] : rejected_)
    out += fmt::format("lineage_rejected_total{{reason=\"{}\"}} {}\n", prometheus_label(reason), n);
  out += fmt::format("# HELP lineage_queue_depth Requests waiting for a decoding slot.\n# TYPE lineage_queue_depth gauge\n"
                     "lineage_queue_depth {}\n", g.queue_depth);
  out += fmt::format("# HELP lineage_batch_active Sequences being decoded.\n# TYPE lineage_batch_active gauge\n"
                     "lineage_batch_active {}\n", g.active);
  out += fmt::format("# HELP lineage_batch_occupancy Share of the decoding slots in use.\n"
                     "# TYPE lineage_batch_occupancy gauge\nlineage_batch_occupancy {}\n",
                     g.max_batch > 0 ? static_cast<double>(g.active) / static_cast<double>(g.max_batch) : 0.0);
  if (g.draft_proposed >= 0)
    out += fmt::format("# HELP lineage_draft_tokens_total Speculative decoding: tokens the draft proposed, and those kept.\n"
                       "# TYPE lineage_draft_tokens_total counter\nlineage_draft_tokens_total{{outcome=\"proposed\"}} {}\n"
                       "lineage_draft_tokens_total{{outcome=\"accepted\"}} {}\n",
                       g.draft_proposed, g.draft_accepted);
  ttft_.render(out, "lineage_time_to_first_token_seconds", "Time from a request's arrival to its first generated token.");
  per_token_.render(out, "lineage_time_per_output_token_seconds", "Mean time between generated tokens, per request.");
  duration_.render(out, "lineage_request_duration_seconds", "Time from a request's arrival to its last byte.");
  return out;
}

}  // namespace lineage::serve
