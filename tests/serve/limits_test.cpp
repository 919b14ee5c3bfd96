// What an owner in front of the internet needs from `lineage serve` (issue 32): quotas that never
// overshoot — a request reserves its prompt + n × max_tokens before it starts and concurrent
// requests see each other's reservations —, per-key rate limits (requests and tokens per minute,
// 429 with Retry-After and OpenAI's x-ratelimit-* headers), and key files whose numbers are
// checked (1e19 once became a negative quota, 2.5 was truncated to 2).
#include <httplib.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <cmath>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "lineage/core/error.h"
#include "lineage/serve/keys.h"
#include "lineage/serve/server.h"
#include "process.h"
#include "serve/serving.h"
#include "test_util.h"

namespace lineage::serve {
namespace {

namespace lt = lineage::testing;
namespace fs = std::filesystem;
using json = nlohmann::json;

struct Answer {
  int status = 0;
  json body;
  httplib::Headers headers;
};

Answer complete(const lt::Serving& s, const std::string& key, json body) {
  body["model"] = lt::kServedId;
  auto c = s.client(key);
  auto r = c.Post("/v1/completions", body.dump(), "application/json");
  Answer a;
  if (!r) return a;
  a.status = r->status;
  a.body = json::parse(r->body, nullptr, false);
  a.headers = r->headers;
  return a;
}

std::string header(const Answer& a, const std::string& name) {
  auto it = a.headers.find(name);
  return it == a.headers.end() ? "" : it->second;
}

TEST(ServeLimits, AQuotaNeverOvershootsUnder32ConcurrentRequests) {
  lt::TempDir tmp;
  const auto keys = (tmp / "keys.json").string();
  const int64_t quota = 1000;
  const std::string k = KeyStore::add_key(keys, "carol", quota);
  ServeOptions o;
  o.api_keys = keys;
  o.max_batch = 32;
  lt::Serving s(o);
  // 32 at once, each ~4 prompt tokens + 100 generated: about 9 fit; the others are refused.
  std::vector<std::future<Answer>> got;
  for (int i = 0; i < 32; ++i)
    got.push_back(std::async(std::launch::async, [&] {
      return complete(s, k, {{"prompt", "And God said"}, {"max_tokens", 100}, {"ignore_eos", true}, {"temperature", 1}});
    }));
  int64_t used = 0;
  int ok = 0, refused = 0;
  for (auto& f : got) {
    auto a = f.get();
    if (a.status == 200) {
      ++ok;
      used += a.body["usage"]["total_tokens"].get<int64_t>();
    } else {
      ASSERT_EQ(a.status, 429) << a.body.dump();
      EXPECT_EQ(a.body["error"]["code"], "insufficient_quota");
      ++refused;
    }
  }
  std::printf("quota %lld: %d answered (%lld tokens), %d refused\n", static_cast<long long>(quota), ok,
              static_cast<long long>(used), refused);
  EXPECT_LE(used, quota);  // no overshoot at all: every reservation was an upper bound
  EXPECT_GE(ok, 8);
  EXPECT_EQ(ok + refused, 32);
  // The issue's reproduction: n = 16 × max_tokens 250 on a 300-token quota is refused up front.
  const std::string small = KeyStore::add_key(keys, "dave", 300);
  lt::Serving s2(o);
  auto a = complete(s2, small, {{"prompt", "And"}, {"max_tokens", 250}, {"n", 16}});
  EXPECT_EQ(a.status, 429);
  EXPECT_NE(a.body["error"]["message"].get<std::string>().find("300"), std::string::npos) << a.body.dump();
  EXPECT_EQ(complete(s2, small, {{"prompt", "And"}, {"max_tokens", 10}}).status, 200);
}

TEST(ServeLimits, RequestsAndTokensPerMinuteAnswer429WithRetryAfter) {
  lt::TempDir tmp;
  const auto keys = (tmp / "keys.json").string();
  const std::string rk = KeyStore::add_key(keys, "rpm3", 0, /*rpm=*/3, /*tpm=*/0);
  const std::string tk = KeyStore::add_key(keys, "tpm200", 0, /*rpm=*/0, /*tpm=*/200);
  ServeOptions o;
  o.api_keys = keys;
  lt::Serving s(o);
  // Requests: three go through, with the headers OpenAI sends; the fourth is refused.
  for (int i = 0; i < 3; ++i) {
    auto a = complete(s, rk, {{"prompt", "And"}, {"max_tokens", 2}});
    ASSERT_EQ(a.status, 200) << a.body.dump();
    EXPECT_EQ(header(a, "x-ratelimit-limit-requests"), "3");
    EXPECT_EQ(header(a, "x-ratelimit-remaining-requests"), std::to_string(2 - i));
  }
  auto a = complete(s, rk, {{"prompt", "And"}, {"max_tokens", 2}});
  EXPECT_EQ(a.status, 429);
  EXPECT_EQ(a.body["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(a.body["error"]["type"], "requests");
  const int retry = std::atoi(header(a, "Retry-After").c_str());
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 20);  // one request comes back every 20 s at 3 a minute
  EXPECT_FALSE(header(a, "x-ratelimit-reset-requests").empty());
  // Tokens: a request that may use 150 fits in 200; the next that may use 100 waits.
  a = complete(s, tk, {{"prompt", "And"}, {"max_tokens", 150}, {"ignore_eos", true}});
  ASSERT_EQ(a.status, 200) << a.body.dump();
  EXPECT_EQ(header(a, "x-ratelimit-limit-tokens"), "200");
  a = complete(s, tk, {{"prompt", "And"}, {"max_tokens", 100}});
  EXPECT_EQ(a.status, 429);
  EXPECT_EQ(a.body["error"]["type"], "tokens");
  EXPECT_GE(std::atoi(header(a, "Retry-After").c_str()), 1);
  // More than a minute's tokens can never fit: refused as too large, not "try later".
  a = complete(s, tk, {{"prompt", "And"}, {"max_tokens", 500}});
  EXPECT_EQ(a.status, 429);
  EXPECT_NE(a.body["error"]["message"].get<std::string>().find("Request too large"), std::string::npos);
  // A key without limits is not slowed by the others'.
  const std::string free_key = KeyStore::add_key(keys, "free", 0);
  lt::Serving s2(o);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(complete(s2, free_key, {{"prompt", "And"}, {"max_tokens", 1}}).status, 200);
}

TEST(ServeLimits, KeyFileNumbersAreWholeAndInRange) {
  lt::TempDir tmp;
  const std::string hash(64, 'a');
  for (const char* bad : {"1e19", "2.5", "-1", "\"100\"", "1e400"}) {
    const auto path = tmp / "keys.json";
    for (const char* field : {"quota_tokens", "rpm", "tpm"}) {
      lt::spit(path, std::string(R"({"keys": [{"id": "eve", "hash": ")") + hash + R"(", ")" + field + "\": " + bad + "}]}");
      std::string what = lt::error_of([&] { KeyStore::load(path.string()); });
      if (std::string(bad) == "1e400") {  // not JSON at all (out of double's range): refused by the parser
        EXPECT_NE(what, "(no error)");
        continue;
      }
      EXPECT_NE(what.find("'eve'"), std::string::npos) << bad << ": " << what;
      EXPECT_NE(what.find(field), std::string::npos) << bad << ": " << what;
    }
  }
  lt::spit(tmp / "ok.json", std::string(R"({"keys": [{"id": "eve", "hash": ")") + hash +
                                R"(", "quota_tokens": 5e6, "rpm": 60, "tpm": 40000}]})");
  auto ks = KeyStore::load((tmp / "ok.json").string());
  EXPECT_EQ(ks.keys()[0].quota_tokens, 5000000);
  EXPECT_EQ(ks.keys()[0].rpm, 60);
  EXPECT_EQ(ks.keys()[0].tpm, 40000);
}


