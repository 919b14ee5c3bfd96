// `lineage serve`: routes, authentication, quotas, logging and streaming around the Engine.
// See include/lineage/serve/server.h.
#include "lineage/core/json.h"
#include "lineage/core/device.h"
#include "lineage/serve/server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <signal.h>
#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <cmath>
#include <map>
#include <optional>

#include "lineage/core/error.h"
#include "lineage/core/hash.h"
#include "lineage/serve/keys.h"
#include "lineage/serve/request_log.h"
#include "lineage/protect/antidistill.h"
#include "lineage/protect/watermark.h"
#include "serve/completion.h"
#include "serve/engine.h"
#include "serve/http_front.h"
#include "serve/metrics.h"
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
  int64_t reserved = 0;    // tokens held against the key's quota while the request runs
  int64_t tpm_charged = 0;  // tokens taken from the key's per-minute bucket at the start
  std::shared_ptr<CompletionCall> call;  // for time to first token (none before the body was read)
  std::string error_code;                // the ApiError's code when refused (insufficient_quota, ...)
};

// The endpoint as a metrics label: the routes by name, anything else as "other" (a label per
// unknown path would let clients grow /metrics without bound).
std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"})
    if (path == known) return known;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

bool is_loopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "::1" || addr.rfind("::ffff:127.", 0) == 0;
}

// A token bucket of `capacity` a minute, refilled continuously (as OpenAI's limits replenish);
// full when first used.
struct Bucket {
  double level = -1;
  Clock::time_point at;
  double refill(double capacity, Clock::time_point now) {
    if (level < 0) level = capacity;
    else level = std::min(capacity, level + std::chrono::duration<double>(now - at).count() * capacity / 60.0);
    at = now;
    return level;
  }
};

// A key's state while the server runs: rate-limit buckets and the tokens reserved by running requests.
struct KeyState {
  Bucket requests, tokens;
  int64_t reserved = 0;
};

std::string seconds_text(double s) { return fmt::format("{:.3g}s", std::max(0.0, s)); }

}  // namespace

struct Server::Impl {
  ServeOptions opt;
  std::string model_id;
  std::unique_ptr<Engine> engine;
  KeyStore keys;
  std::unique_ptr<RequestLog> log;
  std::mutex usage_mu;
  std::map<std::string, int64_t> usage;   // tokens used over the key's life (from the log at start)
  std::map<std::string, KeyState> key_state;
  Metrics metrics;
  std::unique_ptr<HttpFront> http;
  struct Route {
    std::string method, path;
    bool prefix = false;      // path is a prefix ("/v1/models/" + id)
    bool inline_route = false;  // quick: runs on the event thread, answered even when every worker is busy
    HttpFront::Handler handler;
  };
  std::vector<Route> routes;
  void route(std::string method, std::string path, bool prefix, bool inline_route, HttpFront::Handler h) {
    routes.push_back({std::move(method), std::move(path), prefix, inline_route, std::move(h)});
  }
  HttpFront::Handler find_route(const httplib::Request& req, bool& inline_route);
  void on_error(const httplib::Request& req, httplib::Response& res);
  int port = 0;
  std::string template_name;
  size_t max_token_bytes = 0;  // the longest token's text, for refusing prompts too long to tokenize

