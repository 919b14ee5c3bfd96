// One completion call (see completion.h): parsing, submission to the engine, the text of each
// choice as it is generated, and the answer, whole or streamed.
#include "serve/completion.h"

#include <fmt/format.h>
#include <sodium.h>

#include <chrono>

#include "lineage/core/json.h"
#include "lineage/core/hash.h"

namespace lineage::serve {

using json = nlohmann::json;

namespace {

int64_t unix_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string random_id(const char* prefix) {
  unsigned char b[12];
  randombytes_buf(b, sizeof b);
  std::string s = prefix;
  for (unsigned char c : b) s += fmt::format("{:02x}", c);
  return s;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiError context_exceeded(int64_t ctx, size_t prompt, int64_t want) {
  return ApiError(400, fmt::format("This model's maximum context length is {} tokens; you requested {} ({} in the prompt, {} to complete).",
                                   ctx, prompt + want, prompt, want),
                  "invalid_request_error", "max_tokens", "context_length_exceeded");
}

void check_model(const json& body, const std::string& model_id) {
  if (!body.contains("model")) throw ApiError(400, "'model' is required", "invalid_request_error", "model");
  if (!body["model"].is_string()) throw ApiError(400, "'model' must be a string", "invalid_request_error", "model");
  if (body["model"].get<std::string>() != model_id)
    throw ApiError(404, fmt::format("The model '{}' does not exist (this server serves '{}')", body["model"].get<std::string>(), model_id),
                   "invalid_request_error", "model", "model_not_found");
}

json chat_logprob(const std::string& t, float lp) {
  json bytes = json::array();
  for (unsigned char ch : t) bytes.push_back(int(ch));
  return json{{"token", t}, {"logprob", lp}, {"bytes", bytes}};
}

}  // namespace

std::string CompletionCall::chunk(int index, const std::string& text, const json& logprobs, const json& finish) const {
  json c;
  if (chat) {
    json delta = json::object();
    if (!text.empty() || finish.is_null()) delta["content"] = text;
    c = {{"index", index}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish}};
  } else {
    c = {{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}};
  }
  json ev = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
             {"model", model_id}, {"choices", json::array({c})}};
  return "data: " + dump(ev) + "\n\n";
}

json CompletionCall::token_logprobs_chat(const TokenOut& t, int32_t prev) const {
  json e = chat_logprob(token_text(tok, prev, t.id, p.token_ids), t.logprob);
  json tops = json::array();
  for (auto& [i, lp] : t.top) tops.push_back(chat_logprob(token_text(tok, prev, i, p.token_ids), lp));
  e["top_logprobs"] = tops;
  return e;
}

