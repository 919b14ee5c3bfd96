// `lineage serve`: routes, authentication, quotas, logging and streaming around the Engine.
// See include/lineage/serve/server.h.
#include "lineage/core/device.h"
#include "lineage/serve/server.h"

#include <httplib.h>
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
#include "serve/engine.h"
#include "serve/openai.h"

namespace lineage::serve {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_id(const char* prefix) {
  unsigned char b[12];
  randombytes_buf(b, sizeof b);
  std::string s = prefix;
  for (unsigned char c : b) s += fmt::format("{:02x}", c);
  return s;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// What a request did, for the log and the quota.
struct Record {
  LogEntry entry;
  Clock::time_point start = Clock::now();
};

// One generated choice: its tokens' text, stop-sequence handling and, for streaming, what has
// been sent.
struct ChoiceText {
  int32_t prev = -1;
  std::string text;        // all generated text so far (cut at a stop sequence)
  size_t sent = 0;         // bytes already streamed
  size_t tokens = 0;       // tokens that count (up to the stop sequence)
  bool stopped = false;
};

// Streamed server-sent events, from the engine thread to the HTTP worker.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> events;
  std::atomic<bool> cancelled{false};
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
  void check_model(const json& body);
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

void Server::Impl::check_model(const json& body) {
  if (!body.contains("model")) throw ApiError(400, "'model' is required", "invalid_request_error", "model");
  if (!body["model"].is_string()) throw ApiError(400, "'model' must be a string", "invalid_request_error", "model");
  if (body["model"].get<std::string>() != model_id)
    throw ApiError(404, fmt::format("The model '{}' does not exist (this server serves '{}')", body["model"].get<std::string>(), model_id),
                   "invalid_request_error", "model", "model_not_found");
}

void Server::Impl::completions(const httplib::Request& req, httplib::Response& res, bool chat) {
  Record rec;
  rec.entry.unix_ms = now_ms();
  rec.entry.client = req.remote_addr;
  rec.entry.user_agent = req.get_header_value("User-Agent");
  rec.entry.endpoint = req.path;
  rec.entry.log_text = opt.log_text;
  const auto& tok = engine->tokenizer();
  try {
    rec.entry.key_id = authorize(req);
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::exception& e) {
      throw ApiError(400, fmt::format("We could not parse the JSON body of your request: {}", e.what()), "invalid_request_error");
    }
    if (!body.is_object()) throw ApiError(400, "The request body must be a JSON object", "invalid_request_error");
    if (body.contains("model") && body["model"].is_string()) rec.entry.model = body["model"].get<std::string>();
    check_model(body);
    Params p = parse_params(body, chat);
    rec.entry.params = dump(p.to_json());
    std::vector<Prompt> prompts;
    int32_t end_of_turn = -1;
    if (chat) {
      std::string name;
      prompts.push_back(chat_prompt(body, tok, &end_of_turn, &name));
    } else {
      prompts = parse_prompts(body, tok);
    }
    std::string all_text;
    for (auto& pr : prompts) {
      all_text += pr.text;
      rec.entry.prompt_tokens += static_cast<int64_t>(pr.ids.size());
      if (static_cast<int64_t>(pr.ids.size()) > engine->context_length())
        throw ApiError(400, fmt::format("This model's maximum context length is {} tokens; the prompt has {}.", engine->context_length(), pr.ids.size()),
                       "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded");
    }
    rec.entry.prompt = all_text;
    rec.entry.body = req.body;
    rec.entry.prompt_sha256 = hex(sha256(all_text));
    if (p.stream && p.echo) throw ApiError(400, "'echo' cannot be combined with 'stream' on this server", "invalid_request_error", "echo");
    if (p.stream && prompts.size() > 1) throw ApiError(400, "streaming takes one prompt", "invalid_request_error", "prompt");

    // Ask the engine: the prompt's own log-probabilities when echoed, then the completions.
    std::vector<int32_t> stop_ids;
    if (tok.eos_id() >= 0 && !p.ignore_eos) stop_ids.push_back(tok.eos_id());
    if (end_of_turn >= 0 && !p.ignore_eos) stop_ids.push_back(end_of_turn);
    const int64_t ctx = engine->context_length();
    // Shared with the engine's callbacks, which may outlive this call (a stream, an error).
    auto texts = std::make_shared<std::vector<std::vector<ChoiceText>>>(prompts.size(), std::vector<ChoiceText>(p.n));
    auto channel = std::make_shared<Channel>();
    std::vector<std::future<GenResult>> gens;
    std::vector<std::future<std::vector<TokenOut>>> echoes;
    const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-");
    const int64_t created = now_ms() / 1000;
    size_t max_stop = 0;
    for (auto& s : p.stop) max_stop = std::max(max_stop, s.size());

    const std::string mid = model_id;
    auto chunk = [chat, id, created, mid](int index, const std::string& text, const json& logprobs, const json& finish) {
      json c;
      if (chat) {
        json delta = json::object();
        if (!text.empty() || finish.is_null()) delta["content"] = text;
        c = {{"index", index}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish}};
      } else {
        c = {{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}};
      }
      json ev = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                 {"model", mid}, {"choices", json::array({c})}};
      return "data: " + dump(ev) + "\n\n";
    };
    auto chat_logprob = [](const std::string& t, float lp) {
      json bytes = json::array();
      for (unsigned char ch : t) bytes.push_back(int(ch));
      return json{{"token", t}, {"logprob", lp}, {"bytes", bytes}};
    };
    auto token_logprobs_chat = [chat_logprob, &tok, token_ids = p.token_ids](const TokenOut& t, int32_t prev) {
      json e = chat_logprob(token_text(tok, prev, t.id, token_ids), t.logprob);
      json tops = json::array();
      for (auto& [i, lp] : t.top) tops.push_back(chat_logprob(token_text(tok, prev, i, token_ids), lp));
      e["top_logprobs"] = tops;
      return e;
    };

