// The HTTP teacher's client, journal, URL and piece index (see http_client.h).
#include "teacher/http_client.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <thread>

#include "lineage/core/json.h"
#include "lineage/core/error.h"

namespace lineage::teacher::http {

using json = nlohmann::json;

namespace {

// Data-parallel workers open and write one journal at once. SQLite's busy handler waits for most
// locks, but not every time (switching a new file to WAL while another connection sets it up
// answered "database is locked" at once: 1 in 8 runs of HttpTeacher.TwoWorkers... here), so a busy
// answer is retried for up to 30 s before it is an error.
template <class F>
int retry_busy(F&& step) {
  int rc = step();
  for (int tries = 0; (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && tries < 600; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    rc = step();
  }
  return rc;
}

}  // namespace

Journal::Journal(const std::string& path) : path_(path) {
  if (path.empty()) return;
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK)
    fail("cannot open the teacher journal '{}': {}", path, db_ ? sqlite3_errmsg(db_) : "out of memory");
  sqlite3_busy_timeout(db_, 10000);
  for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=NORMAL;",
                          "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL);"}) {
    char* err = nullptr;
    const int rc = retry_busy([&] {
      sqlite3_free(err);
      err = nullptr;
      return sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    });
    if (rc != SQLITE_OK) {
      std::string m = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      fail("teacher journal '{}': {}", path, m);
    }
  }
}
Journal::~Journal() {
  if (db_) sqlite3_close(db_);
}
bool Journal::get(const std::string& key, std::string* value) {
  if (!db_) return false;
  std::lock_guard lock(mu_);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db_, "SELECT value FROM answers WHERE key = ?", -1, &st, nullptr);
  sqlite3_bind_text(st, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
  bool found = retry_busy([&] {
                 sqlite3_reset(st);
                 return sqlite3_step(st);
               }) == SQLITE_ROW;
  if (found) value->assign(static_cast<const char*>(sqlite3_column_blob(st, 0)), sqlite3_column_bytes(st, 0));
  sqlite3_finalize(st);
  return found;
}
void Journal::put(const std::string& key, const std::string& value) {
  if (!db_) return;
  std::lock_guard lock(mu_);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", -1, &st, nullptr);
  sqlite3_bind_text(st, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
  sqlite3_bind_blob(st, 2, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
  int rc = retry_busy([&] {
    sqlite3_reset(st);
    return sqlite3_step(st);
  });
  const std::string m = sqlite3_errmsg(db_);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) fail("teacher journal '{}': {}", path_, m);
}

Url parse_url(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) fail("teacher URL '{}' must start with http:// or https://", url);
  auto path_start = url.find('/', scheme_end + 3);
  Url u;
  u.origin = url.substr(0, path_start);
  u.base = path_start == std::string::npos ? "" : url.substr(path_start);
  while (!u.base.empty() && u.base.back() == '/') u.base.pop_back();
  if (u.origin.size() <= scheme_end + 3) fail("teacher URL '{}' has no host", url);
  return u;
}

PieceIndex::PieceIndex(const text::Tokenizer& tok) {
  const auto& v = tok.vocab();
  // A neutral previous token, so SentencePiece pieces keep their leading space.
  int32_t prev = 0;
  for (int32_t i = 0; i < v.size(); ++i)
    if (v.types[i] == text::TokenType::kNormal) {
      prev = i;
      break;
    }
  for (int32_t i = 0; i < v.size(); ++i) {
    if (v.types[i] == text::TokenType::kControl || v.types[i] == text::TokenType::kUnused) continue;
    std::string s = tok.decode_piece(prev, i);
    if (s.empty()) continue;
    auto it = by_text.find(s);
    // Prefer ordinary pieces over byte-fallback tokens of the same text.
    if (it == by_text.end() || (v.types[it->second] == text::TokenType::kByte && v.types[i] != text::TokenType::kByte))
      by_text[s] = i;
    longest = std::max(longest, s.size());
  }
}
int32_t PieceIndex::first_token(const std::string& s) const {
  for (size_t n = std::min(longest, s.size()); n > 0; --n) {
    auto it = by_text.find(s.substr(0, n));
    if (it != by_text.end()) return it->second;
  }
  return -1;
}

