// Labelled synthetic traffic for `lineage monitor --simulate`. See include/lineage/protect/traffic_sim.h.
// Writing (SQLite or JSONL, and the labels file) is here; who sends what is in traffic_kinds.cpp.
#include "lineage/protect/traffic_sim.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/protect/request_record.h"
#include "traffic_kinds.h"

namespace lineage::protect {

namespace {

class SqliteSink : public sim::Sink {
 public:
  explicit SqliteSink(const std::string& path) : writer_(path, /*bulk=*/true) {}
  void write(const RequestRecord& r) override { writer_.write(r); }
  void close() { writer_.commit(); }

 private:
  RequestLogWriter writer_;
};

class JsonlSink : public sim::Sink {
 public:
  explicit JsonlSink(const std::string& path) : out_(path) {
    if (!out_) fail("cannot create '{}'", path);
  }
  void write(const RequestRecord& r) override {
    nlohmann::json j = {{"time", iso_time_ms(r.unix_ms)},  {"key", r.key},       {"client", r.client},
                        {"user_agent", r.user_agent}, {"endpoint", r.endpoint}, {"model", r.model},
                        {"status", r.status},       {"prompt_tokens", r.prompt_tokens}, {"completion_tokens", r.completion_tokens},
                        {"body", nlohmann::json::parse(r.body)}};
    out_ << j.dump() << '\n';
  }

 private:
  std::ofstream out_;
};

}  // namespace

SimulationSummary simulate_traffic(const std::string& path, const SimulationOptions& o) {
  if (std::filesystem::exists(path)) fail("'{}' exists: the simulation writes a new log", path);
  if (o.ordinary_keys < 1 || o.campaign_keys < 0 || o.days < 2)
    fail("simulation: --keys must be at least 1, --campaign-keys at least 0 and --days at least 2");
  const bool jsonl = path.size() > 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  auto real = o.text_dir.empty() ? nullptr : sim::load_real_text(o.text_dir);
  std::unique_ptr<sim::Sink> sink;
  if (jsonl) sink = std::make_unique<JsonlSink>(path);
  else sink = std::make_unique<SqliteSink>(path);
  sim::World world(*sink, o.seed, o.days, real);
  world.run(o.ordinary_keys, o.campaign_keys);
  if (!jsonl) static_cast<SqliteSink*>(sink.get())->close();
  sink.reset();
  SimulationSummary s;
  s.requests = world.requests();
  s.keys = static_cast<int64_t>(world.labels().size());
  s.labels_path = o.labels_path.empty() ? path + ".labels.json" : o.labels_path;
  write_file_atomic(s.labels_path, world.labels().dump(1) + "\n");
  return s;
}

}  // namespace lineage::protect
