// Private to teacher: what the HTTP teacher is built from — the URL, the answer journal (SQLite),
// the index of the student's token pieces for mapping text onto ids, and a client that retries
// what retrying can fix and runs requests `concurrency` at a time.
#pragma once
#include <httplib.h>
#include <sqlite3.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "lineage/teacher/http_teacher.h"

namespace lineage::teacher::http {

constexpr float kAbsent = -1e4f;  // log-probability of padding entries (exp underflows to 0)

// Answers kept by request key, in SQLite (WAL) so a crash loses at most the answer in flight.
class Journal {
 public:
  explicit Journal(const std::string& path);  // "" : keeps nothing
  ~Journal();
  bool get(const std::string& key, std::string* value);
  void put(const std::string& key, const std::string& value);

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
};

struct Url {
  std::string origin;  // scheme://host:port
  std::string base;    // path prefix, e.g. /v1
};
Url parse_url(const std::string& url);

// Piece text of every student token, for mapping text onto ids: the longest piece a string starts
// with is the student token that starts it.
struct PieceIndex {
  std::unordered_map<std::string, int32_t> by_text;
  size_t longest = 0;
  explicit PieceIndex(const text::Tokenizer& tok);
  int32_t first_token(const std::string& s) const;  // -1: none
};

// "HTTP 400: <the server's message>", or what kept the answer from coming.
std::string api_error_message(const httplib::Result& r);

struct Client {
  Url url;
  std::string url_text;
  std::string api_key;
  nlohmann::json extra_body = nlohmann::json::object();  // options.extra_body, parsed
  std::unique_ptr<Journal> journal;
  std::atomic<int64_t> sent{0};
  HttpTeacherOptions opt;

  std::unique_ptr<httplib::Client> connect() const;
  // One request, retried on what retrying can fix (connection errors, 429, 5xx; Retry-After
  // honoured). Returns the parsed answer; fails naming the URL and the server's message on anything
  // else. `probing`: no retries, and a 4xx is thrown as Error with the server's message.
  nlohmann::json call(httplib::Client& c, const std::string& method, const std::string& path, const nlohmann::json& body,
                      bool probing = false);
  // Runs f(i, client) for i in [0, n), `concurrency` at a time; the first error is rethrown.
  void parallel(int64_t n, const std::function<void(int64_t, httplib::Client&)>& f);
};

}  // namespace lineage::teacher::http
