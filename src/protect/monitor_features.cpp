// Per-request features for the monitor: what a body asks for (log-probabilities of given or of
// generated text, how many tokens, at what temperature), whose text it is (system prompt, the
// user's own words, a conversation that goes on), and hashes of its sentences and words.
#include "monitor_features.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "lineage/core/json.h"
#include "lineage/core/mix.h"

namespace lineage::protect::monitor {

namespace {

using nlohmann::json;

// Public chain-of-thought wordings (Kojima et al. 2022 "Let's think step by step"; Wei et al.
// 2022; the campaign prompts quoted in the labs' reports). Deliberately not exhaustive: a
// paraphrase that avoids them is caught, if at all, by other signals.
constexpr std::string_view kReasoningPhrases[] = {
    "step by step", "step-by-step", "show your work", "showing your work", "explain your reasoning", "your reasoning",
    "reasoning behind", "think through", "walk me through", "walk through", "chain of thought", "worked solution",
    "one step at a time", "reason carefully", "think carefully", "justify", "thought process", "explain each step"};

constexpr std::string_view kStop[] = {"that", "this", "with", "what", "from", "have", "your", "about", "which", "would",
                                      "there", "their", "when", "where", "does", "into", "like", "some", "than", "them",
                                      "then", "they", "will", "more", "just", "also", "been", "were", "please", "could"};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string text_of(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array())  // content parts: [{"type": "text", "text": ...}, ...]
    for (const auto& part : content)
      if (part.is_object() && part.contains("text") && part["text"].is_string()) out += part["text"].get<std::string>() + "\n";
  return out;
}

ParsedText parse_text(const json& body) {
  ParsedText t;
  auto m = body.find("messages");
  if (m != body.end() && m->is_array()) {
    uint64_t chained = 0x415;
    for (const auto& msg : *m) {
      const uint64_t before = chained;
      chained = splitmix64(chained ^ hash_bytes(msg.dump()));
      if (!msg.is_object()) continue;
      const std::string role = msg.value("role", std::string());
      if (role == "assistant") t.history = before;
      if (role == "tool") t.tool = true;
      auto c = msg.find("content");
      if (c == msg.end()) continue;
      if (role == "system" || role == "developer") t.system += text_of(*c);
      else if (role == "assistant") t.follow_up = true;
      else if (role == "user") {
        t.own = text_of(*c);
        if (t.first.empty()) t.first = t.own;
      }
    }
    t.whole = chained;
    return t;
  }
  auto p = body.find("prompt");
  if (p != body.end()) {
    if (p->is_string()) t.own = p->get<std::string>();
    else if (p->is_array() && !p->empty() && (*p)[0].is_string()) t.own = (*p)[0].get<std::string>();
  }
  return t;
}

int64_t int_of(const json& body, const char* name, int64_t fallback) {
  auto it = body.find(name);
  if (it == body.end() || !it->is_number()) return fallback;
  // A logged request is anyone's JSON: 1e40 or 2.5 is not a count (and casting 1e40 is undefined).
  return json_int(*it).value_or(fallback);
}

void read_params(const json& body, Request& r) {
  r.max_tokens = static_cast<int32_t>(int_of(body, "max_completion_tokens", int_of(body, "max_tokens", -1)));
  auto t = body.find("temperature");
  if (t != body.end() && t->is_number()) r.temperature = t->get<float>();
  // logprobs: a bool (chat) or the number of alternatives (completions); top_logprobs (chat).
  auto lp = body.find("logprobs");
  int64_t top = int_of(body, "top_logprobs", 0);
  bool logprobs = false;
  if (lp != body.end()) {
    if (lp->is_boolean()) logprobs = lp->get<bool>();
    else if (lp->is_number()) logprobs = true, top = std::max<int64_t>(top, json_int(*lp).value_or(0));
  }
  logprobs = logprobs || top > 0;
  const bool echo = body.value("echo", false) == true;
  r.samples = static_cast<uint8_t>(std::clamp<int64_t>(int_of(body, "n", 1), 1, 255));
  if (logprobs) r.flags |= kLogprobs;
  if (echo) r.flags |= kEcho;
  if (logprobs && echo && r.max_tokens >= 0 && r.max_tokens <= 1) r.flags |= kScoring;
  r.top_logprobs = static_cast<uint8_t>(std::clamp<int64_t>(top, 0, 255));
}

// Sentences of `text` (split at . ! ? : and line ends), numbers folded, as hashes whose low bit
// says whether the sentence asks for reasoning.
void sentence_hashes(std::string_view text, std::vector<uint64_t>& out, int max) {
  size_t start = 0;
  std::vector<uint64_t> words;
  for (size_t i = 0; i <= text.size() && max > 0; ++i) {
    const bool end = i == text.size() || text[i] == '.' || text[i] == '!' || text[i] == '?' || text[i] == '\n' || text[i] == ':';
    if (!end) continue;
    std::string_view s = text.substr(start, i - start);
    start = i + 1;
    word_hashes(s, words);
    if (words.size() < 4) continue;  // too short to be anybody's template
    uint64_t h = 0x5e17e;
    for (uint64_t w : words) h = splitmix64(h ^ w);
    out.push_back((h & ~uint64_t{1}) | (asks_for_reasoning(lower(s)) ? 1 : 0));
    --max;
  }
}

// The first n word hashes folded into one: a text's identity up to case, punctuation and numbers.
uint64_t chain(const std::vector<uint64_t>& words, size_t n) {
  uint64_t h = 0xc0de;
  for (size_t i = 0; i < words.size() && i < n; ++i) h = splitmix64(h ^ words[i]);
  return h;
}

bool is_stop(std::string_view w) {
  return w.size() < 4 || std::find(std::begin(kStop), std::end(kStop), w) != std::end(kStop);
}

}  // namespace

