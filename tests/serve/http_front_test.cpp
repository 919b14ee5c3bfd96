// The connection layer of `lineage serve` against an attacker on raw sockets (issue 32):
//  - slowloris: 256 connections sending a byte a second hold no worker; 8 ordinary clients keep
//    getting answers within 2 s all along, /health included;
//  - deadlines are totals: a body trickled a byte at a time is cut at --read-timeout (408), not
//    kept alive by each byte;
//  - bodies are bounded in every encoding: a chunked body of up to 1 GiB and a gzip body that
//    inflates to 1 GiB are answered 413 while resident memory grows by less than 2 × --max-body;
//  - framing that smuggles (Content-Length with Transfer-Encoding) is refused; Expect:
//    100-continue is honoured; a gzip body within the bound is served.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "process.h"
#include "serve/serving.h"
#include "test_util.h"

namespace lineage::serve {
namespace {

namespace lt = lineage::testing;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// What the server sends until it closes or `seconds` pass.
std::string read_until_close(int fd, double seconds) {
  std::string out;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  char buf[65536];
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return std::atoi(response.c_str() + 9);
}

std::string completion_body(int max_tokens) {
  return json({{"model", lt::kServedId}, {"prompt", "And God"}, {"max_tokens", max_tokens}}).dump();
}

TEST(HttpFront, SlowlorisHoldsNoWorkerAndOrdinaryClientsAreAnsweredWithin2s) {
  ServeOptions o;
  o.threads = 8;  // fewer workers than attackers by far: they must not be what the attackers hold
  lt::Serving s(o);
  // 256 connections, each sending its headers a byte at a time, one byte a second.
  std::vector<int> lorises;
  for (int i = 0; i < 256; ++i) {
    int fd = connect_to(s.port);
    ASSERT_GE(fd, 0) << "connection " << i;
    ASSERT_TRUE(send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"));
    lorises.push_back(fd);
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    for (int sec = 0; sec < 7 && !done; ++sec) {
      for (int fd : lorises) send_all(fd, "X");
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  // 8 ordinary clients, for 6 seconds: completions and /health, each answered within 2 s.
  std::vector<std::future<std::pair<int, double>>> clients;
  for (int c = 0; c < 8; ++c)
    clients.push_back(std::async(std::launch::async, [&, c] {
      int answered = 0;
      double worst = 0;
      const auto end = Clock::now() + std::chrono::seconds(6);
      while (Clock::now() < end) {
        auto cl = s.client();
        cl.set_read_timeout(3, 0);
        const auto t0 = Clock::now();
        auto r = c % 2 ? cl.Get("/health") : cl.Post("/v1/completions", completion_body(4), "application/json");
        const double took = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!r || r->status != 200) return std::make_pair(-1, took);
        ++answered;
        worst = std::max(worst, took);
      }
      return std::make_pair(answered, worst);
    }));
  int total = 0;
  double worst = 0;
  for (auto& f : clients) {
    auto [n, w] = f.get();
    EXPECT_GT(n, 0) << "a client went unanswered (after " << w << " s)";
    total += std::max(0, n);
    worst = std::max(worst, w);
  }
  done = true;
  trickle.join();
  std::printf("slowloris: 256 trickling connections; 8 clients got %d answers in 6 s, the slowest in %.3f s\n", total, worst);
  EXPECT_LT(worst, 2.0);
  for (int fd : lorises) ::close(fd);
}

TEST(HttpFront, DeadlinesAreTotalsNotPerByte) {
  ServeOptions o;
  o.read_timeout_s = 3;
  lt::Serving s(o);
  int fd = connect_to(s.port);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 1000\r\n\r\n{"));
  const auto t0 = Clock::now();
  std::string got;
  // A byte every 200 ms: each restarts no timer.
  while (Clock::now() - t0 < std::chrono::seconds(8)) {
    send_all(fd, " ");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      got = read_until_close(fd, 2);
      break;
    }
  }
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(status_of(got), 408) << got;
  EXPECT_GE(took, 2.5);
  EXPECT_LT(took, 5.0);
  ::close(fd);
}

// Sends `head` then `body_piece` over and over (up to `limit` bytes) until the server answers;
// returns the answer. Our sending stops as soon as the server has spoken.
std::string flood(int port, const std::string& head, const std::string& piece, size_t limit, size_t* sent) {
  int fd = connect_to(port);
  EXPECT_GE(fd, 0);
  send_all(fd, head);
  *sent = 0;
  while (*sent < limit) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) break;
    if (!send_all(fd, piece)) break;
    *sent += piece.size();
  }
  std::string got = read_until_close(fd, 5);
  ::close(fd);
  return got;
}

TEST(HttpFront, ChunkedAndGzipBombsAre413WithBoundedMemory) {
  ServeOptions o;
  o.max_body_bytes = 2000000;  // deflate gives at most ~1032:1: 1 GiB of one byte is ~1.04 MB of gzip
  lt::Serving s(o);
  // gzip: 1 GiB of spaces deflated to about 1 MB, sent whole.
  std::string gz;
  {
    z_stream zs{};
    ASSERT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
    std::string spaces(1 << 20, ' ');
    char out[1 << 16];
    for (int i = 0; i < 1024; ++i) {
      zs.next_in = reinterpret_cast<Bytef*>(spaces.data());
      zs.avail_in = static_cast<uInt>(spaces.size());
      do {
        zs.next_out = reinterpret_cast<Bytef*>(out);
        zs.avail_out = sizeof out;
        deflate(&zs, i == 1023 ? Z_FINISH : Z_NO_FLUSH);
        gz.append(out, sizeof out - zs.avail_out);
      } while (zs.avail_out == 0);
    }
    deflateEnd(&zs);
  }
  ASSERT_LT(static_cast<int64_t>(gz.size()), o.max_body_bytes) << "the bomb itself must be under --max-body";
  ASSERT_EQ(s.client().Post("/v1/completions", completion_body(2), "application/json")->status, 200);  // warm
  // Each bomb's peak over what was resident before it: the most memory it ever made the server hold
  // (the server also hands a refused body's pages back at once, so what stays after is less).
  const bool peaks = lt::reset_peak_resident();
  int64_t before = lt::resident_kb();
  auto peak_growth_kb = [&] {
    const int64_t grown = (peaks ? lt::peak_resident_kb() : lt::resident_kb()) - before;
    lt::reset_peak_resident();
    before = lt::resident_kb();
    return grown;
  };
  // Chunked: 64 KiB chunks of a JSON string, up to 1 GiB.
  std::string piece = "10000\r\n" + std::string(0x10000, ' ') + "\r\n";
  size_t sent = 0;
  std::string got = flood(s.port,
                          "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n",
                          piece, size_t{1} << 30, &sent);
  EXPECT_EQ(status_of(got), 413) << got.substr(0, 200);
  EXPECT_NE(got.find("larger than this server accepts"), std::string::npos);
  const int64_t chunked_kb = peak_growth_kb();
  std::printf("chunked bomb: answered 413 after %.1f MB sent; peak resident memory %+lld KiB\n", static_cast<double>(sent) / 1e6,
              static_cast<long long>(chunked_kb));
  EXPECT_LT(sent, size_t{64} << 20);  // refused early, not after the whole gigabyte
  EXPECT_LT(chunked_kb * 1024, 2 * o.max_body_bytes);

  got = flood(s.port,
              "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
              "Content-Length: " + std::to_string(gz.size()) + "\r\n\r\n",
              gz, gz.size(), &sent);
  EXPECT_EQ(status_of(got), 413) << got.substr(0, 200);
  const int64_t gzip_kb = peak_growth_kb();
  std::printf("gzip bomb: %zu bytes that inflate to 1 GiB answered 413; peak resident memory %+lld KiB%s\n", gz.size(),
              static_cast<long long>(gzip_kb), peaks ? "" : " (no peak reset here: resident memory after)");
  EXPECT_LT(gzip_kb * 1024, 2 * o.max_body_bytes);
  // A gzip body within the bound is served as the plain one would be.
  std::string body = completion_body(3), small;
  {
    uLongf n = compressBound(body.size()) + 32;
    z_stream zs{};
    deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    small.resize(n);
    zs.next_in = reinterpret_cast<Bytef*>(body.data());
    zs.avail_in = static_cast<uInt>(body.size());
    zs.next_out = reinterpret_cast<Bytef*>(small.data());
    zs.avail_out = static_cast<uInt>(n);
    ASSERT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    small.resize(zs.total_out);
    deflateEnd(&zs);
  }
  auto c = s.client();
  auto r = c.Post("/v1/completions", {{"Content-Encoding", "gzip"}}, small, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST(HttpFront, SmugglingFramingIsRefusedAndExpectContinueIsHonoured) {
  lt::Serving s(ServeOptions{});
  const std::string body = completion_body(2);
  int fd = connect_to(s.port);
  send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(status_of(read_until_close(fd, 3)), 400);
  ::close(fd);
  fd = connect_to(s.port);
  send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef");
  EXPECT_EQ(status_of(read_until_close(fd, 3)), 400);
  ::close(fd);
  // Expect: 100-continue (curl sends it for bodies over 1 KiB): 100 first, then the answer.
  fd = connect_to(s.port);
  send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
               "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
  char buf[256];
  pollfd p{fd, POLLIN, 0};
  ASSERT_GT(::poll(&p, 1, 3000), 0);
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(0, n))), "HTTP/1.1 100 Continue\r\n\r\n");
  send_all(fd, body);
  std::string got = read_until_close(fd, 10);
  EXPECT_EQ(status_of(got), 200) << got;
  ::close(fd);
  // Two requests on one kept-alive connection, the second sent before the first is answered.
  fd = connect_to(s.port);
  std::string one = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  send_all(fd, one + "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  got = read_until_close(fd, 10);
  EXPECT_EQ(status_of(got), 200);
  EXPECT_NE(got.find("\"status\":\"ok\""), std::string::npos) << got;
  ::close(fd);
}

}  // namespace
}  // namespace lineage::serve
