// What the monitor keeps of one request (parsed once, then only these numbers and hashes), and
// the text features behind them. Private to protect; see include/lineage/protect/monitor.h.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lineage/protect/request_record.h"

namespace simdjson::dom {
class element;
}

namespace lineage::protect::monitor {

constexpr int kCapabilities = 13;  // areas of the capability taxonomy (monitor_features.cpp)

enum Flag : uint16_t {
  kLogprobs = 1,       // asks for log-probabilities (logprobs / top_logprobs)
  kEcho = 2,           // echo: log-probabilities of the given text
  kScoring = 4,        // echo + logprobs with no (or one) generated token: scoring given text
  kFollowUp = 8,       // continues a conversation (earlier assistant turns in messages)
  kReasoning = 16,     // the user's own text asks for step-by-step reasoning (boilerplate aside)
  kReasoningAny = 32,  // reasoning words anywhere, system prompt and shared boilerplate included
  kHasText = 64,       // the log kept the prompt's text
  kFailed = 128,       // HTTP status >= 400
  kTool = 256,         // carries tool results (role "tool"): an agent's step
};

// One request, compact. Sentence hashes (with the low bit set where the sentence asks for
// reasoning) are kept in a flat array: sentences[first_sentence .. first_sentence + n_sentences).
struct Request {
  int64_t ms = 0;
  uint32_t key = 0, client = 0, network = 0, agent = 0;
  int32_t prompt_tokens = 0, completion_tokens = 0, max_tokens = -1;
  float temperature = -1;  // -1: not given
  uint16_t flags = 0;
  uint8_t top_logprobs = 0, n_sentences = 0, samples = 1;  // samples: the body's n
  uint32_t first_sentence = 0;
  uint64_t content = 0;  // the user's own text, normalised (exact repeats)
  uint64_t prefix = 0;   // its first 16 words (multiple-choice scoring repeats a context)
  uint64_t system = 0;   // the system prompt (0: none)
  uint64_t conversation = 0;  // its first user message: the same for every turn of one conversation
  uint64_t history = 0;  // the messages before the last assistant turn (0: none), chained hashes
  uint64_t whole = 0;    // every message (or the prompt), chained the same way
  uint64_t head = 0, tail = 0;  // the own text's first and last three words: a product's template
  uint16_t capabilities = 0;  // bit a: the own text names capability area a (monitor_features.cpp)
  uint64_t answer = 0;   // the last assistant turn's SHA-256 (first 8 bytes), where the log records answers (0: none)
  uint32_t own_bytes = 0;
};

// The parts of a request body that matter here.
struct ParsedText {
  std::string system;  // system messages
  std::string own;     // the last user message, or the prompt
  std::string first;   // the first user message (the conversation's opening)
  bool follow_up = false, tool = false;
  uint64_t history = 0, whole = 0;  // chained hashes of the messages (see Request)
  uint64_t answer = 0;              // the last assistant turn's digest (see Request)
};

// Fills `r` (but key, client, network, agent) from the record; appends sentence hashes and the
// own text's content words (hashed) to the given vectors. `answers`: digest the last assistant
// turn (r.answer), for logs that record what the server sent (response_sha256).
void parse_request(const RequestRecord& rec, Request& r, std::vector<uint64_t>& sentences, std::vector<uint64_t>& words,
                   bool answers = false);
// The same with the body already parsed (request_reader_internal.h): rec.body is not read.
void parse_request(const RequestRecord& rec, const simdjson::dom::element& body, Request& r, std::vector<uint64_t>& sentences,
                   std::vector<uint64_t>& words, bool answers);
// The first 8 bytes of a hex SHA-256 digest as a number (0 when `hex` is not one).
uint64_t digest_word_of_hex(std::string_view hex);

// Lowercased words of letters and digits (numbers become one token), as hashes.
void word_hashes(std::string_view text, std::vector<uint64_t>& out);
void word_hashes(std::string_view text, std::vector<uint64_t>& out, std::vector<size_t>& starts);  // and where each begins
bool asks_for_reasoning(std::string_view lowercase_text);
// The /24 (IPv4) or /48 (IPv6) network of an address, as text.
std::string network_of(const std::string& address);
uint64_t number_token();

}  // namespace lineage::protect::monitor
