// Private to serve: the HTTP/1.1 connection layer of `lineage serve`, event-driven so that a
// connection costs a file descriptor and a deadline, not a thread. One thread (epoll) accepts,
// reads and writes every connection; a request goes to a worker only once it has arrived whole.
// A slow or idle client (slowloris: a byte a second) therefore holds no worker, and each request
// has total deadlines — for its headers and for its body — that do not restart with every byte.
//
// Bodies are bounded in every encoding while they are read: `max_body` applies to the bytes
// received (Content-Length is checked before the body is read; a chunked body as it arrives) and
// to the bytes after Content-Encoding gzip/deflate is undone (inflated in pieces, with a ratio
// limit); 413 as soon as a bound is passed. Connections are capped in all and per client address.
//
// Requests and responses are carried in cpp-httplib's Request and Response structs, so handlers
// are written as for httplib::Server, streamed responses included (set_chunked_content_provider).
// Routes marked `inline` (cheap and never blocking: /health, /metrics) run on the event thread,
// so they are answered even while every worker is generating.
#pragma once
#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

namespace lineage::serve {

struct HttpFrontOptions {
  std::string host = "127.0.0.1";
  int port = 0;                       // 0: any free port
  int workers = 64;                   // threads running handlers (requests processed at once)
  int64_t max_body = 8 << 20;         // bytes, before and after decoding
  double header_timeout_s = 10;       // total time for the request line and headers to arrive
  double body_timeout_s = 30;         // total time for the body to arrive, once the headers have
  double idle_timeout_s = 5;          // a kept-alive connection waiting for its next request
  double write_timeout_s = 60;        // a response not taken by the client in this time: closed
  int max_connections = 4096;         // open at once, in all
  int max_connections_per_client = 1024;  // open at once from one address
  int64_t max_header_bytes = 64 << 10;
  double max_inflate_ratio = 200;     // decoded bytes per encoded byte, above 1 MiB decoded
};

struct HttpFrontStats {
  std::atomic<uint64_t> accepted{0}, rejected_connections{0}, timed_out{0}, bodies_too_large{0};
  std::atomic<int64_t> open{0};
};

class HttpFront {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // Chooses the handler of a request: the route's, or null (then `fallback` answers, e.g. 404).
  // `inline_route`: run it on the event thread (it must be quick and must not block).
  using Router = std::function<Handler(const httplib::Request&, bool& inline_route)>;
  // Answers what the layer refuses itself (400, 408, 413, 415, 431, 501) and unknown routes
  // (res.status is set; the callback writes the body).
  using ErrorHandler = std::function<void(const httplib::Request&, httplib::Response&)>;

  HttpFront(HttpFrontOptions options, Router router, ErrorHandler on_error);
  ~HttpFront();
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  int bind();    // listens; returns the port
  void run();    // serves until stop(); returns when in-flight requests are answered
  void stop();   // stops accepting; requests already in flight go on
  const HttpFrontStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lineage::serve
