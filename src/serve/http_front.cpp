// The event-driven HTTP/1.1 layer of `lineage serve` (see http_front.h): one epoll thread for every
// socket, workers for handlers, per-request total deadlines, bodies bounded in every encoding.
#include "serve/http_front.h"

#include "lineage/core/allocator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lineage/core/error.h"

namespace lineage::serve {

namespace {

using Clock = std::chrono::steady_clock;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::max(0.0, s)));
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return std::string(s.substr(b, e - b));
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

// A chunked body (RFC 9112 §7.1) decoded as it arrives: data appended to `out`, extensions and
// trailers skipped. feed() consumes what it can from `in`; fails on malformed framing.
struct ChunkDecoder {
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone } state = State::kSize;
  uint64_t left = 0;
  // Returns 0 while going on or done, 400 on malformed framing, 413 once `out` passes `max`.
  int feed(std::string& in, std::string& out, int64_t max) {
    size_t at = 0;
    int status = 0;
    while (status == 0 && state != State::kDone) {
      if (state == State::kSize || state == State::kTrailer || state == State::kDataEnd) {
        const size_t eol = in.find("\r\n", at);
        if (eol == std::string::npos) {
          if (in.size() - at > 4096) status = 400;  // a size or trailer line this long is not one
          break;
        }
        const std::string_view line(in.data() + at, eol - at);
        at = eol + 2;
        if (state == State::kDataEnd) {
          if (!line.empty()) status = 400;
          state = State::kSize;
        } else if (state == State::kTrailer) {
          if (line.empty()) state = State::kDone;
        } else {
          const std::string_view hex = line.substr(0, line.find(';'));
          const std::string digits = trim(hex);
          if (digits.empty() || digits.size() > 15 || digits.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            status = 400;
            break;
          }
          left = std::stoull(digits, nullptr, 16);
          if (static_cast<int64_t>(out.size()) + static_cast<int64_t>(left) > max) {
            status = 413;
            break;
          }
          state = left == 0 ? State::kTrailer : State::kData;
        }
      } else {  // kData
        const size_t take = std::min<uint64_t>(left, in.size() - at);
        if (take == 0) break;
        out.append(in, at, take);
        at += take;
        left -= take;
        if (left == 0) state = State::kDataEnd;
      }
    }
    in.erase(0, at);
    return status;
  }
  bool done() const { return state == State::kDone; }
};

// Undoes Content-Encoding gzip or deflate (zlib, or raw deflate as some clients send) into `out`,
// in pieces: stops with 413 as soon as `out` passes `max`, or passes 1 MiB at more than `ratio`
// decoded bytes per encoded byte read so far; 400 when the data is not what it says.
int inflate_body(const std::string& in, std::string& out, int64_t max, double ratio, bool raw_fallback) {
  for (int attempt = 0; attempt < (raw_fallback ? 2 : 1); ++attempt) {
    out.clear();
    out.reserve(static_cast<size_t>(max) + 1);  // address space only; pages are touched as written
    z_stream zs{};
    if (inflateInit2(&zs, attempt == 0 ? 15 + 32 : -15) != Z_OK) return 500;
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs.avail_in = static_cast<uInt>(in.size());
    char buf[64 << 10];
    int rc = Z_OK;
    int status = 0;
    while (true) {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      rc = inflate(&zs, Z_NO_FLUSH);
      const size_t produced = sizeof buf - zs.avail_out;
      const double consumed = static_cast<double>(in.size() - zs.avail_in);
      if (static_cast<int64_t>(out.size() + produced) > max ||
          (out.size() + produced > (1u << 20) && static_cast<double>(out.size() + produced) > ratio * std::max(1.0, consumed))) {
        status = 413;
        break;
      }
      out.append(buf, produced);
      if (rc == Z_STREAM_END) {
        if (zs.avail_in == 0) break;
        // Another gzip member follows (concatenated gzip is one body).
        if (inflateReset(&zs) != Z_OK) {
          status = 400;
          break;
        }
        continue;
      }
      if (rc != Z_OK) {
        status = 400;
        break;
      }
      if (zs.avail_in == 0 && zs.avail_out != 0) {  // input ended inside the stream
        status = 400;
        break;
      }
    }
    inflateEnd(&zs);
    if (status == 413) {
      out.clear();
      out.shrink_to_fit();
      return 413;
    }
    if (status == 0) return 0;
  }
  out.clear();
  return 400;
}

}  // namespace

