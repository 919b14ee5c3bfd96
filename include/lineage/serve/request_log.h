// The server's request log: one SQLite row per request, in WAL mode so readers (`lineage monitor`,
// sqlite3) never block the server. The schema (table `requests`) is protect/request_record.h's,
// where the monitor reads it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace lineage::protect {
class RequestLogWriter;
}

namespace lineage::serve {

struct LogEntry {
  int64_t unix_ms = 0;
  std::string key_id;
  std::string client;
  std::string user_agent;
  std::string endpoint;
  std::string model;
  int status = 200;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::string prompt_sha256;
  std::string params;  // JSON
  std::string prompt;  // empty: not logged
  std::string body;    // the request body as sent (JSON); not logged without log_text
  bool log_text = true;
  double latency_ms = 0;
  std::string error;
  std::string response_sha256;  // hex SHA-256 of each choice's text, comma-separated
};

class RequestLog {
 public:
  explicit RequestLog(const std::string& path);  // creates the database and table when absent
  ~RequestLog();
  RequestLog(const RequestLog&) = delete;
  RequestLog& operator=(const RequestLog&) = delete;
  void write(const LogEntry& e);
  // Tokens (prompt + completion) each key has used so far.
  std::map<std::string, int64_t> usage_by_key();
  const std::string& path() const;

 private:
  std::unique_ptr<protect::RequestLogWriter> writer_;
  std::mutex mu_;
};

}  // namespace lineage::serve