  void setup_routes();
  void finish(Record& r, int status, const std::string& error = "");
  std::string authorize(const httplib::Request& req);  // key id ("" without keys); throws ApiError
  std::optional<ApiKey> authenticate(const httplib::Request& req);  // the key (none without keys); throws 401
  std::optional<ApiKey> authorize_key(const httplib::Request& req);  // authenticate, and 429 once the quota is spent
  // Per-minute request limit: takes one request from the key's bucket or throws 429 with Retry-After.
  void admit_request(const ApiKey& key, httplib::Response& res);
  // Reserves the call's token bound against the quota and the per-minute token bucket, or throws
  // 429; concurrent requests see each other's reservations. Settled in finish().
  void reserve_tokens(const ApiKey& key, int64_t bound, Record& rec, httplib::Response& res);
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
  {
    double ttft = -1, per_token = -1;
    if (r.call) {
      const int64_t ns = r.call->first_token_ns.load();
      if (ns >= 0) {
        ttft = std::chrono::duration<double>(r.call->started - r.start).count() + static_cast<double>(ns) * 1e-9;
        if (r.entry.completion_tokens > 1)
          per_token = std::max(0.0, r.entry.latency_ms / 1000.0 - ttft) / static_cast<double>(r.entry.completion_tokens - 1);
      }
    }
    metrics.request(endpoint_label(r.entry.endpoint), status, r.entry.key_id, r.entry.prompt_tokens,
                    r.entry.completion_tokens, r.entry.latency_ms / 1000.0, ttft, per_token);
    if (status == 429) metrics.rejected(r.error_code == "insufficient_quota" ? "quota" : "rate_limit");
    else if (status == 503) metrics.rejected("overloaded");
    else if (status == 413) metrics.rejected("body_too_large");
    else if (status == 401) metrics.rejected("unauthorized");
  }
  if (!r.entry.key_id.empty()) {
    std::lock_guard lock(usage_mu);
    const int64_t used = r.entry.prompt_tokens + r.entry.completion_tokens;
    usage[r.entry.key_id] += used;
    auto& ks = key_state[r.entry.key_id];
    ks.reserved -= r.reserved;
    // The per-minute bucket took the bound at the start; what the request did not use goes back.
    if (r.tpm_charged > used) ks.tokens.level += static_cast<double>(r.tpm_charged - used);
    r.reserved = r.tpm_charged = 0;
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
  auto key = authorize_key(req);
  return key ? key->id : "";
}

std::optional<ApiKey> Server::Impl::authorize_key(const httplib::Request& req) {
  auto key = authenticate(req);
  if (!key) return key;
  if (key->quota_tokens > 0) {
    std::lock_guard lock(usage_mu);
    if (usage[key->id] >= key->quota_tokens)
      throw ApiError(429, fmt::format("You exceeded your quota of {} tokens.", key->quota_tokens), "insufficient_quota", "",
                     "insufficient_quota");
  }
  return key;
}

void Server::Impl::admit_request(const ApiKey& key, httplib::Response& res) {
  if (key.rpm <= 0) return;
  std::lock_guard lock(usage_mu);
  auto& b = key_state[key.id].requests;
  const double cap = static_cast<double>(key.rpm), level = b.refill(cap, Clock::now());
  res.set_header("x-ratelimit-limit-requests", std::to_string(key.rpm));
  if (level < 1.0) {
    const double wait = (1.0 - level) * 60.0 / cap;
    res.set_header("x-ratelimit-remaining-requests", "0");
    res.set_header("x-ratelimit-reset-requests", seconds_text(wait));
    res.set_header("Retry-After", std::to_string(static_cast<int64_t>(std::ceil(wait))));
    throw ApiError(429, fmt::format("Rate limit reached for requests: limit {} per minute. Please try again in {}.", key.rpm,
                                    seconds_text(wait)),
                   "requests", "", "rate_limit_exceeded");
  }
  b.level -= 1.0;
  res.set_header("x-ratelimit-remaining-requests", std::to_string(static_cast<int64_t>(b.level)));
  res.set_header("x-ratelimit-reset-requests", seconds_text((cap - b.level) * 60.0 / cap));
}

void Server::Impl::reserve_tokens(const ApiKey& key, int64_t bound, Record& rec, httplib::Response& res) {
  if (key.quota_tokens <= 0 && key.tpm <= 0) return;
  std::lock_guard lock(usage_mu);
  auto& ks = key_state[key.id];
  if (key.quota_tokens > 0) {
    const int64_t left = key.quota_tokens - usage[key.id] - ks.reserved;
    if (bound > left)
      throw ApiError(429,
                     fmt::format("This request may use up to {} tokens (its prompt plus n x max_tokens), more than the {} "
                                 "left of your quota of {} tokens (running requests included); lower max_tokens or n.",
                                 bound, std::max<int64_t>(0, left), key.quota_tokens),
                     "insufficient_quota", "", "insufficient_quota");
  }
  if (key.tpm > 0) {
    const double cap = static_cast<double>(key.tpm), level = ks.tokens.refill(cap, Clock::now());
    res.set_header("x-ratelimit-limit-tokens", std::to_string(key.tpm));
    if (static_cast<double>(bound) > cap)
      throw ApiError(429, fmt::format("Request too large: it may use up to {} tokens, more than your limit of {} tokens per "
                                      "minute; lower max_tokens or n.", bound, key.tpm),
                     "tokens", "", "rate_limit_exceeded");
    if (static_cast<double>(bound) > level) {
      const double wait = (static_cast<double>(bound) - level) * 60.0 / cap;
      res.set_header("x-ratelimit-remaining-tokens", std::to_string(static_cast<int64_t>(level)));
      res.set_header("x-ratelimit-reset-tokens", seconds_text(wait));
      res.set_header("Retry-After", std::to_string(static_cast<int64_t>(std::ceil(wait))));
      throw ApiError(429, fmt::format("Rate limit reached for tokens: limit {} per minute, this request may use {}. Please "
                                      "try again in {}.", key.tpm, bound, seconds_text(wait)),
                     "tokens", "", "rate_limit_exceeded");
    }
    ks.tokens.level -= static_cast<double>(bound);
    rec.tpm_charged = bound;
    res.set_header("x-ratelimit-remaining-tokens", std::to_string(static_cast<int64_t>(ks.tokens.level)));
    res.set_header("x-ratelimit-reset-tokens", seconds_text((cap - ks.tokens.level) * 60.0 / cap));
  }
  if (key.quota_tokens > 0) {
    ks.reserved += bound;
    rec.reserved = bound;
  }
}

std::optional<ApiKey> Server::Impl::authenticate(const httplib::Request& req) {
  if (keys.empty()) return std::nullopt;
  auto h = req.get_header_value("Authorization");
  if (h.empty())
    throw ApiError(401, "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
                   "invalid_request_error");
  if (h.rfind("Bearer ", 0) != 0)
    throw ApiError(401, "The Authorization header must be 'Bearer YOUR_KEY'.", "invalid_request_error", "", "invalid_api_key");
  auto key = keys.find(std::string_view(h).substr(7));
  if (!key) throw ApiError(401, "Incorrect API key provided.", "invalid_request_error", "", "invalid_api_key");
  return key;
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
    auto key = authorize_key(req);
    if (key) rec.entry.key_id = key->id;
    if (key) admit_request(*key, res);
    auto call = read_call(req.body, chat, engine->tokenizer(), model_id, engine->context_length(), rec.entry,
                          max_token_bytes);
    rec.call = call;
    if (key) reserve_tokens(*key, token_bound(*call, engine->context_length()), rec, res);
    submit(call, *engine);
    if (call->p.stream) {
      stream(call, res, rec.entry,
             [this, start = rec.start, reserved = rec.reserved, charged = rec.tpm_charged, call](
                 LogEntry& entry, int status, const std::string& error) {
               Record done{entry, start, reserved, charged, call, {}};
               finish(done, status, error);
             });
      return;
    }
    res.set_content(dump(answer(*call, rec.entry)), "application/json");
    finish(rec, 200);
  } catch (const ApiError& e) {
    send_error(res, e);
    rec.error_code = e.code;
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

HttpFront::Handler Server::Impl::find_route(const httplib::Request& req, bool& inline_route) {
  bool path_known = false;
  for (const auto& r : routes) {
    const bool match = r.prefix ? req.path.size() > r.path.size() && req.path.rfind(r.path, 0) == 0 : req.path == r.path;
    if (!match) continue;
    path_known = true;
    if (r.method != req.method) continue;
    inline_route = r.inline_route;
    return r.handler;
  }
  if (!path_known) return nullptr;  // 404, through on_error
  inline_route = true;
  return [this](const httplib::Request& req, httplib::Response& res) {
    res.status = 405;
    on_error(req, res);
  };
}

void Server::Impl::on_error(const httplib::Request& req, httplib::Response& res) {
  std::string msg, code;
  if (res.status == 404) msg = fmt::format("Invalid URL ({} {})", req.method, req.path), code = "unknown_url";
  else if (res.status == 413) msg = fmt::format("The request body is larger than this server accepts ({} bytes, before and after "
                                                "decoding).", opt.max_body_bytes);
  else if (res.status == 405) msg = fmt::format("Method {} is not allowed on {}", req.method, req.path);
  else if (res.status == 408) msg = fmt::format("The request did not arrive within {} s.", opt.read_timeout_s);
  else if (res.status == 415) msg = fmt::format("Content-Encoding '{}' is not supported (gzip, deflate or identity).",
                                                req.get_header_value("Content-Encoding"));
  else if (res.status == 431) msg = "The request's headers are too large.";
  else if (res.status == 501) msg = "Transfer-Encoding other than chunked is not supported.";
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
  } else {
    metrics.request(endpoint_label(req.path), res.status, "", 0, 0, 0.0, -1, -1);
    if (res.status == 413) metrics.rejected("body_too_large");
  }
}

void Server::Impl::setup_routes() {
  HttpFrontOptions fo;
  fo.host = opt.host;
  fo.port = opt.port;
  fo.workers = std::max(2, opt.threads);
  fo.max_body = opt.max_body_bytes;
  fo.header_timeout_s = std::min<double>(10, opt.read_timeout_s);
  fo.body_timeout_s = opt.read_timeout_s;
  fo.max_connections = opt.max_connections;
  fo.max_connections_per_client = opt.max_connections_per_client;
  http = std::make_unique<HttpFront>(
      fo, [this](const httplib::Request& req, bool& inline_route) { return find_route(req, inline_route); },
      [this](const httplib::Request& req, httplib::Response& res) { on_error(req, res); });
  route("GET", "/health", false, true, [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"status", "ok"}, {"model", model_id}, {"waiting", engine->waiting()}}), "application/json");
  });
  // Prometheus text format. Key ids and traffic are the owner's business: loopback clients only,
  // unless --public-metrics.
  route("GET", "/metrics", false, true, [this](const httplib::Request& req, httplib::Response& res) {
    if (!opt.public_metrics && !is_loopback(req.remote_addr)) {
      res.status = 403;
      res.set_content(dump(error_json(403, "/metrics is served to loopback clients only (see --public-metrics)",
                                      "invalid_request_error", "", "forbidden")),
                      "application/json");
      return;
    }
    EngineGauges g{static_cast<int64_t>(engine->waiting()), engine->active(), engine->max_batch()};
    if (engine->has_draft()) {
      g.draft_proposed = engine->draft_tokens_proposed();
      g.draft_accepted = engine->draft_tokens_accepted();
    }
    std::string text = metrics.render(g);
    const auto& st = http->stats();
    text += fmt::format("# HELP lineage_connections_open Client connections open.\n# TYPE lineage_connections_open gauge\n"
                        "lineage_connections_open {}\n", st.open.load());
    text += fmt::format("# HELP lineage_connections_rejected_total Connections refused at accept (the caps in all and per "
                        "client address).\n# TYPE lineage_connections_rejected_total counter\n"
                        "lineage_connections_rejected_total {}\n", st.rejected_connections.load());
    text += fmt::format("# HELP lineage_connections_timed_out_total Connections closed because a request did not arrive in "
                        "time or its answer was not read.\n# TYPE lineage_connections_timed_out_total counter\n"
                        "lineage_connections_timed_out_total {}\n", st.timed_out.load());
    res.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
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
  route("GET", "/v1/models", false, false, [this, model_object](const httplib::Request& req, httplib::Response& res) {
    try {
      authorize(req);
      res.set_content(dump({{"object", "list"}, {"data", json::array({model_object()})}}), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  route("GET", "/v1/models/", true, false, [this, model_object](const httplib::Request& req, httplib::Response& res) {
    try {
      authorize(req);
      const std::string id = req.path.substr(std::string("/v1/models/").size());
      if (id != model_id)
        throw ApiError(404, fmt::format("The model '{}' does not exist (this server serves '{}')", id, model_id),
                       "invalid_request_error", "model", "model_not_found");
      res.set_content(dump(model_object()), "application/json");
    } catch (const ApiError& e) {
      send_error(res, e);
    }
  });
  route("POST", "/v1/completions", false, false,
        [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, false); });
  route("POST", "/v1/chat/completions", false, false,
        [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, true); });
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
  if (!options.draft.empty()) im.engine->set_draft(options.draft, options.draft_tokens, options.draft_max_batch);
  if (options.deterrence.any())
    im.engine->set_adjusters(protect::make_adjusters(options.deterrence, *im.engine->model().model(),
                                                     im.engine->tokenizer(), parse_device(options.device),
                                                     parse_dtype(options.dtype), options.quiet));
  int32_t eot = -1;
  try {
    chat_prompt({{"messages", {{{"role", "user"}, {"content", "x"}}}}}, im.engine->tokenizer(), &eot, &im.template_name);
  } catch (...) {
    im.template_name = "none";
  }
  {
    const auto& tok = im.engine->tokenizer();
    // Byte fallback and byte-level pieces decode to 1 byte; the longest text any token decodes to
    // (plus a SentencePiece space) bounds the bytes per token.
    size_t longest = 4;
    // Special tokens written in the text count with their own spelling.
    for (int32_t id = 0; id < tok.vocab_size(); ++id)
      longest = std::max({longest, tok.decode_piece(-1, id).size() + 1, tok.vocab().tokens[id].size() + 1});
    im.max_token_bytes = longest;
  }
  im.setup_routes();
}

Server::~Server() {
  stop();
  if (impl_->engine) impl_->engine->shutdown();
}

int Server::bind() {
  auto& im = *impl_;
  im.port = im.http->bind();
  return im.port;
}

void Server::run() { impl_->http->run(); }
void Server::stop() { impl_->http->stop(); }
void Server::cancel_running() { impl_->engine->cancel_all(); }
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
        std::fprintf(stderr, "lineage serve: %s, no new connections; running requests get %g s to finish\n",
                     g_signal == SIGTERM ? "SIGTERM" : "SIGINT", options.drain_seconds);
      server.stop();
      const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(std::max(0.0, options.drain_seconds)));
      while (!done && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (!done) {
        if (!options.quiet) std::fprintf(stderr, "lineage serve: drain time is up; cancelling what is still running\n");
        server.cancel_running();
      }
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