struct HttpFront::Impl {
  // kDraining: a refusal was sent and our side shut down; what the client still sends is read and
  // dropped for a moment before the close, so that the close does not reset the connection before
  // the client has read the refusal (a "lingering close").
  enum class Phase { kHeaders, kBody, kDispatched, kDraining };

  struct Conn {
    int fd = -1;
    std::string addr;
    int port = 0;
    Phase phase = Phase::kHeaders;
    Clock::time_point deadline;
    uint32_t mask = 0;
    std::string in;
    bool started = false;  // some bytes of the current request arrived
    // The request being read.
    httplib::Request req;
    int64_t content_length = -1;
    bool chunked = false;
    ChunkDecoder chunks;
    std::string raw;       // the body as sent (chunks joined)
    std::string encoding;  // "", "gzip" or "deflate"
    bool keep_alive = true;
    // Output, shared with the worker answering.
    std::mutex mu;
    std::condition_variable room;
    std::string out;
    size_t sent = 0;
    bool response_done = false;
    bool close_after = false;
    bool draining = false;  // after the answer: shut down our side and drain, then close
    Clock::time_point last_progress;
    std::atomic<bool> closed{false};
  };
  using ConnPtr = std::shared_ptr<Conn>;

  struct Task {
    ConnPtr conn;
    Handler handler;
  };