TEST(ServeLimits, APromptTooLongForTheContextIsRefusedBeforeItIsTokenized) {
  ServeOptions o;
  lt::Serving s(o);
  // 4 MB of one letter: no tokenization of it could fit 256 tokens.
  auto a = complete(s, "", {{"prompt", std::string(4000000, 'x')}, {"max_tokens", 1}});
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(a.body["error"]["code"], "context_length_exceeded");
  EXPECT_NE(a.body["error"]["message"].get<std::string>().find("bytes"), std::string::npos) << a.body.dump();
  // A chat whose messages together are too long, likewise; a prompt that fits is served.
  auto c = s.client();
  json chat = {{"model", lt::kServedId}, {"max_tokens", 1},
               {"messages", json::array({{{"role", "user"}, {"content", std::string(2000000, 'y')}},
                                         {{"role", "user"}, {"content", std::string(2000000, 'z')}}})}};
  auto r = c.Post("/v1/chat/completions", chat.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_EQ(complete(s, "", {{"prompt", "And God"}, {"max_tokens", 1}}).status, 200);
}

// --- /metrics, read by a parser of the Prometheus text format (0.0.4) written here -------------

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the exposition format strictly: # HELP / # TYPE lines, then samples `name{l="v",...} value`
// with escaped label values; every sample belongs to a family declared by a TYPE line before it.
std::vector<Sample> parse_prometheus(const std::string& text, std::map<std::string, std::string>& types) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    if (line.rfind("# ", 0) == 0) {
      std::istringstream l(line.substr(2));
      std::string kind, name, rest;
      l >> kind >> name;
      EXPECT_TRUE(std::regex_match(name, name_re)) << "line " << n << ": " << line;
      if (kind == "TYPE") {
        l >> rest;
        EXPECT_TRUE(rest == "counter" || rest == "gauge" || rest == "histogram" || rest == "summary" || rest == "untyped")
            << line;
        EXPECT_EQ(types.count(name), 0u) << "family declared twice: " << name;
        types[name] = rest;
      } else {
        EXPECT_EQ(kind, "HELP") << line;
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    EXPECT_TRUE(std::regex_match(s.name, name_re)) << "line " << n << ": " << line;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ADD_FAILURE() << "line " << n << ": malformed label in " << line;
          return out;
        }
        std::string key = line.substr(i, eq - i), value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        EXPECT_LT(j, line.size()) << "unterminated label value: " << line;
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // '}'
    }
    EXPECT_TRUE(i < line.size() && line[i] == ' ') << "line " << n << ": " << line;
    const std::string v = line.substr(i + 1);
    char* end = nullptr;
    s.value = v == "+Inf" ? INFINITY : std::strtod(v.c_str(), &end);
    if (v != "+Inf") EXPECT_TRUE(end && *end == '\0') << "line " << n << ": value '" << v << "'";
    std::string family = s.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!types.count(family) && family.size() > std::strlen(suffix) && family.ends_with(suffix))
        family = family.substr(0, family.size() - std::strlen(suffix));
    EXPECT_TRUE(types.count(family)) << "sample before its TYPE line: " << line;
    out.push_back(s);
  }
  return out;
}

