// Private to serve: one /v1/completions or /v1/chat/completions call, from its parsed body to the
// answer — the prompts and parameters, the engine work it starts, the text of each choice as it is
// generated (stop sequences, UTF-8 held back), and the answer as one JSON or as server-sent events.
// Shared (shared_ptr) with the engine's callbacks and the stream, which may outlive the handler.
#pragma once
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/serve/request_log.h"
#include "serve/engine.h"
#include "serve/openai.h"

namespace lineage::serve {

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

struct CompletionCall {
  CompletionCall(const text::Tokenizer& tok, bool chat, std::string model_id) : tok(tok), chat(chat), model_id(std::move(model_id)) {}
  const text::Tokenizer& tok;
  bool chat;
  std::string model_id, id;
  int64_t created = 0;
  Params p;
  std::vector<Prompt> prompts;
  int32_t end_of_turn = -1;  // chat: the template's end-of-turn token, a stop token
  size_t max_stop = 0;       // longest stop sequence
  std::vector<std::vector<ChoiceText>> texts;  // [prompt][choice]
  Channel channel;
  std::vector<std::future<GenResult>> gens;
  std::vector<std::future<std::vector<TokenOut>>> echoes;
  // When the call was read, and when its first token was generated (ns after that; -1: none yet).
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<int64_t> first_token_ns{-1};

  // One server-sent event of a streamed answer.
  std::string chunk(int index, const std::string& text, const nlohmann::json& logprobs, const nlohmann::json& finish) const;
  nlohmann::json token_logprobs_chat(const TokenOut& t, int32_t prev) const;
};

// Parses the body (JSON object, model, parameters, prompts) into a call, filling the log entry's
// request fields; throws ApiError naming the field at fault. `max_token_bytes` (the longest
// token's text; 0: no check): a prompt whose text cannot fit the context is refused untokenized.
std::shared_ptr<CompletionCall> read_call(const std::string& body, bool chat, const text::Tokenizer& tok,
                                          const std::string& model_id, int64_t context, LogEntry& entry,
                                          size_t max_token_bytes = 0);

// The most tokens the call can be charged: every prompt's tokens, plus n × the tokens each may
// generate (max_tokens, or what is left of the context when a chat call gives none). What quotas
// and token rate limits reserve before the call starts.
int64_t token_bound(const CompletionCall& call, int64_t context);

// Queues the call's scoring (echo) and generation with the engine; every prompt is checked against
// the context before any is queued.
void submit(const std::shared_ptr<CompletionCall>& call, Engine& engine);

// The non-streamed answer once everything is done; adds the completion tokens to `entry`.
nlohmann::json answer(CompletionCall& call, LogEntry& entry);

// Streams the answer as server-sent events; `finish(status, error)` is called once, when the
// stream ends (499 when the client went away).
void stream(const std::shared_ptr<CompletionCall>& call, httplib::Response& res, LogEntry entry,
            std::function<void(LogEntry&, int, const std::string&)> finish);

}  // namespace lineage::serve
