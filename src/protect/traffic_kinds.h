// Who sends what in the traffic simulator: the ordinary kinds and the campaign kinds, each with
// its behaviour drawn from wide ranges (see include/lineage/protect/traffic_sim.h). Private to protect.
#pragma once

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "lineage/protect/request_record.h"
#include "sim_content.h"

namespace lineage::protect::sim {

class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(const RequestRecord& r) = 0;
};

class World {
 public:
  World(Sink& sink, uint64_t seed, int days, std::shared_ptr<const RealText> real = nullptr);
  void run(int ordinary_keys, int campaign_keys);
  int64_t requests() const { return requests_; }
  const nlohmann::json& labels() const { return labels_; }

 private:
  using json = nlohmann::json;
  struct Turn {
    std::string user;
    int64_t completion = 0;
  };
  // A human's request times: sessions of a few requests in the waking hours of time zone `tz`.
  std::vector<int64_t> human_times(int n, int first_day, int last_day, int tz);
  // Evenly paced times (gap seconds, jittered) from `from`, for n requests.
  std::vector<int64_t> paced_times(int n, int64_t from, double gap_s, double jitter);

  void label(const std::string& key, const std::string& kind, const std::string& campaign);
  void emit(const std::string& key, int64_t ms, const std::string& client, const std::string& agent, json body,
            int64_t completion_tokens);
  json chat(const std::vector<Turn>& turns, const std::string& system, int max_tokens, double temperature);

  // Ordinary kinds.
  void casual(const std::string& key, bool student);
  void power(const std::string& key);
  void ide_product(int first, int users);
  void calibration(const std::string& key);
  void eval_harness(int first, int keys);
  void enterprise(int first, int keys);
  // Campaign kinds.
  void hydra(int no, int keys);
  void logit_kd(int no, int keys);
  void seq_kd(int no, int keys);
  void reseller(int no, int keys);
  void careful(int no, int keys);

  std::string residential();
  std::string datacenter(int subnet);
  std::string browser();
  std::string sdk();
  int uniform(int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng_); }
  double real(double a = 0, double b = 1) { return std::uniform_real_distribution<double>(a, b)(rng_); }
  double expo(double mean) { return std::exponential_distribution<double>(1.0 / mean)(rng_); }
  bool chance(double p) { return real() < p; }
  size_t domain() { return static_cast<size_t>(uniform(0, static_cast<int>(content_.domains()) - 1)); }

  std::mt19937_64 rng_;
  Content content_;
  Sink& sink_;
  int days_;
  int64_t requests_ = 0;
  json labels_ = json::object();
};

}  // namespace lineage::protect::sim
