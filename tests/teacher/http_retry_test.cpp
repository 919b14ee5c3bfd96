// The HTTP teacher's retries against a server that asks for too much patience (issue 32): a
// Retry-After of a day fails the request at once, naming the server and the flag; a server that
// keeps answering 503 is retried only within the retry budget; a Retry-After that is not a finite
// number of seconds (inf, nan, negative, an HTTP date) falls back to the client's own backoff.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "lineage/core/error.h"
#include "teacher/http_client.h"
#include "test_util.h"

namespace lineage::teacher::http {
namespace {

// A loopback server whose every GET /v1/models answers `status` with the given Retry-After.
struct Stubborn {
  httplib::Server srv;
  std::thread thread;
  int port = 0;
  std::atomic<int> hits{0};
  Stubborn(int status, std::string retry_after) {
    srv.Get("/v1/models", [this, status, retry_after](const httplib::Request&, httplib::Response& res) {
      ++hits;
      res.status = status;
      if (!retry_after.empty()) res.set_header("Retry-After", retry_after);
      res.set_content(R"({"error": {"message": "busy", "type": "server_error"}})", "application/json");
    });
    port = srv.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { srv.listen_after_bind(); });
    while (!srv.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~Stubborn() {
    srv.stop();
    thread.join();
  }
};

// Calls GET /models; returns the error's message and how long the call took.
std::pair<std::string, double> call_models(const Stubborn& s, HttpTeacherOptions o) {
  Client c;
  c.url_text = "http://127.0.0.1:" + std::to_string(s.port) + "/v1";
  c.url = parse_url(c.url_text);
  o.quiet = true;
  c.opt = o;
  auto conn = c.connect();
  auto t0 = std::chrono::steady_clock::now();
  std::string what;
  try {
    c.call(*conn, "GET", "/models", {});
  } catch (const Error& e) {
    what = e.what();
  }
  return {what, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

TEST(HttpTeacherRetries, ADayLongRetryAfterFailsAtOnceNamingTheServer) {
  Stubborn s(429, "86400");
  HttpTeacherOptions o;  // the defaults a distill run gets
  auto [what, seconds] = call_models(s, o);
  EXPECT_NE(what.find("127.0.0.1:" + std::to_string(s.port)), std::string::npos) << what;
  EXPECT_NE(what.find("86400"), std::string::npos) << what;
  EXPECT_NE(what.find("--teacher-max-retry-after"), std::string::npos) << what;
  EXPECT_EQ(s.hits.load(), 1);
  EXPECT_LT(seconds, 30.0);  // a bound on a hang, not a speed target
}

TEST(HttpTeacherRetries, AServerThatKeepsRefusingIsRetriedWithinTheBudget) {
  Stubborn s(503, "0.3");
  HttpTeacherOptions o;
  o.max_retries = 1000;
  o.retry_budget_s = 1.5;
  o.backoff_s = 0.05;  // the server's 0.3 s is what is waited
  auto [what, seconds] = call_models(s, o);
  EXPECT_NE(what.find("--teacher-retry-budget"), std::string::npos) << what;
  EXPECT_NE(what.find("HTTP 503"), std::string::npos) << what;
  EXPECT_GE(s.hits.load(), 3);   // it did retry, honouring 0.3 s each time
  EXPECT_LE(s.hits.load(), 10);  // and stopped near the budget
}

TEST(HttpTeacherRetries, ARetryAfterThatIsNotSecondsFallsBackToTheBackoff) {
  for (const char* h : {"inf", "nan", "-5", "1e400", "Wed, 21 Oct 2099 07:28:00 GMT", "12abc"}) {
    Stubborn s(503, h);
    HttpTeacherOptions o;
    o.max_retries = 3;
    o.backoff_s = 0.05;
    auto [what, seconds] = call_models(s, o);
    EXPECT_NE(what.find("gave up after 4 tries"), std::string::npos) << h << ": " << what;
    EXPECT_EQ(s.hits.load(), 4) << h;
    EXPECT_LT(seconds, 30.0) << h;
  }
}

}  // namespace
}  // namespace lineage::teacher::http
