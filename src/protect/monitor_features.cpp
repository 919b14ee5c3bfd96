// Per-request features for the monitor: what a body asks for (log-probabilities of given or of
// generated text, how many tokens, at what temperature), whose text it is (system prompt, the
// user's own words, a conversation that goes on), and hashes of its sentences and words.
#include "monitor_features.h"

#include <algorithm>
#include <simdjson.h>

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "lineage/core/hash.h"
#include "lineage/core/mix.h"
#include "simdjson_int.h"

namespace lineage::protect::monitor {

namespace {

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

// A coarse taxonomy of what prompts ask for, after the capability areas the public reports say
// campaigns sweep (mathematics, code, reasoning, tool use, safety, languages, domains of
// knowledge) and what products are built on (writing, data work). General vocabulary written
// here, one word each; a prompt falls in every area one of its words names. A key's breadth over
// these areas tells a sweep of capabilities from one product's narrow task.
constexpr std::string_view kCapabilityWords[kCapabilities][24] = {
    {"solve", "equation", "integral", "derivative", "calculate", "probability", "theorem", "proof", "algebra", "geometry",
     "matrix", "polynomial", "arithmetic", "fraction", "percentage", "statistics", "variance", "compute", "prime", "factorial"},
    {"code", "function", "python", "javascript", "typescript", "java", "rust", "sql", "bug", "debug", "compile", "algorithm",
     "regex", "script", "refactor", "api", "database", "programming", "class", "implement", "runtime", "exception"},
    {"puzzle", "riddle", "logic", "logical", "deduce", "infer", "paradox", "syllogism", "premise", "conclusion", "argument",
     "fallacy", "hypothesis", "implies"},
    {"tool", "tools", "agent", "execute", "command", "shell", "terminal", "browser", "click", "navigate", "file", "directory",
     "search", "query"},
    {"harmful", "illegal", "weapon", "weapons", "hack", "hacking", "exploit", "jailbreak", "malware", "dangerous", "ethical",
     "ethics", "unsafe", "violence", "bypass", "poison"},
    {"translate", "translation", "french", "spanish", "german", "chinese", "japanese", "korean", "arabic", "russian",
     "portuguese", "italian", "hindi", "language", "grammar"},
    {"physics", "chemistry", "biology", "molecule", "atom", "quantum", "evolution", "gene", "protein", "cell", "energy",
     "reaction", "photosynthesis", "gravity", "electron", "climate"},
    {"patient", "symptom", "symptoms", "diagnosis", "disease", "treatment", "clinical", "medical", "medicine", "dose", "doctor",
     "therapy", "infection", "surgery"},
    {"legal", "law", "contract", "court", "statute", "liability", "regulation", "lawsuit", "attorney", "plaintiff", "clause",
     "jurisdiction"},
    {"stock", "market", "investment", "revenue", "tax", "accounting", "finance", "financial", "budget", "marketing", "sales",
     "startup", "business", "profit", "economy", "inflation"},
    {"history", "historical", "war", "empire", "century", "philosophy", "religion", "literature", "novel", "author", "ancient",
     "revolution", "culture"},
    {"story", "poem", "essay", "blog", "email", "letter", "summarize", "summary", "rewrite", "slogan", "headline", "article",
     "tweet", "caption"},
    {"classify", "label", "sentiment", "extract", "json", "categorize", "category", "tag", "entity", "entities", "csv",
     "annotate"},
};

// Area mask of one word hash (0: none).
uint16_t capability_of(uint64_t word) {
  static const std::unordered_map<uint64_t, uint16_t> areas = [] {
    std::unordered_map<uint64_t, uint16_t> m;
    for (int a = 0; a < kCapabilities; ++a)
      for (auto w : kCapabilityWords[a])
        if (!w.empty()) m[hash_bytes(w)] |= static_cast<uint16_t>(1u << a);
    return m;
  }();
  auto it = areas.find(word);
  return it == areas.end() ? 0 : it->second;
}

// ASCII only, as the "C" locale's ctype functions (bytes >= 0x80 are letters of words).
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool is_alpha(unsigned char c) { return static_cast<unsigned char>((c | 32) - 'a') < 26; }
inline char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c | 32) : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = to_lower(c);
  return out;
}

