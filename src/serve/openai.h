// OpenAI request parsing and response shapes for `lineage serve` (internal to src/serve).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lineage/text/tokenizer.h"

namespace lineage::serve {

// Bounds on what one request may ask for, so that no request can take unbounded memory or time:
// prompts in one completions request, sequences (prompts x n), bytes of one stop sequence.
inline constexpr size_t kMaxPrompts = 256;
inline constexpr size_t kMaxSequences = 1024;
inline constexpr size_t kMaxStopBytes = 1024;

// An error the client sees as OpenAI's error JSON.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type, std::string param = "", std::string code = "")
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string type, param, code;
};
nlohmann::json error_json(int status, const std::string& message, const std::string& type, const std::string& param,
                          const std::string& code);

// The parameters of a completion or chat request, checked.
struct Params {
  bool chat = false;
  std::optional<int> max_tokens;  // none: up to the context (chat) / 16 (completions)
  float temperature = 1.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool has_seed = false;
  std::vector<std::string> stop;
  int n = 1;
  bool logprobs = false;
  int top_logprobs = 0;
  bool echo = false;
  bool stream = false;
  bool include_usage = false;
  bool token_ids = false;  // return_tokens_as_token_ids
  bool ignore_eos = false;  // vLLM's extra parameter: generate max_tokens even past end-of-text
  nlohmann::json to_json() const;
};
Params parse_params(const nlohmann::json& body, bool chat);

// The prompts of a completions request, as token ids (strings encoded with BOS), and their text.
struct Prompt {
  std::vector<int32_t> ids;
  std::string text;
  bool added_bos = false;  // ids[0] is a BOS the server put in front of a text prompt (never echoed)
};
std::vector<Prompt> parse_prompts(const nlohmann::json& body, const text::Tokenizer& tok);

// The conversation of a chat request through the model's chat template: ChatML when the vocabulary
// has <|im_start|>, Llama 3's header tokens when it has <|start_header_id|>, otherwise plain
// "role: content" paragraphs ending in "assistant:". Returns the prompt and the template's
// end-of-turn token (-1: none).
Prompt chat_prompt(const nlohmann::json& body, const text::Tokenizer& tok, int32_t* end_of_turn, std::string* template_name);

// A token's text as the API shows it: its decoded bytes, or "bytes:\xNN..." when they are not
// valid UTF-8 on their own (as OpenAI does), or "token_id:N" when ids were asked for.
std::string token_text(const text::Tokenizer& tok, int32_t prev, int32_t id, bool as_id);
bool valid_utf8(std::string_view s);
// Bytes of s up to the last complete UTF-8 sequence.
size_t complete_utf8_prefix(std::string_view s);

}  // namespace lineage::serve