    for (auto& pr : prompts) {  // every prompt is checked before any is queued
      // N new tokens need P + N - 1 positions: the last one is sampled, never fed back.
      int64_t want = p.max_tokens ? *p.max_tokens : (chat ? 1 : 16);
      if (static_cast<int64_t>(pr.ids.size()) + want - 1 > ctx)
        throw ApiError(400, fmt::format("This model's maximum context length is {} tokens; you requested {} ({} in the prompt, {} to complete).",
                                        ctx, pr.ids.size() + want, pr.ids.size(), want),
                       "invalid_request_error", "max_tokens", "context_length_exceeded");
    }
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
      auto& pr = prompts[pi];
      if (p.echo && p.logprobs) echoes.push_back(engine->score({pr.ids, p.top_logprobs}));
      GenRequest g;
      g.prompt = pr.ids;
      int64_t room = ctx + 1 - static_cast<int64_t>(pr.ids.size());
      int64_t want = p.max_tokens ? *p.max_tokens : (chat ? room : 16);
      if (want > room)
        throw ApiError(400, fmt::format("This model's maximum context length is {} tokens; you requested {} ({} in the prompt, {} to complete).",
                                        ctx, pr.ids.size() + want, pr.ids.size(), want),
                       "invalid_request_error", "max_tokens", "context_length_exceeded");
      g.max_tokens = static_cast<int>(want);
      g.sampling.temperature = p.temperature;
      g.sampling.top_p = p.top_p;
      g.sampling.seed = p.has_seed ? p.seed : static_cast<uint64_t>(randombytes_random()) << 32 | randombytes_random();
      g.n = p.n;
      g.stop_ids = stop_ids;
      g.top_logprobs = p.logprobs ? p.top_logprobs : 0;
      