  HttpFrontOptions opt;
  Router router;
  ErrorHandler on_error;
  HttpFrontStats stats;
  int listen_fd = -1, epoll_fd = -1, wake_fd = -1;
  std::atomic<bool> stopping{false};
  std::unordered_map<int, ConnPtr> conns;
  std::map<std::string, int> per_addr;
  // Work for the workers; connections with new output for the event thread.
  std::mutex task_mu;
  std::condition_variable task_cv;
  std::deque<Task> tasks;
  bool workers_stop = false;
  std::vector<std::thread> workers;
  std::mutex dirty_mu;
  std::vector<ConnPtr> dirty;
  static constexpr size_t kMaxPendingOut = 1 << 20;

  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
  }
  void set_mask(Conn& c, uint32_t mask) {
    if (c.mask == mask || c.fd < 0) return;
    epoll_event ev{};
    ev.events = mask;
    ev.data.fd = c.fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &ev);
    c.mask = mask;
  }
  void start_draining(const ConnPtr& c) {
    ::shutdown(c->fd, SHUT_WR);
    c->phase = Phase::kDraining;
    c->deadline = Clock::now() + std::chrono::seconds(2);
    set_mask(*c, EPOLLIN | EPOLLRDHUP);
  }
  void close_conn(const ConnPtr& c) {
    if (c->fd < 0) return;
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, nullptr);
    ::close(c->fd);
    conns.erase(c->fd);
    if (--per_addr[c->addr] <= 0) per_addr.erase(c->addr);
    --stats.open;
    {
      std::lock_guard lock(c->mu);
      c->closed = true;
      c->fd = -1;
    }
    c->room.notify_all();
  }

  void accept_all() {
    while (true) {
      sockaddr_storage sa{};
      socklen_t len = sizeof sa;
      int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        return;  // EAGAIN, or out of descriptors (the next round tries again)
      }
      char host[INET6_ADDRSTRLEN] = {};
      int port = 0;
      if (sa.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&sa);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
      } else if (sa.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&sa);
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
      }
      std::string addr = host;
      if (stopping || stats.open >= opt.max_connections || per_addr[addr] >= opt.max_connections_per_client) {
        ++stats.rejected_connections;
        if (per_addr[addr] == 0) per_addr.erase(addr);
        ::close(fd);
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_shared<Conn>();
      c->fd = fd;
      c->addr = addr;
      c->port = port;
      c->deadline = Clock::now() + seconds(opt.header_timeout_s);
      c->mask = EPOLLIN | EPOLLRDHUP;
      epoll_event ev{};
      ev.events = c->mask;
      ev.data.fd = fd;
      epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
      conns[fd] = c;
      ++per_addr[addr];
      ++stats.open;
      ++stats.accepted;
    }
  }

  // Reads what has arrived; then parses as far as it goes.
  void on_readable(const ConnPtr& c) {
    char buf[64 << 10];
    if (c->phase == Phase::kDraining) {
      while (true) {
        ssize_t n = ::read(c->fd, buf, sizeof buf);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        close_conn(c);
        return;
      }
    }
    // At most 1 MiB per wake-up; a chunked body is parsed every 128 KiB, so that what is read waits
    // in `in` only briefly beside the body it is decoded into (a chunked bomb's peak stays near
    // --max-body).
    const size_t round = c->phase == Phase::kBody && c->chunked ? (128u << 10) : (1u << 20);
    size_t got = 0;
    while (got < round) {
      ssize_t n = ::read(c->fd, buf, sizeof buf);
      if (n > 0) {
        c->in.append(buf, static_cast<size_t>(n));
        got += static_cast<size_t>(n);
        if (c->phase == Phase::kHeaders && c->in.size() > static_cast<size_t>(opt.max_header_bytes) + sizeof buf) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      close_conn(c);  // the peer closed, or the connection failed
      return;
    }
    parse(c);
  }

  // Queues a response the layer writes itself, and closes the connection after it.
  void refuse(const ConnPtr& c, int status) {
    httplib::Response res;
    res.status = status;
    if (on_error) on_error(c->req, res);
    if (status == 413) {  // what was read of the body goes now, not when the connection has drained
      ++stats.bodies_too_large;
      std::string().swap(c->raw);
      std::string().swap(c->req.body);
      std::string().swap(c->in);
      return_free_memory();
    }
    c->phase = Phase::kDispatched;
    c->keep_alive = false;
    set_mask(*c, EPOLLRDHUP);
    {
      std::lock_guard lock(c->mu);
      c->out += head(res, res.body.size(), false, false) + res.body;
      c->response_done = true;
      c->close_after = true;
      c->draining = true;
      c->last_progress = Clock::now();
    }
    flush(c);
  }

  static std::string head(const httplib::Response& res, size_t length, bool chunked, bool keep_alive) {
    std::string h = fmt::format("HTTP/1.1 {} {}\r\n", res.status, reason_phrase(res.status));
    bool has_type = false;
    for (const auto& [k, v] : res.headers) {
      if (lower(k) == "content-length" || lower(k) == "transfer-encoding" || lower(k) == "connection") continue;
      if (lower(k) == "content-type") has_type = true;
      if (k.find_first_of("\r\n") != std::string::npos || v.find_first_of("\r\n") != std::string::npos) continue;
      h += k + ": " + v + "\r\n";
    }
    if (!has_type && (chunked || length > 0)) h += "Content-Type: text/plain\r\n";
    h += chunked ? std::string("Transfer-Encoding: chunked\r\n") : fmt::format("Content-Length: {}\r\n", length);
    h += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    return h;
  }

  void parse(const ConnPtr& c) {
    if (c->fd < 0 || c->phase == Phase::kDispatched || c->phase == Phase::kDraining) return;
    if (c->phase == Phase::kHeaders) {
      // Empty lines before a request line are ignored (RFC 9112 §2.2).
      size_t lead = 0;
      while (lead + 1 < c->in.size() && c->in[lead] == '\r' && c->in[lead + 1] == '\n') lead += 2;
      if (lead) c->in.erase(0, lead);
      if (!c->in.empty() && !c->started) {
        c->started = true;
        c->deadline = Clock::now() + seconds(opt.header_timeout_s);  // from the first byte of a kept-alive request
      }
      const size_t end = c->in.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (c->in.size() > static_cast<size_t>(opt.max_header_bytes)) refuse(c, 431);
        return;
      }
      if (end + 4 > static_cast<size_t>(opt.max_header_bytes)) return refuse(c, 431);
      const int status = read_head(*c, std::string_view(c->in.data(), end));
      c->in.erase(0, end + 4);
      if (status != 0) return refuse(c, status);
      if (lower(c->req.get_header_value("Expect")) == "100-continue" && (c->chunked || c->content_length > 0)) {
        std::lock_guard lock(c->mu);
        c->out += "HTTP/1.1 100 Continue\r\n\r\n";
      }
      c->phase = Phase::kBody;
      c->deadline = Clock::now() + seconds(opt.body_timeout_s);
      // Room for the whole body at once: a buffer grown by doubling would touch up to twice it.
      if (c->content_length > 0) c->in.reserve(static_cast<size_t>(c->content_length) + (64 << 10));
      if (c->chunked) c->raw.reserve(static_cast<size_t>(opt.max_body));  // address space; pages as written
      flush(c);
      if (c->fd < 0) return;
    }
    // The body.
    if (c->chunked) {
      int st = c->chunks.feed(c->in, c->raw, opt.max_body);
      if (st != 0) return refuse(c, st);
      if (!c->chunks.done()) return;
    } else if (c->content_length > 0) {
      if (static_cast<int64_t>(c->in.size()) < c->content_length) return;
      if (static_cast<int64_t>(c->in.size()) == c->content_length) {
        c->raw.swap(c->in);  // the usual case: nothing pipelined behind the body, no copy
        c->in.clear();
      } else {
        c->raw = c->in.substr(0, static_cast<size_t>(c->content_length));
        c->in.erase(0, static_cast<size_t>(c->content_length));
      }
    }
    if (c->encoding.empty()) {
      c->req.body.swap(c->raw);
    } else {
      const int st = inflate_body(c->raw, c->req.body, opt.max_body, opt.max_inflate_ratio, c->encoding == "deflate");
      if (st != 0) return refuse(c, st);
    }
    c->raw.clear();
    c->raw.shrink_to_fit();
    dispatch(c);
  }

  // Request line and headers; 0, or the status to refuse with.
  int read_head(Conn& c, std::string_view text) {
    c.req = httplib::Request();
    c.content_length = -1;
    c.chunked = false;
    c.chunks = ChunkDecoder();
    c.encoding.clear();
    c.req.remote_addr = c.addr;
    c.req.remote_port = c.port;
    size_t eol = text.find("\r\n");
    std::string_view line = text.substr(0, eol);
    const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return 400;
    c.req.method = std::string(line.substr(0, sp1));
    c.req.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
    c.req.version = std::string(line.substr(sp2 + 1));
    if (c.req.version != "HTTP/1.1" && c.req.version != "HTTP/1.0") return c.req.version.rfind("HTTP/", 0) == 0 ? 505 : 400;
    if (c.req.method.empty() || c.req.target.empty() || c.req.target[0] != '/') return 400;
    c.req.path = c.req.target.substr(0, c.req.target.find('?'));
    std::string_view rest = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 2);
    while (!rest.empty()) {
      size_t e = rest.find("\r\n");
      std::string_view h = rest.substr(0, e);
      rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
      if (h.empty()) continue;
      if (h[0] == ' ' || h[0] == '\t') return 400;  // obsolete line folding
      const size_t colon = h.find(':');
      if (colon == std::string_view::npos || colon == 0) return 400;
      const std::string name(h.substr(0, colon));
      if (name.find_first_of(" \t") != std::string::npos) return 400;
      c.req.headers.emplace(name, trim(h.substr(colon + 1)));
    }
    // Framing: chunked or a length, never both (request smuggling), one length only.
    const size_t lengths = c.req.get_header_value_count("Content-Length");
    if (c.req.has_header("Transfer-Encoding")) {
      if (lengths > 0) return 400;
      if (lower(c.req.get_header_value("Transfer-Encoding")) != "chunked" ||
          c.req.get_header_value_count("Transfer-Encoding") != 1)
        return 501;
      c.chunked = true;
    } else if (lengths > 0) {
      std::string v = c.req.get_header_value("Content-Length");
      for (size_t i = 1; i < lengths; ++i)
        if (c.req.get_header_value("Content-Length", i) != v) return 400;
      if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos) return 400;
      c.content_length = std::stoll(v);
      if (c.content_length > opt.max_body) return 413;
    }
    const std::string enc = lower(c.req.get_header_value("Content-Encoding"));
    if (enc == "gzip" || enc == "x-gzip") c.encoding = "gzip";
    else if (enc == "deflate") c.encoding = "deflate";
    else if (!enc.empty() && enc != "identity") return 415;
    const std::string conn = lower(c.req.get_header_value("Connection"));
    c.keep_alive = c.req.version == "HTTP/1.1" ? conn != "close" : conn == "keep-alive";
    return 0;
  }

  void dispatch(const ConnPtr& c) {
    c->phase = Phase::kDispatched;
    set_mask(*c, EPOLLRDHUP);  // no reading until the answer is out; a hang-up is still seen
    {
      std::lock_guard lock(c->mu);
      c->response_done = false;
      c->close_after = !c->keep_alive;
      c->last_progress = Clock::now();
    }
    bool inline_route = false;
    Handler h = router ? router(c->req, inline_route) : nullptr;
    if (h && inline_route) {
      respond(c, h);
      flush(c);
      return;
    }
    if (!h) {
      httplib::Response res;
      res.status = 404;
      if (on_error) on_error(c->req, res);
      queue_whole(c, res);
      flush(c);
      return;
    }
    {
      std::lock_guard lock(task_mu);
      tasks.push_back({c, std::move(h)});
    }
    task_cv.notify_one();
  }

  // Appends bytes to the connection's output, waiting while more than kMaxPendingOut is unsent;
  // false once the connection is gone (or the client stopped reading for write_timeout).
  bool write_out(const ConnPtr& c, std::string_view bytes) {
    {
      std::unique_lock lock(c->mu);
      c->room.wait_for(lock, seconds(opt.write_timeout_s), [&] { return c->closed || c->out.size() - c->sent < kMaxPendingOut; });
      if (c->closed || c->out.size() - c->sent >= kMaxPendingOut) return false;
      c->out.append(bytes);
    }
    mark_dirty(c);
    return true;
  }
  void mark_dirty(const ConnPtr& c) {
    {
      std::lock_guard lock(dirty_mu);
      dirty.push_back(c);
    }
    wake();
  }

  void queue_whole(const ConnPtr& c, httplib::Response& res) {
    if (res.status < 0) res.status = 200;
    std::lock_guard lock(c->mu);
    c->out += head(res, res.body.size(), false, !c->close_after) + res.body;
    c->response_done = true;
  }

  // Runs the handler and queues its answer (whole, or streamed in chunks as the handler writes).
  void respond(const ConnPtr& c, const Handler& h) {
    httplib::Response res;
    try {
      h(c->req, res);
    } catch (const std::exception& e) {
      res = httplib::Response();
      res.status = 500;
      res.set_content(fmt::format(R"({{"error": {{"message": "internal error", "type": "server_error"}}}})"),
                      "application/json");
    }
    if (!res.content_provider_) {
      queue_whole(c, res);
      return;
    }
    if (res.status < 0) res.status = 200;
    // Streamed: chunked transfer encoding; the provider is called until it says done or fails.
    bool keep_alive = false;
    {
      std::lock_guard lock(c->mu);
      keep_alive = !c->close_after;
    }
    bool done = false, ok = write_out(c, head(res, 0, true, keep_alive));
    httplib::DataSink sink;
    sink.write = [&](const char* d, size_t n) {
      if (!ok) return false;
      if (n == 0) return true;
      ok = write_out(c, fmt::format("{:x}\r\n", n) + std::string(d, n) + "\r\n");
      return ok;
    };
    sink.done = [&] {
      if (ok && !done) ok = write_out(c, "0\r\n\r\n");
      done = true;
    };
    sink.is_writable = [&] { return ok && !c->closed; };
    size_t offset = 0;
    while (ok && !done)
      if (!res.content_provider_(offset, 0, sink)) break;
    res.content_provider_success_ = done && ok;
    std::lock_guard lock(c->mu);
    if (!done || !ok) c->close_after = true;  // a stream cut short cannot be ended properly
    c->response_done = true;
  }

  void worker() {
    while (true) {
      Task t;
      {
        std::unique_lock lock(task_mu);
        task_cv.wait(lock, [&] { return workers_stop || !tasks.empty(); });
        if (tasks.empty()) return;
        t = std::move(tasks.front());
        tasks.pop_front();
      }
      if (!t.conn->closed) respond(t.conn, t.handler);
      else {
        std::lock_guard lock(t.conn->mu);
        t.conn->response_done = true;
      }
      mark_dirty(t.conn);
    }
  }

  // Writes what is pending; when a response is out, the connection waits for its next request
  // or closes.
  void flush(const ConnPtr& c) {
    if (c->fd < 0) return;
    bool finished = false, close_now = false, pending = false, drain = false;
    {
      std::lock_guard lock(c->mu);
      while (c->sent < c->out.size()) {
        ssize_t n = ::send(c->fd, c->out.data() + c->sent, c->out.size() - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
          c->sent += static_cast<size_t>(n);
          c->last_progress = Clock::now();
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        close_now = true;
        break;
      }
      if (c->sent == c->out.size()) {
        c->out.clear();
        c->sent = 0;
      } else if (c->sent > (1u << 20)) {
        c->out.erase(0, c->sent);
        c->sent = 0;
      }
      pending = c->sent < c->out.size();
      finished = !pending && c->response_done && c->phase == Phase::kDispatched;
      if (finished) {
        drain = !close_now && c->draining && !stopping;
        close_now = close_now || ((c->close_after || stopping) && !drain);
      }
    }
    c->room.notify_all();
    if (close_now) return close_conn(c);
    if (drain) return start_draining(c);
    const uint32_t base = c->phase == Phase::kDispatched && !finished ? EPOLLRDHUP : (EPOLLIN | EPOLLRDHUP);
    set_mask(*c, base | (pending ? static_cast<uint32_t>(EPOLLOUT) : 0u));
    if (finished) {  // kept alive: the next request
      c->phase = Phase::kHeaders;
      c->started = false;
      c->req = httplib::Request();
      c->deadline = Clock::now() + seconds(opt.idle_timeout_s);
      {
        std::lock_guard lock(c->mu);
        c->response_done = false;
      }
      if (!c->in.empty()) parse(c);
    }
  }

  void sweep(Clock::time_point now) {
    std::vector<ConnPtr> expired, close_conn_later;
    for (auto& [fd, c] : conns) {
      if (c->phase == Phase::kDraining) {
        if (now > c->deadline) close_conn_later.push_back(c);
      } else if (c->phase != Phase::kDispatched) {
        if (now > c->deadline) expired.push_back(c);
      } else {
        std::lock_guard lock(c->mu);
        if (c->sent < c->out.size() && now - c->last_progress > seconds(opt.write_timeout_s)) expired.push_back(c);
      }
    }
    for (auto& c : close_conn_later) close_conn(c);
    for (auto& c : expired) {
      ++stats.timed_out;
      if (c->phase == Phase::kDispatched || !c->started) {
        close_conn(c);  // an idle kept-alive connection, or a client that stopped reading
      } else {
        refuse(c, 408);  // a request that did not arrive in time (then drained, closed within 2 s)
      }
    }
  }

  bool in_flight() {
    for (auto& [fd, c] : conns)
      if (c->phase == Phase::kDispatched) return true;
    std::lock_guard lock(task_mu);
    return !tasks.empty();
  }

  void loop() {
    epoll_event events[256];
    auto last_sweep = Clock::now();
    bool listening = true;
    while (true) {
      if (stopping && listening) {
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
        ::close(listen_fd);
        listen_fd = -1;
        listening = false;
        // Connections without a request in flight are closed; the others finish.
        std::vector<ConnPtr> idle;
        for (auto& [fd, c] : conns)
          if (c->phase != Phase::kDispatched) idle.push_back(c);
        for (auto& c : idle) close_conn(c);
      }
      if (stopping && !in_flight()) break;
      const int n = epoll_wait(epoll_fd, events, 256, 50);
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == listen_fd) {
          accept_all();
          continue;
        }
        if (fd == wake_fd) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(wake_fd, &v, sizeof v);
          std::vector<ConnPtr> ready;
          {
            std::lock_guard lock(dirty_mu);
            ready.swap(dirty);
          }
          for (auto& c : ready) flush(c);
          continue;
        }
        auto it = conns.find(fd);
        if (it == conns.end()) continue;
        ConnPtr c = it->second;
        const uint32_t ev = events[i].events;
        if (ev & (EPOLLERR | EPOLLHUP)) {
          close_conn(c);
          continue;
        }
        if (ev & EPOLLOUT) flush(c);
        if (c->fd < 0) continue;
        if (ev & EPOLLIN) {
          on_readable(c);
        } else if (ev & EPOLLRDHUP) {
          // The peer will send nothing more. While an answer is being made the client may still be
          // reading (a half-close after the request): the connection is closed once the answer is out.
          if (c->phase == Phase::kDispatched) {
            std::lock_guard lock(c->mu);
            c->close_after = true;
            set_mask(*c, c->mask & ~static_cast<uint32_t>(EPOLLRDHUP));
          } else {
            on_readable(c);
          }
        }
      }
      const auto now = Clock::now();
      if (now - last_sweep > std::chrono::milliseconds(100)) {
        sweep(now);
        last_sweep = now;
      }
    }
    std::vector<ConnPtr> all;
    for (auto& [fd, c] : conns) all.push_back(c);
    for (auto& c : all) close_conn(c);
  }
};

