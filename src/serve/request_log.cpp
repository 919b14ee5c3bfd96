// The request log in SQLite (WAL), written through protect's RequestLogWriter, the schema's one
// owner. See include/lineage/serve/request_log.h.
#include "lineage/serve/request_log.h"

#include <sqlite3.h>

#include "lineage/core/error.h"
#include "lineage/protect/request_record.h"

namespace lineage::serve {

RequestLog::RequestLog(const std::string& path) : writer_(std::make_unique<protect::RequestLogWriter>(path)) {}

RequestLog::~RequestLog() = default;

const std::string& RequestLog::path() const { return writer_->path(); }

void RequestLog::write(const LogEntry& e) {
  protect::RequestRecord r;
  r.unix_ms = e.unix_ms;
  r.key = e.key_id;
  r.client = e.client;
  r.user_agent = e.user_agent;
  r.endpoint = e.endpoint;
  r.model = e.model;
  r.status = e.status;
  r.prompt_tokens = e.prompt_tokens;
  r.completion_tokens = e.completion_tokens;
  r.prompt_sha256 = e.prompt_sha256;
  r.params = e.params;
  r.prompt = e.prompt;
  r.body = e.body;
  r.text_kept = e.log_text;
  r.latency_ms = e.latency_ms;
  r.error = e.error;
  r.response_sha256 = e.response_sha256;
  std::lock_guard lock(mu_);
  writer_->write(r);
}

std::map<std::string, int64_t> RequestLog::usage_by_key() {
  std::lock_guard lock(mu_);
  std::map<std::string, int64_t> out;
  sqlite3* db = writer_->db();
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT key_id, SUM(prompt_tokens + completion_tokens) FROM requests WHERE key_id IS NOT NULL GROUP BY key_id",
                         -1, &st, nullptr) != SQLITE_OK)
    fail("request log '{}': {}", path(), sqlite3_errmsg(db));
  while (sqlite3_step(st) == SQLITE_ROW)
    out[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))] = sqlite3_column_int64(st, 1);
  sqlite3_finalize(st);
  return out;
}

}  // namespace lineage::serve