uint64_t number_token() {
  static const uint64_t h = hash_bytes("<number>");
  return h;
}

void word_hashes(std::string_view text, std::vector<uint64_t>& out) {
  out.clear();
  size_t i = 0;
  char buf[64];
  while (i < text.size()) {
    while (i < text.size() && !std::isalnum(static_cast<unsigned char>(text[i])) && static_cast<unsigned char>(text[i]) < 0x80) ++i;
    size_t n = 0;
    bool digits = true;
    while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || static_cast<unsigned char>(text[i]) >= 0x80)) {
      digits = digits && std::isdigit(static_cast<unsigned char>(text[i]));
      if (n < sizeof buf) buf[n++] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
      ++i;
    }
    if (n) out.push_back(digits ? number_token() : hash_bytes(std::string_view(buf, n)));
  }
}

bool asks_for_reasoning(std::string_view low) {
  for (auto p : kReasoningPhrases)
    if (low.find(p) != std::string_view::npos) return true;
  return false;
}

std::string network_of(const std::string& a) {
  if (a.find(':') != std::string::npos) {  // IPv6: the first three groups (/48)
    size_t cut = 0;
    for (int g = 0; g < 3 && cut != std::string::npos; ++g) cut = a.find(':', cut ? cut + 1 : 0);
    return cut == std::string::npos ? a : a.substr(0, cut);
  }
  const size_t last = a.rfind('.');
  return last == std::string::npos ? a : a.substr(0, last);
}

void parse_request(const RequestRecord& rec, Request& r, std::vector<uint64_t>& sentences, std::vector<uint64_t>& words) {
  r.ms = rec.unix_ms;
  r.prompt_tokens = static_cast<int32_t>(std::clamp<int64_t>(rec.prompt_tokens, 0, INT32_MAX));
  r.completion_tokens = static_cast<int32_t>(std::clamp<int64_t>(rec.completion_tokens, 0, INT32_MAX));
  if (rec.status >= 400) r.flags |= kFailed;
  ParsedText text;
  json body = rec.body.empty() ? json() : parse_json_or_discarded(rec.body);
  if (body.is_object()) {
    read_params(body, r);
    text = parse_text(body);
  } else {
    // A lineage log without bodies: the sampling parameters and the rendered prompt.
    json params = parse_json_or_discarded(rec.params.empty() ? "{}" : rec.params);
    if (params.is_object()) read_params(params, r);
    text.own = rec.prompt;
  }
  if (text.own.rfind("#sha256:", 0) == 0) {  // no text was logged: only exact repeats are seen
    r.content = r.prefix = hash_bytes(text.own);
    return;
  }
  if (text.follow_up) r.flags |= kFollowUp;
  if (text.tool) r.flags |= kTool;
  if (!text.own.empty()) r.flags |= kHasText;
  r.history = text.history;
  r.whole = text.whole ? text.whole : hash_bytes(text.own);
  r.own_bytes = static_cast<uint32_t>(std::min<size_t>(text.own.size(), UINT32_MAX));
  r.first_sentence = static_cast<uint32_t>(sentences.size());
  sentence_hashes(text.own, sentences, 12);
  r.n_sentences = static_cast<uint8_t>(sentences.size() - r.first_sentence);
  if (!text.system.empty()) {
    r.system = hash_bytes(text.system);
    if (asks_for_reasoning(lower(text.system))) r.flags |= kReasoningAny;
  }
  word_hashes(text.own, words);
  r.content = chain(words, words.size());
  r.prefix = chain(words, 16);
  r.head = chain(words, 3);
  r.tail = words.size() <= 3 ? r.head : chain(std::vector<uint64_t>(words.end() - 3, words.end()), 3);
  if (text.first.empty() || text.first == text.own) {
    r.conversation = r.content;
  } else {
    word_hashes(text.first, words);
    r.conversation = chain(words, words.size());
  }
  // The own text's content words, for the key's profile (stop words and short words dropped).
  words.clear();
  std::string low = lower(text.own);
  if (asks_for_reasoning(low)) r.flags |= kReasoningAny;
  size_t i = 0;
  while (i < low.size()) {
    while (i < low.size() && !std::isalpha(static_cast<unsigned char>(low[i]))) ++i;
    size_t j = i;
    while (j < low.size() && std::isalpha(static_cast<unsigned char>(low[j]))) ++j;
    std::string_view w(low.data() + i, j - i);
    if (!is_stop(w)) words.push_back(hash_bytes(w));
    i = j;
  }
}

}  // namespace lineage::protect::monitor