HttpFront::HttpFront(HttpFrontOptions options, Router router, ErrorHandler on_error) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  impl_->router = std::move(router);
  impl_->on_error = std::move(on_error);
}

HttpFront::~HttpFront() {
  auto& im = *impl_;
  {
    std::lock_guard lock(im.task_mu);
    im.workers_stop = true;
  }
  im.task_cv.notify_all();
  for (auto& t : im.workers)
    if (t.joinable()) t.join();
  for (auto& [fd, c] : im.conns) ::close(fd);
  if (im.listen_fd >= 0) ::close(im.listen_fd);
  if (im.epoll_fd >= 0) ::close(im.epoll_fd);
  if (im.wake_fd >= 0) ::close(im.wake_fd);
}

int HttpFront::bind() {
  auto& im = *impl_;
  // Connections cost descriptors: take the hard limit (a default soft limit of 1024 would cap
  // them well below max_connections).
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  const std::string port = std::to_string(im.opt.port);
  if (getaddrinfo(im.opt.host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    fail("cannot listen on {}:{}: not an address here", im.opt.host, im.opt.port);
  int fd = -1;
  std::string why;
  for (auto* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) break;
    why = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) fail("cannot listen on {}:{} ({})", im.opt.host, im.opt.port, why.empty() ? "no usable address" : why);
  im.listen_fd = fd;
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  const int bound = sa.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port)
                                             : ntohs(reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
  im.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  im.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (im.epoll_fd < 0 || im.wake_fd < 0) fail("cannot set up the server's event loop: {}", std::strerror(errno));
  for (int f : {im.listen_fd, im.wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = f;
    epoll_ctl(im.epoll_fd, EPOLL_CTL_ADD, f, &ev);
  }
  return bound;
}

void HttpFront::run() {
  auto& im = *impl_;
  if (im.listen_fd < 0 && !im.stopping) bind();
  for (int i = 0; i < std::max(1, im.opt.workers); ++i) im.workers.emplace_back([&im] { im.worker(); });
  im.loop();
  {
    std::lock_guard lock(im.task_mu);
    im.workers_stop = true;
  }
  im.task_cv.notify_all();
  for (auto& t : im.workers) t.join();
  im.workers.clear();
}

void HttpFront::stop() {
  impl_->stopping = true;
  if (impl_->wake_fd >= 0) impl_->wake();
}

const HttpFrontStats& HttpFront::stats() const { return impl_->stats; }

}  // namespace lineage::serve
