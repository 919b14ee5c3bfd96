// Labelled synthetic traffic for `lineage monitor --simulate`. See include/lineage/protect/traffic_sim.h.
// Writing (SQLite or JSONL, and the labels file) is here; who sends what is in traffic_kinds.cpp.
#include "lineage/protect/traffic_sim.h"

#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/protect/request_record.h"
#include "traffic_kinds.h"

namespace lineage::protect {

namespace {

std::string iso(int64_t ms) {
  std::time_t s = ms / 1000;
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(ms % 1000));
}

class SqliteSink : public sim::Sink {
 public:
  explicit SqliteSink(const std::string& path) : path_(path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
      fail("cannot create '{}': {}", path, db_ ? sqlite3_errmsg(db_) : "out of memory");
    exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;");
    exec(kRequestLogSchema);
    exec("BEGIN;");
    const char* sql =
        "INSERT INTO requests (time, unix_ms, key_id, client, user_agent, endpoint, model, status, prompt_tokens,"
        " completion_tokens, prompt_sha256, params, prompt, latency_ms, body) VALUES (?,?,?,?,?,?,?,?,?,?,'',NULL,NULL,0,?)";
    if (sqlite3_prepare_v2(db_, sql, -1, &ins_, nullptr) != SQLITE_OK) fail("simulated log '{}': {}", path_, sqlite3_errmsg(db_));
  }
  ~SqliteSink() override {
    sqlite3_finalize(ins_);
    sqlite3_close(db_);
  }
  void write(const RequestRecord& r) override {
    sqlite3_reset(ins_);
    const std::string t = iso(r.unix_ms);
    auto text = [&](int i, const std::string& s) { sqlite3_bind_text(ins_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); };
    text(1, t);
    sqlite3_bind_int64(ins_, 2, r.unix_ms);
    text(3, r.key);
    text(4, r.client);
    text(5, r.user_agent);
    text(6, r.endpoint);
    text(7, r.model);
    sqlite3_bind_int(ins_, 8, r.status);
    sqlite3_bind_int64(ins_, 9, r.prompt_tokens);
    sqlite3_bind_int64(ins_, 10, r.completion_tokens);
    text(11, r.body);
    if (sqlite3_step(ins_) != SQLITE_DONE) fail("simulated log '{}': {}", path_, sqlite3_errmsg(db_));
  }
  void close() { exec("COMMIT;"); }

 private:
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      fail("simulated log '{}': {}", path_, m);
    }
  }
  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* ins_ = nullptr;
};

class JsonlSink : public sim::Sink {
 public:
  explicit JsonlSink(const std::string& path) : out_(path) {
    if (!out_) fail("cannot create '{}'", path);
  }
  void write(const RequestRecord& r) override {
    nlohmann::json j = {{"time", iso(r.unix_ms)},  {"key", r.key},       {"client", r.client},
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