std::string api_error_message(const httplib::Result& r) {
  if (!r) return fmt::format("no answer ({})", httplib::to_string(r.error()));
  std::string msg = r->body.substr(0, 300);
  auto j = parse_json_or_discarded(r->body);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") && j["error"]["message"].is_string())
    msg = j["error"]["message"].get<std::string>();
  return fmt::format("HTTP {}: {}", r->status, msg);
}

std::unique_ptr<httplib::Client> Client::connect() const {
  auto c = std::make_unique<httplib::Client>(url.origin);
  c->set_connection_timeout(std::min<time_t>(30, static_cast<time_t>(opt.timeout_s)), 0);
  c->set_read_timeout(static_cast<time_t>(opt.timeout_s), 0);
  c->set_write_timeout(static_cast<time_t>(opt.timeout_s), 0);
  if (!api_key.empty()) c->set_bearer_token_auth(api_key);
  c->set_keep_alive(true);
  return c;
}

// One request, retried on what retrying can fix. Returns the parsed answer; fails naming the
// URL and the server's message on anything else.
json Client::call(httplib::Client& c, const std::string& method, const std::string& path, const json& body, bool probing) {
  std::mt19937_64 rng(std::random_device{}());
  double delay = opt.backoff_s, waited = 0;
  for (int attempt = 0;; ++attempt) {
    sent++;
    auto r = method == "GET" ? c.Get(url.base + path) : c.Post(url.base + path, body.dump(), "application/json");
    bool retry = !r || r->status == 429 || r->status >= 500;
    if (r && r->status == 200) {
      auto j = parse_json_or_discarded(r->body);
      if (j.is_discarded()) fail("teacher {}{}: the answer is not JSON: {}", url_text, path, r->body.substr(0, 200));
      return j;
    }
    if (!retry || probing || attempt >= opt.max_retries) {
      if (probing && r && r->status >= 400 && r->status < 500) throw Error(api_error_message(r));
      fail("teacher {}{}: {}{}", url_text, path, api_error_message(r),
           retry ? fmt::format(" (gave up after {} tries)", attempt + 1) : "");
    }
    double wait = std::min(delay, 30.0) * std::uniform_real_distribution<double>(0.75, 1.25)(rng);
    if (r && r->has_header("Retry-After")) {
      // Seconds (RFC 9110 also allows an HTTP date: then our own backoff is used). A wait beyond
      // the cap is not waited for: a day's Retry-After would stall the run for a day.
      const std::string h = r->get_header_value("Retry-After");
      char* end = nullptr;
      const double asked = std::strtod(h.c_str(), &end);
      if (end != h.c_str() && *end == '\0' && std::isfinite(asked) && asked >= 0) {
        if (asked > opt.max_retry_after_s)
          fail("teacher {}{}: {}; the server asks to retry after {} s, more than the {} s this run waits "
               "(--teacher-max-retry-after)", url_text, path, api_error_message(r), h, opt.max_retry_after_s);
        wait = std::max(wait, asked);
      }
    }
    if (waited + wait > opt.retry_budget_s)
      fail("teacher {}{}: {}; still failing after {} tries and {:.0f} s of retrying (--teacher-retry-budget {} s)", url_text,
           path, api_error_message(r), attempt + 1, waited, opt.retry_budget_s);
    waited += wait;
    if (!opt.quiet)
      std::fprintf(stderr, "teacher %s%s: %s; retrying in %.1f s\n", url_text.c_str(), path.c_str(), api_error_message(r).c_str(), wait);
    std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    delay *= 2;
  }
}

// Runs f(i, client) for i in [0, n), `concurrency` at a time; the first error is rethrown.
void Client::parallel(int64_t n, const std::function<void(int64_t, httplib::Client&)>& f) {
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex mu;
  auto worker = [&] {
    auto c = connect();
    while (true) {
      int64_t i = next++;
      if (i >= n) return;
      try {
        f(i, *c);
      } catch (...) {
        std::lock_guard lock(mu);
        if (!error) error = std::current_exception();
        next = n;
      }
    }
  };
  int threads = static_cast<int>(std::min<int64_t>(std::max(1, opt.concurrency), n));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace lineage::teacher::http