TEST(ServeLimits, MetricsAreValidPrometheusTextAndCountWhatHappened) {
  lt::TempDir tmp;
  const auto keys = (tmp / "keys.json").string();
  const std::string k = KeyStore::add_key(keys, "team \"a\"", 0, /*rpm=*/2, 0);  // a quote, escaped in labels
  ServeOptions o;
  o.api_keys = keys;
  lt::Serving s(o);
  int64_t completion = 0;
  for (int i = 0; i < 2; ++i) {
    auto a = complete(s, k, {{"prompt", "And God"}, {"max_tokens", 7}, {"ignore_eos", true}});
    ASSERT_EQ(a.status, 200);
    completion += a.body["usage"]["completion_tokens"].get<int64_t>();
  }
  EXPECT_EQ(complete(s, k, {{"prompt", "And"}, {"max_tokens", 1}}).status, 429);  // rpm 2
  EXPECT_EQ(complete(s, "lin-wrong", {{"prompt", "And"}, {"max_tokens", 1}}).status, 401);
  auto c = s.client();
  c.Get("/no/such/path/1");
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  std::map<std::string, std::string> types;
  auto samples = parse_prometheus(r->body, types);
  auto value = [&](const std::string& name, const std::map<std::string, std::string>& labels) {
    for (const auto& x : samples)
      if (x.name == name && x.labels == labels) return x.value;
    return -1.0;
  };
  EXPECT_EQ(types["lineage_requests_total"], "counter");
  EXPECT_EQ(types["lineage_time_to_first_token_seconds"], "histogram");
  EXPECT_EQ(value("lineage_requests_total", {{"endpoint", "/v1/completions"}, {"status", "200"}, {"key", "team \"a\""}}), 2);
  EXPECT_EQ(value("lineage_requests_total", {{"endpoint", "/v1/completions"}, {"status", "429"}, {"key", "team \"a\""}}), 1);
  EXPECT_EQ(value("lineage_requests_total", {{"endpoint", "/v1/completions"}, {"status", "401"}, {"key", ""}}), 1);
  EXPECT_EQ(value("lineage_requests_total", {{"endpoint", "other"}, {"status", "404"}, {"key", ""}}), 1);
  EXPECT_EQ(value("lineage_completion_tokens_total", {{"key", "team \"a\""}}), static_cast<double>(completion));
  EXPECT_EQ(value("lineage_rejected_total", {{"reason", "rate_limit"}}), 1);
  EXPECT_EQ(value("lineage_rejected_total", {{"reason", "unauthorized"}}), 1);
  EXPECT_EQ(value("lineage_time_to_first_token_seconds_count", {}), 2);
  EXPECT_EQ(value("lineage_time_to_first_token_seconds_bucket", {{"le", "+Inf"}}), 2);
  EXPECT_GE(value("lineage_queue_depth", {}), 0);
  EXPECT_GE(value("lineage_batch_occupancy", {}), 0);
  // Histogram buckets are cumulative.
  double last = 0;
  for (const auto& x : samples)
    if (x.name == "lineage_request_duration_seconds_bucket") {
      EXPECT_GE(x.value, last);
      last = x.value;
    }
}

