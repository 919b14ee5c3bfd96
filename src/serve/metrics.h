// Private to serve: what `GET /metrics` reports, in the Prometheus text exposition format (0.0.4),
// as llama-server's and vLLM's /metrics do: requests by endpoint, status and key; prompt and
// completion tokens by key; requests refused by reason; queue depth and batch occupancy; and
// histograms of time to first token, time per output token and request duration.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace lineage::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}
  void observe(double v);
  // The _bucket (cumulative, le="+Inf" last), _sum and _count lines of metric `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct EngineGauges {
  int64_t queue_depth = 0;  // requests waiting for a slot
  int64_t active = 0;       // sequences being decoded
  int64_t max_batch = 0;    // slots
  int64_t draft_proposed = -1, draft_accepted = -1;  // speculative decoding's tokens; -1: no draft
};

class Metrics {
 public:
  Metrics();
  // One finished request. ttft_s / per_token_s < 0: not measured (no token generated).
  void request(const std::string& endpoint, int status, const std::string& key, int64_t prompt_tokens,
               int64_t completion_tokens, double seconds, double ttft_s, double per_token_s);
  void rejected(const std::string& reason);  // e.g. "quota", "rate_limit", "overloaded", "body_too_large"
  std::string render(const EngineGauges& g) const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, int, std::string>, uint64_t> requests_;  // endpoint, status, key
  std::map<std::string, std::array<uint64_t, 2>> tokens_;                    // key -> prompt, completion
  std::map<std::string, uint64_t> rejected_;
  Histogram ttft_, per_token_, duration_;
};

// A Prometheus label value: backslash, double quote and newline escaped.
std::string prometheus_label(const std::string& v);

}  // namespace lineage::serve