std::shared_ptr<CompletionCall> read_call(const std::string& raw, bool chat, const text::Tokenizer& tok,
                                          const std::string& model_id, int64_t context, LogEntry& entry,
                                          size_t max_token_bytes) {
  json body;
  try {
    if (json_depth(raw) > kMaxJsonDepth)
      throw ApiError(400, fmt::format("Your request body nests JSON deeper than {} levels.", kMaxJsonDepth),
                     "invalid_request_error");
    body = json::parse(raw);
  } catch (const json::exception& e) {
    throw ApiError(400, fmt::format("We could not parse the JSON body of your request: {}", e.what()), "invalid_request_error");
  }
  if (!body.is_object()) throw ApiError(400, "The request body must be a JSON object", "invalid_request_error");
  if (body.contains("model") && body["model"].is_string()) entry.model = body["model"].get<std::string>();
  check_model(body, model_id);
  auto call = std::make_shared<CompletionCall>(tok, chat, model_id);
  call->p = parse_params(body, chat);
  // A text longer than the context can hold even at the longest token's bytes is refused before
  // it is tokenized: tokenizing megabytes only to refuse them costs the CPU an attacker wants spent.
  if (max_token_bytes > 0) {
    const int64_t bound = (context + 1) * static_cast<int64_t>(max_token_bytes);
    auto text_bytes = [](const json& v, auto&& self) -> int64_t {
      if (v.is_string()) return static_cast<int64_t>(v.get_ref<const std::string&>().size());
      int64_t n = 0;
      if (v.is_array() || v.is_object())
        for (const auto& e : v) n += self(e, self);
      return n;
    };
    auto too_long = [&](int64_t bytes) {
      if (bytes > bound)
        throw ApiError(400, fmt::format("This model's maximum context length is {} tokens; the prompt's {} bytes are more "
                                        "than that many tokens can hold.", context, bytes),
                       "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded");
    };
    if (chat && body.contains("messages")) too_long(text_bytes(body["messages"], text_bytes));
    if (!chat && body.contains("prompt")) {
      const json& pr = body["prompt"];
      if (pr.is_array()) {
        for (const auto& e : pr)
          if (e.is_string()) too_long(text_bytes(e, text_bytes));
      } else {
        too_long(text_bytes(pr, text_bytes));
      }
    }
  }
  entry.params = dump(call->p.to_json());
  if (chat) {
    std::string name;
    call->prompts.push_back(chat_prompt(body, tok, &call->end_of_turn, &name));
  } else {
    call->prompts = parse_prompts(body, tok);
  }
  std::string all_text;
  for (auto& pr : call->prompts) {
    all_text += pr.text;
    entry.prompt_tokens += static_cast<int64_t>(pr.ids.size());
    if (static_cast<int64_t>(pr.ids.size()) > context)
      throw ApiError(400, fmt::format("This model's maximum context length is {} tokens; the prompt has {}.", context, pr.ids.size()),
                     "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded");
  }
  entry.prompt = all_text;
  entry.body = raw;
  entry.prompt_sha256 = hex(sha256(all_text));
  const Params& p = call->p;
  if (p.stream && p.echo) throw ApiError(400, "'echo' cannot be combined with 'stream' on this server", "invalid_request_error", "echo");
  if (p.stream && call->prompts.size() > 1) throw ApiError(400, "streaming takes one prompt", "invalid_request_error", "prompt");
  if (call->prompts.size() * static_cast<size_t>(p.n) > kMaxSequences)
    throw ApiError(400, fmt::format("{} prompts x n {} asks for more than {} sequences in one request", call->prompts.size(), p.n,
                                    kMaxSequences),
                   "invalid_request_error", "n");
  call->id = random_id(chat ? "chatcmpl-" : "cmpl-");
  call->created = unix_s();
  for (auto& s : p.stop) call->max_stop = std::max(call->max_stop, s.size());
  call->texts.assign(call->prompts.size(), std::vector<ChoiceText>(p.n));
  return call;
}