// Where the reasoning phrases start in lowercase text (none holds a sentence end, so each lies
// within one sentence).
void reasoning_at(std::string_view low, std::vector<size_t>& at) {
  at.clear();
  // One pass: a table of the phrases' first two bytes says where one may start.
  static const std::vector<bool> starts = [] {
    std::vector<bool> t(65536, false);
    for (auto p : kReasoningPhrases) t[static_cast<unsigned char>(p[0]) << 8 | static_cast<unsigned char>(p[1])] = true;
    return t;
  }();
  for (size_t i = 0; i + 1 < low.size(); ++i) {
    if (!starts[static_cast<unsigned char>(low[i]) << 8 | static_cast<unsigned char>(low[i + 1])]) continue;
    for (auto p : kReasoningPhrases)
      if (low.compare(i, p.size(), p) == 0) {
        at.push_back(i);
        break;
      }
  }
}

// A message's text for its identity: long histories are re-sent with every agent step, so 8
// bytes at a time (the FNV of hash_bytes takes a byte at a time).
uint64_t hash_text(std::string_view s) {
  uint64_t h = splitmix64(0x7e47 ^ s.size());
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = splitmix64(h ^ w);
  }
  uint64_t rest = 0;
  if (i < s.size()) std::memcpy(&rest, s.data() + i, s.size() - i);  // an empty view's data() may be null
  return splitmix64(h ^ rest);
}

namespace dom = simdjson::dom;

// A message's text: the string itself, or its content parts' texts ([{"type": "text", "text"}])
// joined into `buf`.
std::string_view text_of(dom::element content, std::string& buf) {
  std::string_view v;
  if (!content.get_string().get(v)) return v;
  buf.clear();
  dom::array parts;
  if (!content.get_array().get(parts))
    for (dom::element part : parts)
      if (!part["text"].get_string().get(v)) buf.append(v).push_back('\n');
  return buf;
}

// An assistant turn as the client received it (protect/request_record.h, response_sha256): its
// content, or for a turn of tool calls only, each call's function name and arguments text.
std::string answer_text(dom::object msg, std::string_view content) {
  if (!content.empty()) return std::string(content);
  std::string out;
  dom::array calls;
  if (msg["tool_calls"].get_array().get(calls)) return out;
  std::string_view v;
  for (dom::element call : calls) {
    if (!call["function"]["name"].get_string().get(v)) out.append(v);
    out.push_back('\n');
    if (!call["function"]["arguments"].get_string().get(v)) out.append(v);
    out.push_back('\n');
  }
  return out;
}

uint64_t digest_word(std::string_view text) {
  const Digest d = sha256(text);
  uint64_t h = 0;
  for (int i = 0; i < 8; ++i) h = h << 8 | d[static_cast<size_t>(i)];
  return h;
}

ParsedText parse_text(dom::object body, bool answers) {
  ParsedText t;
  dom::array messages;
  if (!body["messages"].get_array().get(messages)) {
    uint64_t chained = 0x415;
    std::string buf;
    dom::element own, first;
    bool has_own = false;
    for (dom::element item : messages) {
      const uint64_t before = chained;
      dom::object msg;
      if (item.get_object().get(msg)) {
        chained = splitmix64(chained ^ hash_text(simdjson::minify(item)));
        continue;
      }
      std::string_view role;
      if (msg["role"].get_string().get(role)) role = {};
      dom::element c;
      const bool has_content = simdjson_field(msg, "content", c);
      const std::string_view content = has_content ? text_of(c, buf) : std::string_view();
      // A message's identity: its role, its text and its tool calls.
      uint64_t h = splitmix64(hash_bytes(role) ^ hash_text(content));
      dom::element calls;
      if (simdjson_field(msg, "tool_calls", calls)) h = splitmix64(h ^ hash_text(simdjson::minify(calls)));
      chained = splitmix64(chained ^ h);
      if (role == "assistant") {
        t.history = before;
        t.follow_up = true;
        if (answers) {
          const std::string said = answer_text(msg, content);
          t.answer = said.empty() ? 0 : digest_word(said);
        }
      }
      if (role == "tool") t.tool = true;
      if (role == "system" || role == "developer") t.system += content;
      else if (role == "user" && has_content) {
        if (!has_own) first = c;
        own = c, has_own = true;
      }
    }
    t.whole = chained;
    if (has_own) {
      t.own = std::string(text_of(own, buf));
      t.first = std::string(text_of(first, buf));
    }
    return t;
  }
  dom::element p;
  std::string_view v;
  if (simdjson_field(body, "prompt", p)) {
    dom::array prompts;
    if (!p.get_string().get(v)) t.own = std::string(v);
    else if (!p.get_array().get(prompts) && prompts.size() > 0 && !prompts.at(0).get_string().get(v)) t.own = std::string(v);
  }
  return t;
}

