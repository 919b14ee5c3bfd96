// One API request as `lineage monitor` reads it, and the one definition of the request-log schema:
// `lineage serve --log` writes it (serve/request_log.cpp), the traffic simulator writes it, and
// the monitor reads it, from SQLite or from another gateway's JSONL.
//
// SQLite (table `requests`, WAL): id, time (ISO 8601 UTC), unix_ms, key_id, client (address),
//   user_agent, endpoint, model, status (HTTP), prompt_tokens, completion_tokens, prompt_sha256,
//   params (JSON: the sampling parameters), prompt (rendered text, NULL with --no-log-text),
//   latency_ms, error (NULL on success), body (the request body as sent, NULL with --no-log-text),
//   response_sha256 (what was sent back: below).
//
// JSONL, one object per request (what a gateway such as LiteLLM or an nginx log shipper can emit):
//   "time"               ISO 8601 ("2026-11-01T08:00:00Z", fractional seconds allowed) or unix ms  required
//   "key"                API key id (or "key_id")                                                  required
//   "client"             client address ("203.0.113.7")
//   "user_agent"         the User-Agent header
//   "endpoint"           "/v1/chat/completions", "/v1/completions", ...
//   "model"              model asked for
//   "body"               the request body as sent: an object (or its JSON text) with prompt or
//                        messages, max_tokens, temperature, n, logprobs, top_logprobs, echo
//   "status"             HTTP status (default 200)
//   "prompt_tokens", "completion_tokens"   token counts from the response's usage
//   "response_sha256"    SHA-256 (hex) of each answer's text as the client receives it, comma-separated
//                        in choice order (chat: the message's content); optional. With it the monitor
//                        tells which assistant turns a later request re-sends this server never wrote.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace lineage::protect {

struct RequestRecord {
  int64_t unix_ms = 0;
  std::string key, client, user_agent, endpoint, model;
  int status = 200;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  std::string body;    // JSON text of the request body; empty when the log kept no text
  std::string prompt;  // rendered prompt text when no body was kept (older lineage logs)
  std::string params;  // sampling parameters as JSON when no body was kept
  std::string prompt_sha256, error;  // written by lineage serve; not read by the monitor
  std::string response_sha256;        // hex SHA-256 of each answer's text, comma-separated (empty: not logged)
  double latency_ms = 0;
  bool text_kept = true;  // false (--no-log-text): prompt and body are written as NULL
};

// The SQLite request log's one writer: creates the table (or adds `body` to a log written before
// it existed) and inserts rows; empty optional fields are written as NULL. `bulk` (simulations):
// no fsync, one transaction until commit(). Not thread-safe: lineage serve holds it under a lock.
class RequestLogWriter {
 public:
  explicit RequestLogWriter(const std::string& path, bool bulk = false);
  ~RequestLogWriter();
  RequestLogWriter(const RequestLogWriter&) = delete;
  RequestLogWriter& operator=(const RequestLogWriter&) = delete;
  void write(const RequestRecord& r);
  void commit();                               // bulk: ends the transaction
  struct sqlite3* db() { return db_; }         // for queries over the log (quotas)
  const std::string& path() const { return path_; }

 private:
  void exec(const char* sql);
  std::string path_;
  struct sqlite3* db_ = nullptr;
  struct sqlite3_stmt* insert_ = nullptr;
  bool bulk_ = false;
};

// Calls `each` for every request of a log, in file order (JSONL) or by key and time (SQLite).
// The format is told from the file's first bytes. Fails naming the file, the line and the field.
void read_request_log(const std::string& path, const std::function<void(RequestRecord&&)>& each);

// For a log being written to (lineage monitor --follow): calls `each` for the requests added after
// `position` (JSONL: a byte offset, complete lines only; SQLite: the last row id read), in the order
// they were written, and moves `position` past them. When the file is now shorter than `position`
// (JSONL rotated or truncated) it returns false and reads nothing: read it again from 0.
bool read_request_log_since(const std::string& path, int64_t& position, const std::function<void(RequestRecord&&)>& each);

// unix milliseconds from ISO 8601 UTC ("2026-11-01T08:00:00.250Z", "+00:00" or no zone); fails
// naming `what`.
int64_t parse_iso_time_ms(const std::string& s, const std::string& what);
// ISO 8601 UTC with milliseconds ("2026-11-01T08:00:00.250Z"), as the log's `time` column.
std::string iso_time_ms(int64_t unix_ms);

}  // namespace lineage::protect
