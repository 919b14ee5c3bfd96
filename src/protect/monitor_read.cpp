// The monitor's first stage: the log read into compact requests, grouped by key, with each key's
// content profile and the sentences that many keys share (boilerplate of products and templates).
#include <algorithm>
#include <numeric>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "lineage/core/error.h"
#include "lineage/core/mix.h"
#include "monitor_internal.h"
#include "request_reader_internal.h"

namespace lineage::protect::monitor {

namespace {

std::unordered_set<uint64_t> allowed_sentences(const MonitorOptions& o) {
  std::unordered_set<uint64_t> out;
  std::vector<uint64_t> s, w;
  for (const auto& text : o.allow_texts) {
    RequestRecord rec;
    rec.body = nlohmann::json({{"prompt", text}}).dump();
    Request r;
    s.clear();
    parse_request(rec, r, s, w);
    for (uint64_t h : s) out.insert(h & ~uint64_t{1});
    out.insert(hash_bytes(text));  // a system prompt given whole
  }
  return out;
}

void add_profile(Corpus& c, uint32_t key, const std::vector<uint64_t>& words) {
  if (c.profile.size() <= key) c.profile.resize(key + 1), c.coverage.resize(key + 1), c.words_seen.resize(key + 1);
  c.words_seen[key] += static_cast<int64_t>(words.size());
  auto& p = c.profile[key];
  for (uint64_t w : words) {
    c.coverage[key].set(w % kCoverageBits);
    auto it = p.find(w);
    if (it != p.end()) ++it->second;
    else if (p.size() < kProfileWords) p.emplace(w, 1);
  }
}

// Sorts by key and time; counts, for every sentence sent by 2+ keys, the distinct keys that sent it
// (a sentence absent from sentence_keys was sent by one key). Each key's distinct sentences are
// gathered and sorted, not counted in hash maps: at 1.65M requests two maps over every sentence
// held most of the analysis's memory.
void group_by_key(Corpus& c) {
  std::sort(c.requests.begin(), c.requests.end(),
            [](const Request& a, const Request& b) { return a.key != b.key ? a.key < b.key : a.ms < b.ms; });
  c.range.assign(c.keys.size(), {0, 0});
  std::vector<uint64_t> all, mine;
  for (size_t i = 0; i < c.requests.size();) {
    size_t j = i;
    const uint32_t key = c.requests[i].key;
    while (j < c.requests.size() && c.requests[j].key == key) ++j;
    c.range[key] = {i, j};
    mine.clear();
    for (size_t q = i; q < j; ++q) {
      const auto& r = c.requests[q];
      for (uint32_t s = 0; s < r.n_sentences; ++s) mine.push_back(c.sentences[r.first_sentence + s] & ~uint64_t{1});
    }
    std::sort(mine.begin(), mine.end());
    all.insert(all.end(), mine.begin(), std::unique(mine.begin(), mine.end()));
    i = j;
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j] == all[i]) ++j;
    if (j - i >= 2) c.sentence_keys[all[i]] = static_cast<uint32_t>(j - i);
    i = j;
  }
}

}  // namespace

CorpusReader::CorpusReader(const MonitorOptions& options)
    : allow_keys_(options.allow_keys.begin(), options.allow_keys.end()), allowed_(allowed_sentences(options)) {}

void CorpusReader::add(Corpus& c, RequestRecord&& rec, const simdjson::dom::element* body, const std::string& path) {
  if (allow_keys_.count(rec.key)) return;
  Request r;
  const size_t before = c.sentences.size();
  if (!rec.response_sha256.empty() && !c.answers_logged) c.answers_logged = true, c.answers_from_ms = rec.unix_ms + 3600000;
  try {
    if (body) parse_request(rec, *body, r, c.sentences, words_, c.answers_logged);
    else parse_request(rec, r, c.sentences, words_, c.answers_logged);
  } catch (const std::exception& e) {
    fail("'{}': a request of key '{}' at {} ms could not be read: {}", path, rec.key, rec.unix_ms, e.what());
  }
  if (!allowed_.empty()) {  // known templates link nobody and say nothing
    auto end = std::remove_if(c.sentences.begin() + static_cast<std::ptrdiff_t>(before), c.sentences.end(),
                              [&](uint64_t h) { return allowed_.count(h & ~uint64_t{1}) > 0; });
    c.sentences.erase(end, c.sentences.end());
    r.n_sentences = static_cast<uint8_t>(c.sentences.size() - before);
    if (allowed_.count(r.system)) r.system = 0, r.flags &= static_cast<uint16_t>(~kReasoningAny);
  }
  r.key = c.keys(rec.key);
  r.client = c.clients(rec.client);
  r.network = c.networks(network_of(rec.client));
  r.agent = c.agents(rec.user_agent);
  for (size_t at = 0; at < rec.response_sha256.size();) {
    size_t comma = rec.response_sha256.find(',', at);
    if (comma == std::string::npos) comma = rec.response_sha256.size();
    if (uint64_t d = digest_word_of_hex(std::string_view(rec.response_sha256).substr(at, comma - at))) c.served.emplace(d, r.key);
    at = comma + 1;
  }
  add_profile(c, r.key, words_);
  c.requests.push_back(r);
}

void finish_corpus(Corpus& c, const MonitorOptions& options) {
  if (options.window_days > 0 && !c.requests.empty()) {
    int64_t last = 0;
    for (const auto& r : c.requests) last = std::max(last, r.ms);
    const int64_t from = last - static_cast<int64_t>(options.window_days * 86400000.0);
    c.requests.erase(std::remove_if(c.requests.begin(), c.requests.end(), [&](const Request& r) { return r.ms < from; }),
                     c.requests.end());
    // The sentences of the requests kept, and no others (a followed log's memory stays the window's).
    std::vector<uint64_t> kept;
    for (auto& r : c.requests) {
      const auto first = c.sentences.begin() + r.first_sentence;
      r.first_sentence = static_cast<uint32_t>(kept.size());
      kept.insert(kept.end(), first, first + r.n_sentences);
    }
    c.sentences = std::move(kept);
  }
  c.profile.resize(c.keys.size());
  c.coverage.resize(c.keys.size());
  c.words_seen.resize(c.keys.size());
  c.sentence_keys.clear();
  group_by_key(c);
  int64_t active = 0;
  for (auto& [a, b] : c.range) active += b > a;
  c.boilerplate_keys = static_cast<uint32_t>(std::max<int64_t>(8, active / 100));
  for (auto& r : c.requests) {
    r.flags &= static_cast<uint16_t>(~kReasoning);
    for (uint32_t s = 0; s < r.n_sentences; ++s) {
      const uint64_t h = c.sentences[r.first_sentence + s];
      if (!(h & 1)) continue;
      auto it = c.sentence_keys.find(h & ~uint64_t{1});
      if ((it == c.sentence_keys.end() ? 1 : it->second) < c.boilerplate_keys) r.flags |= kReasoning;
    }
  }
}

Corpus read_corpus(const std::string& path, const MonitorOptions& options) {
  Corpus c;
  CorpusReader reader(options);
  read_request_log_parsed(path, [&](RequestRecord&& rec, const simdjson::dom::element* body) { reader.add(c, std::move(rec), body, path); });
  finish_corpus(c, options);
  return c;
}

int64_t answer_sent_to(const Corpus& c, const Request& r) {
  if (!c.answers_logged || r.answer == 0 || r.ms < c.answers_from_ms) return kUnchecked;
  auto it = c.served.find(r.answer);
  return it == c.served.end() ? kNeverSent : int64_t{it->second};
}

}  // namespace lineage::protect::monitor
