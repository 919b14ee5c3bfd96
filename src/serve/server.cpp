// `lineage serve`: routes, authentication, quotas, logging and streaming around the Engine.
// See include/lineage/serve/server.h.
#include "lineage/core/json.h"
#include "lineage/core/device.h"
#include "lineage/serve/server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <signal.h>
#include <sodium.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>

#include "lineage/core/error.h"
#include "lineage/core/hash.h"
#include "lineage/serve/keys.h"
#include "lineage/serve/request_log.h"
#include "lineage/protect/watermark.h"
#include "serve/completion.h"
#include "serve/engine.h"
#include "serve/openai.h"

namespace lineage::serve {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// What a request did, for the log and the quota.
struct Record {
  LogEntry entry;
  Clock::time_point start = Clock::now();
};

}  // namespace

struct Server::Impl {
  ServeOptions opt;
  std::string model_id;
  std::unique_ptr<Engine> engine;
  KeyStore keys;
  std::unique_ptr<RequestLog> log;
  std::mutex usage_mu;
  std::map<std::string, int64_t> usage;
  httplib::Server http;
  int port = 0;
  std::string template_name;

  void setup_routes();
  void finish(Record& r, int status, const std::string& error = "");
  std::string authorize(const httplib::Request& req);  // key id ("" without keys); throws ApiError
  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(error_json(e.status, e.what(), e.type, e.param, e.code)), "application/json");
    if (e.status == 503) res.set_header("Retry-After", "1");
  }
};

void Server::Impl::finish(Record& r, int status, const std::string& error) {
  r.entry.status = status;
  r.entry.error = error;
  r.entry.latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - r.start).count();
  if (!r.entry.key_id.empty()) {
    std::lock_guard lock(usage_mu);
    usage[r.entry.key_id] += r.entry.prompt_tokens + r.entry.completion_tokens;
  }
  if (log) {
    try {
      log->write(r.entry);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lineage serve: %s\n", e.what());
    }
  }
}

std::string Server::Impl::authorize(const httplib::Request& req) {
  if (keys.empty()) return "";
  auto h = req.get_header_value("Authorization");
  if (h.empty())
    throw ApiError(401, "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
                   "invalid_request_error");
  if (h.rfind("Bearer ", 0) != 0)
    throw ApiError(401, "The Authorization header must be 'Bearer YOUR_KEY'.", "invalid_request_error", "", "invalid_api_key");
  auto key = keys.find(std::string_view(h).substr(7));
  if (!key) throw ApiError(401, "Incorrect API key provided.", "invalid_request_error", "", "invalid_api_key");
  if (key->quota_tokens > 0) {
    std::lock_guard lock(usage_mu);
    if (usage[key->id] >= key->quota_tokens)
      throw ApiError(429, fmt::format("You exceeded your quota of {} tokens.", key->quota_tokens), "insufficient_quota", "",
                     "insufficient_quota");
  }
  return key->id;
}

// Parse, authorize, queue, answer; every outcome is logged with its status (finish).
void Server::Impl::completions(const httplib::Request& req, httplib::Response& res, bool chat) {
  Record rec;
  rec.entry.unix_ms = now_ms();
  rec.entry.client = req.remote_addr;
  rec.entry.user_agent = req.get_header_value("User-Agent");
  rec.entry.endpoint = req.path;
  rec.entry.log_text = opt.log_text;
  try {
    rec.entry.key_id = authorize(req);
    auto call = read_call(req.body, chat, engine->tokenizer(), model_id, engine->context_length(), rec.entry);
    submit(call, *engine);
    if (call->p.stream) {
      stream(call, res, rec.entry, [this, start = rec.start](LogEntry& entry, int status, const std::string& error) {
        Record done{entry, start};
        finish(done, status, error);
      });
      return;
    }
    res.set_content(dump(answer(*call, rec.entry)), "application/json");
    finish(rec, 200);
  } catch (const ApiError& e) {
    send_error(res, e);
    finish(rec, e.status, e.what());
  } catch (const Engine::Overloaded& e) {
    send_error(res, ApiError(503, fmt::format("The server is overloaded ({}); retry shortly.", e.what()), "server_error", "", "overloaded"));
    finish(rec, 503, e.what());
  } catch (const Error& e) {
    send_error(res, ApiError(400, e.what(), "invalid_request_error"));
    finish(rec, 400, e.what());
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, fmt::format("The server had an error: {}", e.what()), "server_error"));
    finish(rec, 500, e.what());
  }
}