// --- SIGTERM drains; kill -9 leaves the SQLite log whole --------------------------------------

struct ServeProcess {
  pid_t pid = -1;
  int port = 0;
  fs::path log;
  ServeProcess(const fs::path& dir, const std::vector<std::string>& extra) : log(dir / "serve.log") {
    std::vector<std::string> args = {"serve", "--model", lt::kServedModel, "--port", "0", "--log", (dir / "r.db").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid = lt::spawn_lineage(args, log);
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)/v1");
    for (int i = 0; i < 600 && port == 0; ++i) {
      std::smatch m;
      const std::string text = fs::exists(log) ? lt::slurp(log) : "";
      if (std::regex_search(text, m, listening)) port = std::stoi(m[1]);
      else std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
  // A completion request in the background: its status and body.
  std::future<std::pair<int, std::string>> complete_async(json body) const {
    body["model"] = lt::kServedId;
    return std::async(std::launch::async, [this, body] {
      auto c = client();
      auto r = c.Post("/v1/completions", body.dump(), "application/json");
      return r ? std::make_pair(r->status, r->body) : std::make_pair(0, std::string());
    });
  }
  int wait_exit() {
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  ~ServeProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

std::string integrity(const fs::path& db) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return "cannot open";
  sqlite3_stmt* st = nullptr;
  std::string out = "no answer";
  if (sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(h);
  return out;
}

int64_t logged(const fs::path& db, const std::string& where) {
  sqlite3* h = nullptr;
  sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  int64_t n = -1;
  if (sqlite3_prepare_v2(h, ("SELECT COUNT(*) FROM requests WHERE " + where).c_str(), -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return n;
}

TEST(ServeLimits, SigtermFinishesRunningRequestsThenExitsZero) {
  lt::TempDir tmp;
  ServeProcess p(tmp.path, {"--drain-seconds", "60"});
  ASSERT_GT(p.port, 0) << lt::slurp(p.log);
  // A request that takes a while: 8 choices of 200 tokens.
  auto running = p.complete_async({{"prompt", "And God said"}, {"max_tokens", 200}, {"n", 8}, {"ignore_eos", true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(p.pid, SIGTERM);
  auto [status, body] = running.get();
  EXPECT_EQ(status, 200) << body;
  EXPECT_EQ(json::parse(body)["usage"]["completion_tokens"], 1600);
  EXPECT_EQ(p.wait_exit(), 0) << lt::slurp(p.log);
  EXPECT_EQ(integrity(tmp / "r.db"), "ok");
  EXPECT_EQ(logged(tmp / "r.db", "status = 200"), 1);
}

TEST(ServeLimits, ADrainThatRunsOutOfTimeCancelsWith503AndExitsZero) {
  lt::TempDir tmp;
  ServeProcess p(tmp.path, {"--drain-seconds", "0.5"});
  ASSERT_GT(p.port, 0) << lt::slurp(p.log);
  auto running = p.complete_async({{"prompt", "And"}, {"max_tokens", 250}, {"n", 16}, {"ignore_eos", true}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto t0 = std::chrono::steady_clock::now();
  kill(p.pid, SIGTERM);
  auto [status, body] = running.get();
  EXPECT_EQ(status, 503) << body;
  EXPECT_NE(body.find("shutting down"), std::string::npos) << body;
  EXPECT_EQ(p.wait_exit(), 0) << lt::slurp(p.log);
  std::printf("drain of 0.5 s: the cancelled request answered and the server exited %.2f s after SIGTERM\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_EQ(integrity(tmp / "r.db"), "ok");
  EXPECT_EQ(logged(tmp / "r.db", "status = 503"), 1);
}

TEST(ServeLimits, TheRequestLogIsWholeAfterKill9) {
  lt::TempDir tmp;
  ServeProcess p(tmp.path, {});
  ASSERT_GT(p.port, 0) << lt::slurp(p.log);
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t)
    clients.emplace_back([&, t] {
      auto c = p.client();
      for (int i = 0; i < 50; ++i) {
        json body = {{"model", lt::kServedId}, {"prompt", "And God " + std::to_string(t * 100 + i)}, {"max_tokens", 3}};
        auto r = c.Post("/v1/completions", body.dump(), "application/json");
        if (!r) return;  // the server is gone
        if (r->status == 200) ++answered;
      }
    });
  while (answered < 40) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(p.pid, SIGKILL);
  for (auto& c : clients) c.join();
  p.wait_exit();
  EXPECT_EQ(integrity(tmp / "r.db"), "ok");
  // Every request answered 200 before the kill was logged before its answer went out.
  EXPECT_GE(logged(tmp / "r.db", "status = 200"), answered.load());
}

}  // namespace
}  // namespace lineage::serve