namespace {

// The streamed event for a token of choice `c`: the text that can no longer become part of a stop
// sequence (nor split a UTF-8 character) and the token's log-probabilities when asked.
void stream_token(CompletionCall& call, ChoiceText& ct, int c, const TokenOut& t, int32_t prev) {
  const auto& p = call.p;
  const size_t max_stop = call.max_stop;
  size_t safe = ct.stopped ? ct.text.size() : (ct.text.size() >= max_stop ? ct.text.size() - (max_stop ? max_stop - 1 : 0) : 0);
  safe = ct.sent + complete_utf8_prefix(std::string_view(ct.text).substr(ct.sent, safe > ct.sent ? safe - ct.sent : 0));
  json lp = nullptr;
  if (p.logprobs) {
    if (call.chat) {
      lp = {{"content", json::array({call.token_logprobs_chat(t, prev)})}};
    } else {
      json tops = json::object();
      for (auto& [i, v] : t.top) tops[token_text(call.tok, prev, i, p.token_ids)] = v;
      lp = {{"tokens", {token_text(call.tok, prev, t.id, p.token_ids)}}, {"token_logprobs", {t.logprob}},
            {"top_logprobs", {tops}}, {"text_offset", {ct.sent}}};
    }
  }
  if (safe > ct.sent || !lp.is_null()) {
    std::string ev = call.chunk(c, ct.text.substr(ct.sent, safe - ct.sent), lp, nullptr);
    ct.sent = safe;
    std::lock_guard lock(call.channel.mu);
    call.channel.events.push_back(std::move(ev));
    call.channel.cv.notify_one();
  }
}

// Sees each token of prompt `pi`'s choices: appends its text, cuts at a stop sequence, streams.
std::function<bool(int, const TokenOut&)> on_token(const std::shared_ptr<CompletionCall>& shared, size_t pi) {
  const int32_t last_prompt = shared->prompts[pi].ids.back();
  return [shared, pi, last_prompt](int c, const TokenOut& t) {
    CompletionCall& call = *shared;
    if (call.first_token_ns.load(std::memory_order_relaxed) < 0) {
      int64_t none = -1;
      call.first_token_ns.compare_exchange_strong(
          none, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - call.started).count());
    }
    auto& ct = call.texts[pi][c];
    if (ct.prev < 0) ct.prev = last_prompt;
    std::string piece = call.tok.decode_piece(ct.prev, t.id);
    int32_t prev = ct.prev;
    ct.prev = t.id;
    size_t before = ct.text.size();
    ct.text += piece;
    ct.tokens++;
    // A stop sequence ends the choice; the text is cut where it begins.
    size_t from = before >= call.max_stop ? before - call.max_stop + 1 : 0;
    size_t cut = std::string::npos;
    for (const auto& s : call.p.stop) cut = std::min(cut, ct.text.find(s, from));
    if (cut != std::string::npos) {
      ct.text.resize(cut);
      ct.stopped = true;
    }
    if (call.p.stream && !call.channel.cancelled) stream_token(call, ct, c, t, prev);
    return !ct.stopped && !call.channel.cancelled;
  };
}

}  // namespace

int64_t token_bound(const CompletionCall& call, int64_t ctx) {
  const Params& p = call.p;
  int64_t total = 0;
  for (const auto& pr : call.prompts) {
    const int64_t room = std::max<int64_t>(0, ctx + 1 - static_cast<int64_t>(pr.ids.size()));
    const int64_t want = p.max_tokens ? *p.max_tokens : (call.chat ? room : 16);
    total += static_cast<int64_t>(pr.ids.size()) + static_cast<int64_t>(p.n) * std::min(want, room);
  }
  return total;
}

void submit(const std::shared_ptr<CompletionCall>& call, Engine& engine) {
  const Params& p = call->p;
  const int64_t ctx = engine.context_length();
  std::vector<int32_t> stop_ids;
  if (call->tok.eos_id() >= 0 && !p.ignore_eos) stop_ids.push_back(call->tok.eos_id());
  if (call->end_of_turn >= 0 && !p.ignore_eos) stop_ids.push_back(call->end_of_turn);
  for (auto& pr : call->prompts) {  // every prompt is checked before any is queued
    // N new tokens need P + N - 1 positions: the last one is sampled, never fed back.
    int64_t want = p.max_tokens ? *p.max_tokens : (call->chat ? 1 : 16);
    if (static_cast<int64_t>(pr.ids.size()) + want - 1 > ctx) throw context_exceeded(ctx, pr.ids.size(), want);
  }
  for (size_t pi = 0; pi < call->prompts.size(); ++pi) {
    auto& pr = call->prompts[pi];
    if (p.echo && p.logprobs) call->echoes.push_back(engine.score({pr.ids, p.top_logprobs}));
    GenRequest g;
    g.prompt = pr.ids;
    int64_t room = ctx + 1 - static_cast<int64_t>(pr.ids.size());
    int64_t want = p.max_tokens ? *p.max_tokens : (call->chat ? room : 16);
    if (want > room) throw context_exceeded(ctx, pr.ids.size(), want);
    g.max_tokens = static_cast<int>(want);
    g.sampling.temperature = p.temperature;
    g.sampling.top_p = p.top_p;
    g.sampling.seed = p.has_seed ? p.seed : static_cast<uint64_t>(randombytes_random()) << 32 | randombytes_random();
    g.n = p.n;
    g.stop_ids = stop_ids;
    g.top_logprobs = p.logprobs ? p.top_logprobs : 0;
    g.on_token = on_token(call, pi);
    call->gens.push_back(engine.generate(std::move(g)));
  }
}