void Server::Impl::setup_routes() {
  http.new_task_queue = [n = opt.threads] { return new httplib::ThreadPool(static_cast<size_t>(std::max(2, n))); };
  http.set_payload_max_length(static_cast<size_t>(opt.max_body_bytes));
  http.set_keep_alive_max_count(1000);
  http.set_read_timeout(opt.read_timeout_s, 0);  // a sender slower than this loses its connection
  http.set_write_timeout(60, 0);
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"status", "ok"}, {"model", model_id}, {"waiting", engine->waiting()}}), "application/json");
  });
  // The one model this server answers as: the object of the list and of /v1/models/{id} (the
  // openai SDKs' models.retrieve); an id may hold '/' (org/name), as OpenAI's and vLLM's do.
  auto model_object = [this] {
    auto& info = engine->model().info();
    return json{{"id", model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "lineage"},
                {"lineage", {{"tokenizer_sha256", info.tokenizer_sha256}, {"vocab_size", info.vocab_size},
                             {"context_length", engine->context_length()}, {"parameters", info.parameters},
                             {"sha256", info.sha256}, {"chat_template", template_name}}}};
  };
  http.Get("/v1/models", [this, model_object](const httplib::Request& req, httplib::Response& res) {
    try {
      authorize(req);
      res.set_content(dump({{"object", "list"}, {"data", json::array({model_object()})}}), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  http.Get(R"(/v1/models/(.+))", [this, model_object](const httplib::Request& req, httplib::Response& res) {
    try {
      authorize(req);
      const std::string id = req.matches[1];
      if (id != model_id)
        throw ApiError(404, fmt::format("The model '{}' does not exist (this server serves '{}')", id, model_id),
                       "invalid_request_error", "model", "model_not_found");
      res.set_content(dump(model_object()), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, false); });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, true); });
  // Statuses httplib sets itself (404 no route, 413 body too large, 400 bad HTTP) get OpenAI's shape too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg, code;
    if (res.status == 404) msg = fmt::format("Invalid URL ({} {})", req.method, req.path), code = "unknown_url";
    else if (res.status == 413) msg = fmt::format("The request body is larger than this server accepts ({} bytes).", opt.max_body_bytes);
    else if (res.status == 405) msg = fmt::format("Method {} is not allowed on {}", req.method, req.path);
    else msg = fmt::format("HTTP {}", res.status);
    res.set_content(dump(error_json(res.status, msg, "invalid_request_error", "", code)), "application/json");
    if (log && (req.path.rfind("/v1/", 0) == 0)) {
      Record r;
      r.entry.unix_ms = now_ms();
      r.entry.client = req.remote_addr;
      r.entry.user_agent = req.get_header_value("User-Agent");
      r.entry.endpoint = req.path;
      r.entry.log_text = false;
      finish(r, res.status, msg);
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
}

Server::Server(const ServeOptions& options) : impl_(std::make_unique<Impl>()) {
  auto& im = *impl_;
  im.opt = options;
  if (sodium_init() < 0) fail("libsodium could not be initialised");
  if (options.model.empty()) fail("no model given (--model M)");
  if (!std::filesystem::exists(options.model)) fail("model '{}' does not exist", options.model);
  im.model_id = options.model_id;
  if (im.model_id.empty()) {
    std::filesystem::path p(options.model);
    if (p.filename().empty()) p = p.parent_path();
    im.model_id = std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
  }
  if (!options.api_keys.empty()) {
    im.keys = KeyStore::load(options.api_keys);
    if (im.keys.empty()) fail("API key file '{}' holds no keys (add one with --add-key ID)", options.api_keys);
  }
  if (!options.log.empty()) {
    im.log = std::make_unique<RequestLog>(options.log);
    im.usage = im.log->usage_by_key();
  }
  im.engine = std::make_unique<Engine>(options.model, options.tokenizer, parse_device(options.device),
                                       parse_dtype(options.dtype), options.max_batch, options.max_queue);
  if (!options.watermark_key.empty()) {
    protect::WatermarkParams wp{options.watermark_gamma, options.watermark_delta, options.watermark_context};
    auto wm = std::make_shared<const protect::Watermark>(protect::WatermarkKey::read(options.watermark_key), wp);
    if (!options.quiet)
      std::fprintf(stderr, "watermark on: key %s, gamma %g, delta %g, h %d\n", wm->fingerprint().c_str(), wp.gamma,
                   wp.delta, wp.context);
    im.engine->set_watermark(std::move(wm));
  }
  int32_t eot = -1;
  try {
    chat_prompt({{"messages", {{{"role", "user"}, {"content", "x"}}}}}, im.engine->tokenizer(), &eot, &im.template_name);
  } catch (...) {
    im.template_name = "none";
  }
  im.setup_routes();
}

Server::~Server() {
  stop();
  if (impl_->engine) impl_->engine->shutdown();
}

int Server::bind() {
  auto& im = *impl_;
  // cpp-httplib listens with a backlog of 5: 64 clients connecting at once overflowed the accept
  // queue and ~1% of their requests failed to read an answer. The listening socket is captured
  // here (with httplib's own default option) and its backlog raised after the bind.
  int listen_fd = -1;
  im.http.set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
    listen_fd = sock;
  });
  if (im.opt.port == 0) {
    im.port = im.http.bind_to_any_port(im.opt.host);
    if (im.port < 0) fail("cannot listen on {} (any port)", im.opt.host);
  } else {
    if (!im.http.bind_to_port(im.opt.host, im.opt.port)) fail("cannot listen on {}:{} (in use, or not an address here)", im.opt.host, im.opt.port);
    im.port = im.opt.port;
  }
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  return im.port;
}

void Server::run() { impl_->http.listen_after_bind(); }
void Server::stop() { impl_->http.stop(); }
const std::string& Server::model_id() const { return impl_->model_id; }

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_stop_signal(int sig) { g_signal = sig; }
}  // namespace

void run_serve(const ServeOptions& options) {
  // SIGTERM and SIGINT set a flag (whichever thread they land on, libtorch's pool included); a
  // watcher stops the server, which finishes the requests it is answering.
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  Server server(options);
  int port = server.bind();
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done && g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (g_signal != 0) {
      if (!options.quiet)
        std::fprintf(stderr, "lineage serve: %s, finishing running requests\n", g_signal == SIGTERM ? "SIGTERM" : "SIGINT");
      server.stop();
    }
  });
  std::printf("listening on http://%s:%d/v1 (model '%s')\n", options.host.c_str(), port, server.model_id().c_str());
  std::fflush(stdout);
  server.run();
  done = true;
  watcher.join();
  if (!options.quiet) std::fprintf(stderr, "lineage serve: stopped\n");
}

}  // namespace lineage::serve