int64_t int_of(dom::object body, const char* name, int64_t fallback) {
  dom::element e;
  if (!simdjson_field(body, name, e) || !e.is_number()) return fallback;
  // A logged request is anyone's JSON: 1e40 or 2.5 is not a count (and casting 1e40 is undefined).
  return simdjson_int(e).value_or(fallback);
}

void read_params(dom::object body, Request& r) {
  r.max_tokens = static_cast<int32_t>(std::clamp<int64_t>(int_of(body, "max_completion_tokens", int_of(body, "max_tokens", -1)), -1, INT32_MAX));
  double temperature;
  if (!body["temperature"].get_double().get(temperature) && std::isfinite(temperature))
    r.temperature = static_cast<float>(std::clamp(temperature, -1.0, 100.0));
  // logprobs: a bool (chat) or the number of alternatives (completions); top_logprobs (chat).
  dom::element lp;
  int64_t top = int_of(body, "top_logprobs", 0);
  bool logprobs = false;
  if (simdjson_field(body, "logprobs", lp)) {
    bool b;
    if (!lp.get_bool().get(b)) logprobs = b;
    else if (lp.is_number()) logprobs = true, top = std::max<int64_t>(top, simdjson_int(lp).value_or(0));
  }
  logprobs = logprobs || top > 0;
  bool echo = false;
  if (body["echo"].get_bool().get(echo)) echo = false;
  r.samples = static_cast<uint8_t>(std::clamp<int64_t>(int_of(body, "n", 1), 1, 255));
  if (logprobs) r.flags |= kLogprobs;
  if (echo) r.flags |= kEcho;
  if (logprobs && echo && r.max_tokens >= 0 && r.max_tokens <= 1) r.flags |= kScoring;
  r.top_logprobs = static_cast<uint8_t>(std::clamp<int64_t>(top, 0, 255));
}

// Sentences of lowercase `low` (split at . ! ? : and line ends), numbers folded, as hashes whose
// low bit says whether the sentence asks for reasoning (a phrase of `reasoning` starts in it).
// `words` and `starts`: the text's word hashes and where each begins (no word holds a sentence end).
void sentence_hashes(std::string_view low, const std::vector<uint64_t>& words, const std::vector<size_t>& starts,
                     const std::vector<size_t>& reasoning, std::vector<uint64_t>& out, int max) {
  size_t start = 0, w = 0;
  for (size_t i = 0; i <= low.size() && max > 0; ++i) {
    const bool end = i == low.size() || low[i] == '.' || low[i] == '!' || low[i] == '?' || low[i] == '\n' || low[i] == ':';
    if (!end) continue;
    const size_t from = start, first = w;
    start = i + 1;
    while (w < starts.size() && starts[w] < i) ++w;
    if (w - first < 4) continue;  // too short to be anybody's template
    uint64_t h = 0x5e17e;
    for (size_t k = first; k < w; ++k) h = splitmix64(h ^ words[k]);
    const bool asks = std::any_of(reasoning.begin(), reasoning.end(), [&](size_t at) { return at >= from && at < i; });
    out.push_back((h & ~uint64_t{1}) | (asks ? 1 : 0));
    --max;
  }
}

// The first n word hashes folded into one: a text's identity up to case, punctuation and numbers.
uint64_t chain(const std::vector<uint64_t>& words, size_t n) {
  uint64_t h = 0xc0de;
  for (size_t i = 0; i < words.size() && i < n; ++i) h = splitmix64(h ^ words[i]);
  return h;
}

// Stop words by their hashes (w's hash is computed anyway).
bool is_stop(std::string_view w, uint64_t hash) {
  static const std::vector<uint64_t> stop = [] {
    std::vector<uint64_t> v;
    for (auto s : kStop) v.push_back(hash_bytes(s));
    std::sort(v.begin(), v.end());
    return v;
  }();
  return w.size() < 4 || std::binary_search(stop.begin(), stop.end(), hash);
}

}  // namespace

uint64_t digest_word_of_hex(std::string_view hex) {
  if (hex.size() != 64) return 0;
  uint64_t h = 0;
  for (size_t i = 0; i < 16; ++i) {
    const char c = to_lower(hex[i]);
    const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return 0;
    h = h << 4 | static_cast<uint64_t>(v);
  }
  return h;
}

uint64_t number_token() {
  static const uint64_t h = hash_bytes("<number>");
  return h;
}

void word_hashes(std::string_view text, std::vector<uint64_t>& out) {
  thread_local std::vector<size_t> starts;
  word_hashes(text, out, starts);
}