namespace {

// Legacy completions' logprobs object for one choice: the echoed prompt's tokens, then the `kept`
// generated ones, with their byte offsets in the text. The echo holds the prompt's tokens as the
// text has them (OpenAI's legacy completions, vLLM): a BOS the server put in front of a text prompt
// is not echoed, and the first text token gets its log-probability after it; a first token with
// nothing before it has none (null).
json completion_logprobs(const CompletionCall& call, const Prompt& pr, const std::vector<TokenOut>& echo,
                         const std::vector<TokenOut>& toks, size_t kept) {
  const auto& tok = call.tok;
  const Params& p = call.p;
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
    if (!pr.added_bos) add(-1, pr.ids[0], nullptr, nullptr);
    for (size_t k = 0; k < echo.size(); ++k)
      add(pr.added_bos && k == 0 ? -1 : pr.ids[k], echo[k].id, echo[k].logprob, p.top_logprobs ? &echo[k].top : nullptr);
  }
  int32_t prev = pr.ids.back();
  for (size_t k = 0; k < kept; ++k) {
    add(prev, toks[k].id, toks[k].logprob, p.top_logprobs ? &toks[k].top : nullptr);
    prev = toks[k].id;
  }
  return {{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

}  // namespace

json answer(CompletionCall& call, LogEntry& entry) {
  const Params& p = call.p;
  json choices = json::array();
  int64_t completion_tokens = 0;
  for (size_t pi = 0; pi < call.prompts.size(); ++pi) {
    GenResult r = call.gens[pi].get();
    std::vector<TokenOut> echo;
    if (p.echo && p.logprobs) echo = call.echoes[pi].get();
    auto& pr = call.prompts[pi];
    for (int c = 0; c < p.n; ++c) {
      auto& ct = call.texts[pi][c];
      const auto& toks = r.choices[c];
      size_t kept = std::min(ct.tokens, toks.size());
      completion_tokens += static_cast<int64_t>(kept);
      std::string reason = ct.stopped ? "stop" : r.finish_reasons[c];
      json lp = nullptr;
      if (p.logprobs && call.chat) {
        json content = json::array();
        int32_t prev = pr.ids.back();
        for (size_t k = 0; k < kept; ++k) {
          content.push_back(call.token_logprobs_chat(toks[k], prev));
          prev = toks[k].id;
        }
        lp = {{"content", content}, {"refusal", nullptr}};
      } else if (p.logprobs) {
        lp = completion_logprobs(call, pr, echo, toks, kept);
      }
      int index = static_cast<int>(pi) * p.n + c;
      // The monitor's record of what this server wrote: a later request that re-sends an
      // assistant turn it never sent is a transcript assembled elsewhere (protect/request_record.h).
      const std::string sent = call.chat || !p.echo ? ct.text : pr.text + ct.text;
      entry.response_sha256 += (entry.response_sha256.empty() ? "" : ",") + hex(sha256(sent));
      if (call.chat)
        choices.push_back({{"index", index}, {"message", {{"role", "assistant"}, {"content", ct.text}}}, {"logprobs", lp}, {"finish_reason", reason}});
      else
        choices.push_back({{"index", index}, {"text", p.echo ? pr.text + ct.text : ct.text}, {"logprobs", lp}, {"finish_reason", reason}});
    }
  }
  entry.completion_tokens = completion_tokens;
  return {{"id", call.id}, {"object", call.chat ? "chat.completion" : "text_completion"}, {"created", call.created},
          {"model", call.model_id}, {"choices", choices},
          {"usage", {{"prompt_tokens", entry.prompt_tokens}, {"completion_tokens", completion_tokens},
                     {"total_tokens", entry.prompt_tokens + completion_tokens}}}};
}

namespace {

// What a stream sends once generation is over: the rest of each choice's text with its finish
// reason, the usage when asked, or the error.
void stream_end(CompletionCall& call, const std::string& error, const GenResult& result, LogEntry& entry,
                const std::function<bool(const std::string&)>& write) {
  if (!error.empty()) {
    write("data: " + dump(error_json(500, error, "server_error", "", "")) + "\n\n");
    return;
  }
  int64_t completion = 0;
  for (int c = 0; c < call.p.n; ++c) {
    auto& ct = call.texts[0][c];
    std::string rest = ct.text.substr(std::min(ct.sent, ct.text.size()));
    std::string reason = ct.stopped ? "stop" : result.finish_reasons[c];
    write(call.chunk(c, rest, nullptr, reason));
    completion += static_cast<int64_t>(ct.tokens);
    entry.response_sha256 += (entry.response_sha256.empty() ? "" : ",") + hex(sha256(ct.text));
  }
  entry.completion_tokens = completion;
  if (call.p.include_usage) {
    json ev = {{"id", call.id}, {"object", call.chat ? "chat.completion.chunk" : "text_completion"}, {"created", call.created},
               {"model", call.model_id}, {"choices", json::array()},
               {"usage", {{"prompt_tokens", entry.prompt_tokens}, {"completion_tokens", completion},
                          {"total_tokens", entry.prompt_tokens + completion}}}};
    write("data: " + dump(ev) + "\n\n");
  }
}

}  // namespace

void stream(const std::shared_ptr<CompletionCall>& call, httplib::Response& res, LogEntry entry,
            std::function<void(LogEntry&, int, const std::string&)> finish) {
  res.set_header("Cache-Control", "no-cache");
  if (call->chat) {
    std::lock_guard lock(call->channel.mu);
    for (int c = 0; c < call->p.n; ++c) {
      json ev = {{"id", call->id}, {"object", "chat.completion.chunk"}, {"created", call->created}, {"model", call->model_id},
                 {"choices", json::array({{{"index", c}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})}};
      call->channel.events.push_front("data: " + dump(ev) + "\n\n");
    }
  }
  auto state = std::make_shared<LogEntry>(std::move(entry));
  res.set_chunked_content_provider("text/event-stream", [call, state, finish](size_t, httplib::DataSink& sink) {
    Channel& channel = call->channel;
    auto write = [&](const std::string& s) {
      if (!sink.write(s.data(), s.size())) channel.cancelled = true;
      return !channel.cancelled;
    };
    while (true) {
      std::deque<std::string> evs;
      {
        std::unique_lock lock(channel.mu);
        channel.cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return !channel.events.empty(); });
        evs.swap(channel.events);
      }
      for (auto& e : evs)
        if (!write(e)) break;
      if (channel.cancelled) {
        for (auto& f : call->gens) f.wait();
        finish(*state, 499, "client closed the stream");
        return false;
      }
      if (call->gens[0].wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) continue;
      std::string error;
      GenResult result;
      try {
        result = call->gens[0].get();
      } catch (const std::exception& e) {
        error = e.what();
      }
      {
        std::lock_guard lock(channel.mu);
        while (!channel.events.empty()) {
          write(channel.events.front());
          channel.events.pop_front();
        }
      }
      stream_end(*call, error, result, *state, write);
      write("data: [DONE]\n\n");
      finish(*state, error.empty() ? 200 : 500, error);
      sink.done();
      return true;
    }
  });
}

}  // namespace lineage::serve
