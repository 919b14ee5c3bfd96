// The request log in SQLite (WAL). See include/lineage/serve/request_log.h.
#include "lineage/serve/request_log.h"

#include <sqlite3.h>

#include <ctime>

#include "lineage/core/error.h"
#include "lineage/protect/request_record.h"

namespace lineage::serve {

namespace {

void exec(sqlite3* db, const char* sql, const std::string& path) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    fail("request log '{}': {}", path, m);
  }
}

std::string iso_time(int64_t unix_ms) {
  std::time_t s = unix_ms / 1000;
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(unix_ms % 1000));
}

}  // namespace

RequestLog::RequestLog(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    std::string m = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    fail("cannot open the request log '{}': {}", path, m);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", path_);
  exec(db_, protect::kRequestLogSchema, path_);
  // A log written before requests kept their body gets the column (NULL for the old rows).
  sqlite3_stmt* st = nullptr;
  bool has_body = false;
  if (sqlite3_prepare_v2(db_, "SELECT body FROM requests LIMIT 0", -1, &st, nullptr) == SQLITE_OK) has_body = true;
  sqlite3_finalize(st);
  if (!has_body) exec(db_, protect::kRequestLogAddBody, path_);
}

RequestLog::~RequestLog() {
  if (db_) sqlite3_close(db_);
}

void RequestLog::write(const LogEntry& e) {
  std::lock_guard lock(mu_);
  sqlite3_stmt* st = nullptr;
  const char* sql =
      "INSERT INTO requests (time, unix_ms, key_id, client, user_agent, endpoint, model, status, prompt_tokens,"
      " completion_tokens, prompt_sha256, params, prompt, latency_ms, error, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) fail("request log '{}': {}", path_, sqlite3_errmsg(db_));
  auto text = [&](int i, const std::string& s, bool null_if_empty = true) {
    if (s.empty() && null_if_empty) sqlite3_bind_null(st, i);
    else sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  };
  std::string t = iso_time(e.unix_ms);
  text(1, t);
  sqlite3_bind_int64(st, 2, e.unix_ms);
  text(3, e.key_id);
  text(4, e.client);
  text(5, e.user_agent);
  text(6, e.endpoint);
  text(7, e.model);
  sqlite3_bind_int(st, 8, e.status);
  sqlite3_bind_int64(st, 9, e.prompt_tokens);
  sqlite3_bind_int64(st, 10, e.completion_tokens);
  text(11, e.prompt_sha256);
  text(12, e.params);
  if (e.log_text) text(13, e.prompt, false);
  else sqlite3_bind_null(st, 13);
  sqlite3_bind_double(st, 14, e.latency_ms);
  text(15, e.error);
  if (e.log_text) text(16, e.body);
  else sqlite3_bind_null(st, 16);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) fail("request log '{}': {}", path_, sqlite3_errmsg(db_));
}

std::map<std::string, int64_t> RequestLog::usage_by_key() {
  std::lock_guard lock(mu_);
  std::map<std::string, int64_t> out;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT key_id, SUM(prompt_tokens + completion_tokens) FROM requests WHERE key_id IS NOT NULL GROUP BY key_id",
                         -1, &st, nullptr) != SQLITE_OK)
    fail("request log '{}': {}", path_, sqlite3_errmsg(db_));
  while (sqlite3_step(st) == SQLITE_ROW)
    out[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))] = sqlite3_column_int64(st, 1);
  sqlite3_finalize(st);
  return out;
}

}  // namespace lineage::serve
