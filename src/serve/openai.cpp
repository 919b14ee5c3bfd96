// OpenAI request parsing for `lineage serve`. Parameter ranges as the OpenAI API reference states
// them (temperature 0..2, top_p 0..1, n >= 1, stop up to 4 strings, top_logprobs 0..20).
#include "serve/openai.h"

#include "lineage/core/json.h"
#include "lineage/core/error.h"
#include "lineage/text/chat_template.h"
#include "lineage/text/utf8.h"

namespace lineage::serve {

using json = nlohmann::json;

json error_json(int status, const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

namespace {

[[noreturn]] void invalid(const std::string& param, const std::string& message) {
  throw ApiError(400, message, "invalid_request_error", param);
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

std::optional<int64_t> get_int(const json& b, const char* name, int64_t lo, int64_t hi) {
  if (!b.contains(name) || b[name].is_null()) return std::nullopt;
  const auto& v = b[name];
  if (!v.is_number_integer() && !(v.is_number_float() && v.get<double>() == std::floor(v.get<double>())))
    invalid(name, fmt::format("'{}' must be an integer, got {}", name, type_name(v)));
  double d = v.get<double>();
  if (d < double(lo) || d > double(hi)) invalid(name, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, v.dump()));
  return v.is_number_float() ? static_cast<int64_t>(d) : v.get<int64_t>();
}

std::optional<double> get_number(const json& b, const char* name, double lo, double hi) {
  if (!b.contains(name) || b[name].is_null()) return std::nullopt;
  const auto& v = b[name];
  if (!v.is_number()) invalid(name, fmt::format("'{}' must be a number, got {}", name, type_name(v)));
  double d = v.get<double>();
  if (!(d >= lo && d <= hi)) invalid(name, fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, v.dump()));
  return d;
}

std::optional<bool> get_bool(const json& b, const char* name) {
  if (!b.contains(name) || b[name].is_null()) return std::nullopt;
  if (!b[name].is_boolean()) invalid(name, fmt::format("'{}' must be a boolean, got {}", name, type_name(b[name])));
  return b[name].get<bool>();
}

}  // namespace

json Params::to_json() const {
  json j = {{"temperature", temperature}, {"top_p", top_p}, {"n", n}, {"stream", stream}};
  j["max_tokens"] = max_tokens ? json(*max_tokens) : json(nullptr);
  if (has_seed) j["seed"] = seed;
  if (!stop.empty()) j["stop"] = stop;
  if (logprobs) j["logprobs"] = true;
  if (top_logprobs) j["top_logprobs"] = top_logprobs;
  if (echo) j["echo"] = true;
  if (ignore_eos) j["ignore_eos"] = true;
  return j;
}

Params parse_params(const json& b, bool chat) {
  Params p;
  p.chat = chat;
  auto mt = get_int(b, "max_completion_tokens", chat ? 1 : 0, 1 << 30);
  if (!mt) mt = get_int(b, "max_tokens", chat ? 1 : 0, 1 << 30);
  if (mt) p.max_tokens = static_cast<int>(*mt);
  if (auto t = get_number(b, "temperature", 0, 2)) p.temperature = static_cast<float>(*t);
  if (auto t = get_number(b, "top_p", 0, 1)) {
    if (*t <= 0) invalid("top_p", "'top_p' must be greater than 0");
    p.top_p = static_cast<float>(*t);
  }
  if (auto s = get_int(b, "seed", INT64_MIN, INT64_MAX)) {
    p.seed = static_cast<uint64_t>(*s);
    p.has_seed = true;
  }
  if (auto n = get_int(b, "n", 1, 128)) p.n = static_cast<int>(*n);
  if (b.contains("stop") && !b["stop"].is_null()) {
    const auto& s = b["stop"];
    if (s.is_string()) {
      p.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 4) invalid("stop", fmt::format("'stop' holds at most 4 sequences, got {}", s.size()));
      for (const auto& e : s) {
        if (!e.is_string()) invalid("stop", fmt::format("'stop' must be a string or an array of strings, found {}", type_name(e)));
        p.stop.push_back(e.get<std::string>());
      }
    } else {
      invalid("stop", fmt::format("'stop' must be a string or an array of strings, got {}", type_name(s)));
    }
    for (const auto& s2 : p.stop) {
      if (s2.empty()) invalid("stop", "'stop' sequences must not be empty");
      if (s2.size() > kMaxStopBytes)
        invalid("stop", fmt::format("'stop' sequences hold at most {} bytes, got {}", kMaxStopBytes, s2.size()));
    }
  }
  if (chat) {
    p.logprobs = get_bool(b, "logprobs").value_or(false);
    if (auto t = get_int(b, "top_logprobs", 0, 20)) {
      if (!p.logprobs && *t > 0) invalid("top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
      p.top_logprobs = static_cast<int>(*t);
    }
  } else {
    if (auto t = get_int(b, "logprobs", 0, 20)) {
      p.logprobs = true;
      p.top_logprobs = static_cast<int>(*t);
    }
    p.echo = get_bool(b, "echo").value_or(false);
  }
  p.stream = get_bool(b, "stream").value_or(false);
  if (b.contains("stream_options") && !b["stream_options"].is_null()) {
    const auto& so = b["stream_options"];
    if (!so.is_object()) invalid("stream_options", "'stream_options' must be an object");
    if (!p.stream) invalid("stream_options", "'stream_options' is only allowed when 'stream' is true");
    p.include_usage = get_bool(so, "include_usage").value_or(false);
  }
  p.token_ids = get_bool(b, "return_tokens_as_token_ids").value_or(false);
  p.ignore_eos = get_bool(b, "ignore_eos").value_or(false);
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (auto v = get_number(b, name, -2, 2); v && *v != 0)
      invalid(name, fmt::format("'{}' is not supported by this server (only 0)", name));
  if (b.contains("logit_bias") && !b["logit_bias"].is_null() && !(b["logit_bias"].is_object() && b["logit_bias"].empty()))
    invalid("logit_bias", "'logit_bias' is not supported by this server");
  if (auto bo = get_int(b, "best_of", 1, 128); bo && *bo != p.n)
    invalid("best_of", "'best_of' other than n is not supported by this server");
  if (b.contains("user") && !b["user"].is_null() && !b["user"].is_string())
    invalid("user", fmt::format("'user' must be a string, got {}", type_name(b["user"])));
  return p;
}

std::vector<Prompt> parse_prompts(const json& b, const text::Tokenizer& tok) {
  if (!b.contains("prompt")) invalid("prompt", "'prompt' is required");
  const auto& pr = b["prompt"];
  const int32_t V = tok.vocab_size();
  auto from_ids = [&](const json& arr) {
    Prompt p;
    for (const auto& e : arr) {
      if (!e.is_number_integer()) invalid("prompt", fmt::format("token arrays in 'prompt' must hold integers, found {}", type_name(e)));
      int64_t id = e.get<int64_t>();
      if (id < 0 || id >= V) invalid("prompt", fmt::format("token id {} in 'prompt' is outside the vocabulary of {}", id, V));
      p.ids.push_back(static_cast<int32_t>(id));
    }
    if (p.ids.empty()) invalid("prompt", "'prompt' must not be an empty token array");
    p.text = tok.decode(p.ids);
    return p;
  };
  auto from_text = [&](const std::string& s) {
    // BOS by the tokenizer's own rule (tokenizer.json's post-processor, GGUF's add_bos_token), as
    // HF and vLLM do: a Qwen model gets nothing in front of its prompt.
    Prompt p{tok.encode(s, tok.vocab().add_bos), s};
    p.added_bos = tok.vocab().add_bos && tok.bos_id() >= 0;
    if (p.ids.empty()) invalid("prompt", "'prompt' encodes to no tokens (and this tokenizer adds no BOS to start from)");
    return p;
  };
  std::vector<Prompt> out;
  if (pr.is_string()) {
    out.push_back(from_text(pr.get<std::string>()));
  } else if (pr.is_array()) {
    if (pr.empty()) invalid("prompt", "'prompt' must not be an empty array");
    if (!pr[0].is_number_integer() && pr.size() > kMaxPrompts)
      invalid("prompt", fmt::format("'prompt' holds at most {} prompts per request, got {}", kMaxPrompts, pr.size()));
    if (pr[0].is_number_integer()) {
      out.push_back(from_ids(pr));
    } else {
      for (const auto& e : pr) {
        if (e.is_string()) out.push_back(from_text(e.get<std::string>()));
        else if (e.is_array()) out.push_back(from_ids(e));
        else invalid("prompt", fmt::format("'prompt' must be a string, an array of strings, or token arrays; found {}", type_name(e)));
      }
    }
  } else {
    invalid("prompt", fmt::format("'prompt' must be a string, an array of strings, or token arrays; got {}", type_name(pr)));
  }
  return out;
}

Prompt chat_prompt(const json& b, const text::Tokenizer& tok, int32_t* end_of_turn, std::string* template_name) {
  if (!b.contains("messages")) invalid("messages", "'messages' is required");
  const auto& ms = b["messages"];
  if (!ms.is_array() || ms.empty()) invalid("messages", "'messages' must be a non-empty array");
  std::vector<text::ChatMessage> msgs;
  for (size_t i = 0; i < ms.size(); ++i) {
    const auto& m = ms[i];
    auto param = fmt::format("messages[{}]", i);
    if (!m.is_object()) invalid(param, fmt::format("'{}' must be an object", param));
    if (!m.contains("role") || !m["role"].is_string()) invalid(param + ".role", fmt::format("'{}.role' must be a string", param));
    std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" && role != "tool")
      invalid(param + ".role", fmt::format("'{}.role' must be system, developer, user, assistant or tool; got '{}'", param, role));
    std::string content;
    if (!m.contains("content") || m["content"].is_null()) {
      if (role != "assistant") invalid(param + ".content", fmt::format("'{}.content' is required", param));
    } else if (m["content"].is_string()) {
      content = m["content"].get<std::string>();
    } else if (m["content"].is_array()) {
      for (const auto& part : m["content"]) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          invalid(param + ".content", fmt::format("'{}.content' parts must be {{\"type\": \"text\", \"text\": ...}} (this model reads text only)", param));
        content += part["text"].get<std::string>();
      }
    } else {
      invalid(param + ".content", fmt::format("'{}.content' must be a string or an array of text parts", param));
    }
    msgs.push_back({role == "developer" ? "system" : role, content});
  }
  text::ChatPrompt chat = text::apply_chat_template(msgs, tok);
  *template_name = chat.template_name;
  *end_of_turn = chat.end_of_turn;
  Prompt p;
  p.ids = std::move(chat.ids);
  p.text = tok.decode(p.ids);
  return p;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = text::utf8::valid_seq_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

size_t complete_utf8_prefix(std::string_view s) {
  // Back up over at most 3 trailing bytes of a sequence that is not finished yet.
  size_t end = s.size();
  for (size_t back = 1; back <= 4 && back <= s.size(); ++back) {
    unsigned char c = s[s.size() - back];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = text::utf8::seq_len(c);
    if (need > back && c >= 0xC0) end = s.size() - back;
    break;
  }
  return end;
}

std::string token_text(const text::Tokenizer& tok, int32_t prev, int32_t id, bool as_id) {
  if (as_id) return fmt::format("token_id:{}", id);
  const auto& v = tok.vocab();
  if (v.types[id] == text::TokenType::kControl) return v.tokens[id];
  std::string s = tok.decode_piece(prev, id);
  if (valid_utf8(s)) return s;
  std::string out = "bytes:";
  for (unsigned char c : s) out += fmt::format("\\x{:02x}", c);
  return out;
}

}  // namespace lineage::serve
