// The SQLite request log's one writer (and its schema). See include/lineage/protect/request_record.h.
#include <sqlite3.h>

#include <ctime>
#include <fmt/format.h>

#include "lineage/core/error.h"
#include "lineage/protect/request_record.h"

namespace lineage::protect {

namespace {

const char* const kSchema =
    "CREATE TABLE IF NOT EXISTS requests ("
    " id INTEGER PRIMARY KEY, time TEXT NOT NULL, unix_ms INTEGER NOT NULL, key_id TEXT, client TEXT,"
    " user_agent TEXT, endpoint TEXT, model TEXT, status INTEGER, prompt_tokens INTEGER,"
    " completion_tokens INTEGER, prompt_sha256 TEXT, params TEXT, prompt TEXT, latency_ms REAL, error TEXT,"
    " body TEXT, response_sha256 TEXT);"
    "CREATE INDEX IF NOT EXISTS requests_key_time ON requests(key_id, unix_ms);";

}  // namespace

std::string iso_time_ms(int64_t unix_ms) {
  std::time_t s = unix_ms / 1000;
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(unix_ms % 1000));
}

RequestLogWriter::RequestLogWriter(const std::string& path, bool bulk) : path_(path), bulk_(bulk) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    std::string m = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    fail("cannot open the request log '{}': {}", path, m);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec(bulk ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;" : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
  exec(kSchema);
  sqlite3_stmt* probe = nullptr;
  const bool has_body = sqlite3_prepare_v2(db_, "SELECT body FROM requests LIMIT 0", -1, &probe, nullptr) == SQLITE_OK;
  sqlite3_finalize(probe);
  if (!has_body) exec("ALTER TABLE requests ADD COLUMN body TEXT;");  // older rows: NULL
  const bool has_response = sqlite3_prepare_v2(db_, "SELECT response_sha256 FROM requests LIMIT 0", -1, &probe, nullptr) == SQLITE_OK;
  sqlite3_finalize(probe);
  if (!has_response) exec("ALTER TABLE requests ADD COLUMN response_sha256 TEXT;");
  const char* sql =
      "INSERT INTO requests (time, unix_ms, key_id, client, user_agent, endpoint, model, status, prompt_tokens,"
      " completion_tokens, prompt_sha256, params, prompt, latency_ms, error, body, response_sha256)"
      " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  if (sqlite3_prepare_v2(db_, sql, -1, &insert_, nullptr) != SQLITE_OK) fail("request log '{}': {}", path_, sqlite3_errmsg(db_));
  if (bulk_) exec("BEGIN;");
}

RequestLogWriter::~RequestLogWriter() {
  if (bulk_ && db_) sqlite3_exec(db_, "COMMIT;", nullptr, nullptr, nullptr);
  sqlite3_finalize(insert_);
  if (db_) sqlite3_close(db_);
}

void RequestLogWriter::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    fail("request log '{}': {}", path_, m);
  }
}

void RequestLogWriter::commit() {
  if (!bulk_) return;
  exec("COMMIT;");
  bulk_ = false;
}

void RequestLogWriter::write(const RequestRecord& r) {
  sqlite3_stmt* st = insert_;
  sqlite3_reset(st);
  auto text = [&](int i, const std::string& s, bool null_if_empty = true) {
    if (s.empty() && null_if_empty) sqlite3_bind_null(st, i);
    else sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  };
  const std::string t = iso_time_ms(r.unix_ms);
  text(1, t);
  sqlite3_bind_int64(st, 2, r.unix_ms);
  text(3, r.key);
  text(4, r.client);
  text(5, r.user_agent);
  text(6, r.endpoint);
  text(7, r.model);
  sqlite3_bind_int(st, 8, r.status);
  sqlite3_bind_int64(st, 9, r.prompt_tokens);
  sqlite3_bind_int64(st, 10, r.completion_tokens);
  text(11, r.prompt_sha256);
  text(12, r.params);
  if (r.text_kept) text(13, r.prompt, false);
  else sqlite3_bind_null(st, 13);
  sqlite3_bind_double(st, 14, r.latency_ms);
  text(15, r.error);
  if (r.text_kept) text(16, r.body);
  else sqlite3_bind_null(st, 16);
  text(17, r.response_sha256);
  if (sqlite3_step(st) != SQLITE_DONE) fail("request log '{}': {}", path_, sqlite3_errmsg(db_));
}

}  // namespace lineage::protect