void word_hashes(std::string_view text, std::vector<uint64_t>& out, std::vector<size_t>& starts) {
  out.clear();
  starts.clear();
  size_t i = 0;
  char buf[64];
  while (i < text.size()) {
    auto in_word = [](unsigned char c) { return is_alpha(c) || is_digit(c) || c >= 0x80; };
    while (i < text.size() && !in_word(static_cast<unsigned char>(text[i]))) ++i;
    const size_t at = i;
    size_t n = 0;
    bool digits = true;
    while (i < text.size() && in_word(static_cast<unsigned char>(text[i]))) {
      digits = digits && is_digit(static_cast<unsigned char>(text[i]));
      if (n < sizeof buf) buf[n++] = to_lower(text[i]);
      ++i;
    }
    if (n) out.push_back(digits ? number_token() : hash_bytes(std::string_view(buf, n))), starts.push_back(at);
  }
}

bool asks_for_reasoning(std::string_view low) {
  thread_local std::vector<size_t> at;
  reasoning_at(low, at);
  return !at.empty();
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

namespace {

// Everything but the body's parsing.
void parse_request_text(const RequestRecord& rec, const dom::object* body, Request& r, std::vector<uint64_t>& sentences,
                        std::vector<uint64_t>& words, bool answers);

}  // namespace

void parse_request(const RequestRecord& rec, Request& r, std::vector<uint64_t>& sentences, std::vector<uint64_t>& words,
                   bool answers) {
  thread_local dom::parser parser;
  dom::object body;
  const bool parsed = !rec.body.empty() && !parser.parse(rec.body).get_object().get(body);
  parse_request_text(rec, parsed ? &body : nullptr, r, sentences, words, answers);
}

void parse_request(const RequestRecord& rec, const dom::element& element, Request& r, std::vector<uint64_t>& sentences,
                   std::vector<uint64_t>& words, bool answers) {
  dom::object body;
  const bool parsed = !element.get_object().get(body);
  parse_request_text(rec, parsed ? &body : nullptr, r, sentences, words, answers);
}

namespace {

void parse_request_text(const RequestRecord& rec, const dom::object* body, Request& r, std::vector<uint64_t>& sentences,
                        std::vector<uint64_t>& words, bool answers) {
  r.ms = rec.unix_ms;
  r.prompt_tokens = static_cast<int32_t>(std::clamp<int64_t>(rec.prompt_tokens, 0, INT32_MAX));
  r.completion_tokens = static_cast<int32_t>(std::clamp<int64_t>(rec.completion_tokens, 0, INT32_MAX));
  if (rec.status >= 400) r.flags |= kFailed;
  ParsedText text;
  if (body) {
    read_params(*body, r);
    text = parse_text(*body, answers);
  } else {
    // A lineage log without bodies: the sampling parameters and the rendered prompt.
    thread_local dom::parser parser;
    dom::object params;
    if (!rec.params.empty() && !parser.parse(rec.params).get_object().get(params)) read_params(params, r);
    text.own = rec.prompt;
  }
  r.answer = text.answer;
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
  // One lowercase copy of the own text serves its sentences, words, reasoning phrases and
  // content words.
  thread_local std::string low;
  thread_local std::vector<size_t> reasoning;
  low.assign(text.own);
  for (auto& c : low) c = to_lower(c);
  reasoning_at(low, reasoning);
  if (!reasoning.empty()) r.flags |= kReasoningAny;
  thread_local std::vector<size_t> starts;
  word_hashes(low, words, starts);
  r.first_sentence = static_cast<uint32_t>(sentences.size());
  sentence_hashes(low, words, starts, reasoning, sentences, 12);
  r.n_sentences = static_cast<uint8_t>(sentences.size() - r.first_sentence);
  if (!text.system.empty()) {
    r.system = hash_bytes(text.system);
    // A product sends its system prompt with every request: each one is read once.
    thread_local std::unordered_map<uint64_t, bool> system_asks;
    if (system_asks.size() > 100000) system_asks.clear();
    auto [it, fresh] = system_asks.emplace(r.system, false);
    if (fresh) it->second = asks_for_reasoning(lower(text.system));
    if (it->second) r.flags |= kReasoningAny;
  }
  for (uint64_t w : words) r.capabilities |= capability_of(w);
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
  size_t i = 0;
  while (i < low.size()) {
    while (i < low.size() && !is_alpha(static_cast<unsigned char>(low[i]))) ++i;
    size_t j = i;
    while (j < low.size() && is_alpha(static_cast<unsigned char>(low[j]))) ++j;
    std::string_view w(low.data() + i, j - i);
    if (w.size() >= 4) {
      const uint64_t h = hash_bytes(w);
      if (!is_stop(w, h)) words.push_back(h);
    }
    i = j;
  }
}

}  // namespace

}  // namespace lineage::protect::monitor