      int32_t last_prompt = pr.ids.back();
      const bool stream = p.stream;
      const auto stops = p.stop;
      g.on_token = [=, &tok](int c, const TokenOut& t) {
        auto& ct = (*texts)[pi][c];
        if (ct.prev < 0) ct.prev = last_prompt;
        std::string piece = tok.decode_piece(ct.prev, t.id);
        int32_t prev = ct.prev;
        ct.prev = t.id;
        size_t before = ct.text.size();
        ct.text += piece;
        ct.tokens++;
        // A stop sequence ends the choice; the text is cut where it begins.
        size_t from = before >= max_stop ? before - max_stop + 1 : 0;
        size_t cut = std::string::npos;
        for (const auto& s : stops) cut = std::min(cut, ct.text.find(s, from));
        if (cut != std::string::npos) {
          ct.text.resize(cut);
          ct.stopped = true;
        }
        if (stream && !channel->cancelled) {
          // Hold back what could still become a stop sequence, and unfinished UTF-8.
          size_t safe = ct.stopped ? ct.text.size() : (ct.text.size() >= max_stop ? ct.text.size() - (max_stop ? max_stop - 1 : 0) : 0);
          safe = ct.sent + complete_utf8_prefix(std::string_view(ct.text).substr(ct.sent, safe > ct.sent ? safe - ct.sent : 0));
          json lp = nullptr;
          if (p.logprobs) {
            if (chat) {
              lp = {{"content", json::array({token_logprobs_chat(t, prev)})}};
            } else {
              json tops = json::object();
              for (auto& [i, v] : t.top) tops[token_text(tok, prev, i, p.token_ids)] = v;
              lp = {{"tokens", {token_text(tok, prev, t.id, p.token_ids)}}, {"token_logprobs", {t.logprob}},
                    {"top_logprobs", {tops}}, {"text_offset", {ct.sent}}};
            }
          }
          if (safe > ct.sent || !lp.is_null()) {
            std::string ev = chunk(c, ct.text.substr(ct.sent, safe - ct.sent), lp, nullptr);
            ct.sent = safe;
            std::lock_guard lock(channel->mu);
            channel->events.push_back(std::move(ev));
            channel->cv.notify_one();
          }
        }
        return !ct.stopped && !channel->cancelled;
      };
      gens.push_back(engine->generate(std::move(g)));
    }

    if (p.stream) {
      res.set_header("Cache-Control", "no-cache");
      auto state = std::make_shared<std::tuple<std::vector<std::future<GenResult>>, Record, bool>>(std::move(gens), rec, false);
      auto shared_texts = texts;
      const bool include_usage = p.include_usage;
      const int n = p.n;
      if (chat) {
        std::lock_guard lock(channel->mu);
        for (int c = 0; c < n; ++c) {
          json ev = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model_id},
                     {"choices", json::array({{{"index", c}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})}};
          channel->events.push_front("data: " + dump(ev) + "\n\n");
        }
      }
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, channel, state, shared_texts, chunk, include_usage, n, id, created, chat](size_t, httplib::DataSink& sink) {
            auto& [futures, record, done] = *state;
            auto write = [&](const std::string& s) {
              if (!sink.write(s.data(), s.size())) channel->cancelled = true;
              return !channel->cancelled;
            };
            while (true) {
              std::deque<std::string> evs;
              {
                std::unique_lock lock(channel->mu);
                channel->cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return !channel->events.empty(); });
                evs.swap(channel->events);
              }
              for (auto& e : evs)
                if (!write(e)) break;
              if (channel->cancelled) {
                for (auto& f : futures) f.wait();
                finish(record, 499, "client closed the stream");
                return false;
              }
              if (futures[0].wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) continue;
              std::string error;
              GenResult result;
              try {
                result = futures[0].get();
              } catch (const std::exception& e) {
                error = e.what();
              }
              {
                std::lock_guard lock(channel->mu);
                while (!channel->events.empty()) {
                  write(channel->events.front());
                  channel->events.pop_front();
                }
              }
              if (!error.empty()) {
                write("data: " + dump(error_json(500, error, "server_error", "", "")) + "\n\n");
              } else {
                auto& texts0 = (*shared_texts)[0];
                int64_t completion = 0;
                for (int c = 0; c < n; ++c) {
                  auto& ct = texts0[c];
                  std::string rest = ct.text.substr(std::min(ct.sent, ct.text.size()));
                  std::string reason = ct.stopped ? "stop" : result.finish_reasons[c];
                  write(chunk(c, rest, nullptr, reason));
                  completion += static_cast<int64_t>(ct.tokens);
                }
                record.entry.completion_tokens = completion;
                if (include_usage) {
                  json ev = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                             {"model", model_id}, {"choices", json::array()},
                             {"usage", {{"prompt_tokens", record.entry.prompt_tokens}, {"completion_tokens", completion},
                                        {"total_tokens", record.entry.prompt_tokens + completion}}}};
                  write("data: " + dump(ev) + "\n\n");
                }
              }
              write("data: [DONE]\n\n");
              finish(record, error.empty() ? 200 : 500, error);
              sink.done();
              return true;
            }
          });
      return;
    }

    // Not streamed: wait for everything, then answer once.
    json choices = json::array();
    int64_t completion_tokens = 0;
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
      GenResult r = gens[pi].get();
      std::vector<TokenOut> echo;
      if (p.echo && p.logprobs) echo = echoes[pi].get();
      auto& pr = prompts[pi];
      for (int c = 0; c < p.n; ++c) {
        auto& ct = (*texts)[pi][c];
        const auto& toks = r.choices[c];
        size_t kept = std::min(ct.tokens, toks.size());
        completion_tokens += static_cast<int64_t>(kept);
        std::string reason = ct.stopped ? "stop" : r.finish_reasons[c];
        json lp = nullptr;
        std::string text = p.echo ? pr.text + ct.text : ct.text;
        if (p.logprobs && chat) {
          json content = json::array();
          int32_t prev = pr.ids.back();
          for (size_t k = 0; k < kept; ++k) {
            content.push_back(token_logprobs_chat(toks[k], prev));
            prev = toks[k].id;
          }
          lp = {{"content", content}, {"refusal", nullptr}};
        } else if (p.logprobs) {
          json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
          size_t offset = 0;
          auto add = [&](int32_t prev, int32_t tid, json lpv, const std::vector<std::pair<int32_t, float>>* top) {
            tokens.push_back(token_text(tok, prev, tid, p.token_ids));
            token_lps.push_back(lpv);
            if (top) {
              json t = json::object();
              for (auto& [i, v] : *top) t[token_text(tok, prev, i, p.token_ids)] = v;
              tops.push_back(t);
            } else {
              tops.push_back(nullptr);
            }
            offsets.push_back(offset);
            offset += tok.decode_piece(prev, tid).size();
          };
          if (p.echo) {
            add(-1, pr.ids[0], nullptr, nullptr);
            for (size_t k = 0; k < echo.size(); ++k) add(pr.ids[k], echo[k].id, echo[k].logprob, p.top_logprobs ? &echo[k].top : nullptr);
          }
          int32_t prev = pr.ids.back();
          for (size_t k = 0; k < kept; ++k) {
            add(prev, toks[k].id, toks[k].logprob, p.top_logprobs ? &toks[k].top : nullptr);
            prev = toks[k].id;
          }
          lp = {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
        }
        int index = static_cast<int>(pi) * p.n + c;
        if (chat)
          choices.push_back({{"index", index}, {"message", {{"role", "assistant"}, {"content", ct.text}}}, {"logprobs", lp}, {"finish_reason", reason}});
        else
          choices.push_back({{"index", index}, {"text", text}, {"logprobs", lp}, {"finish_reason", reason}});
      }
    }
    rec.entry.completion_tokens = completion_tokens;
    json out = {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created}, {"model", model_id},
                {"choices", choices},
                {"usage", {{"prompt_tokens", rec.entry.prompt_tokens}, {"completion_tokens", completion_tokens},
                           {"total_tokens", rec.entry.prompt_tokens + completion_tokens}}}};
    res.set_content(dump(out), "application/json");
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
  http.set_read_timeout(60, 0);
  http.set_write_timeout(60, 0);
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump({{"status", "ok"}, {"model", model_id}, {"waiting", engine->waiting()}}), "application/json");
  });
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      authorize(req);
      auto& info = engine->model().info();
      json m = {{"id", model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "lineage"},
                {"lineage", {{"tokenizer_sha256", info.tokenizer_sha256}, {"vocab_size", info.vocab_size},
                             {"context_length", engine->context_length()}, {"parameters", info.parameters},
                             {"sha256", info.sha256}, {"chat_template", template_name}}}};
      res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
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
  im.engine = std::make_unique<Engine>(options.model, parse_device(options.device), parse_dtype(options.dtype),
                                       options.max_batch, options.max_queue);
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
  if (im.opt.port == 0) {
    im.port = im.http.bind_to_any_port(im.opt.host);
    if (im.port < 0) fail("cannot listen on {} (any port)", im.opt.host);
  } else {
    if (!im.http.bind_to_port(im.opt.host, im.opt.port)) fail("cannot listen on {}:{} (in use, or not an address here)", im.opt.host, im.opt.port);
    im.port = im.opt.port;
  }
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
