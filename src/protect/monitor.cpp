// Extraction-campaign detection over the request log. See include/lineage/protect/monitor.h.
#include "lineage/protect/monitor.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "lineage/core/error.h"

namespace lineage::protect {

namespace {

constexpr int kBins = 12;   // MinHash values per prompt (one-permutation hashing)
constexpr int kRows = 3;    // values per LSH band
constexpr int kBands = kBins / kRows;
constexpr int kKeys = 2 * kBands + 2;  // bands of the prompt, of its skeleton, its first and last words

uint64_t mix64(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash_bytes(std::string_view s) {  // FNV-1a, then mixed
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return mix64(h);
}

// Lowercased words of letters and digits.
void words_of(std::string_view text, std::vector<uint64_t>& out) {
  out.clear();
  std::string w;
  for (size_t i = 0; i <= text.size(); ++i) {
    unsigned char c = i < text.size() ? static_cast<unsigned char>(text[i]) : ' ';
    if (std::isalnum(c) || c >= 0x80) {
      w.push_back(static_cast<char>(std::tolower(c)));
    } else if (!w.empty()) {
      // Numbers are one word: templates enumerate items ("problem 17", "problem 18").
      bool number = std::all_of(w.begin(), w.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      out.push_back(number ? hash_bytes("<number>") : hash_bytes(w));
      w.clear();
    }
  }
}

// The LSH band keys of a prompt: MinHash over word 3-shingles by one-permutation hashing, empty
// bins filled from the next non-empty one (densification).
std::array<uint64_t, kBands> band_keys(const std::vector<uint64_t>& words, uint64_t salt) {
  std::array<uint64_t, kBins> mins;
  mins.fill(UINT64_MAX);
  auto put = [&](uint64_t h) {
    int bin = static_cast<int>(h % kBins);
    mins[bin] = std::min(mins[bin], h / kBins);
  };
  if (words.size() < 8) {
    // Too few shingles for a MinHash to mean anything: the words as a whole (exact repeats).
    uint64_t h = std::accumulate(words.begin(), words.end(), uint64_t{7}, [](uint64_t a, uint64_t b) { return mix64(a ^ b); });
    std::array<uint64_t, kBands> keys;
    for (int b = 0; b < kBands; ++b) keys[b] = mix64(h + static_cast<uint64_t>(b) + salt);
    return keys;
  } else {
    for (size_t i = 0; i + 2 < words.size(); ++i) put(mix64(words[i] ^ mix64(words[i + 1] ^ mix64(words[i + 2]))));
  }
  for (int i = 0; i < kBins; ++i)
    if (mins[i] == UINT64_MAX)
      for (int j = 1; j < kBins; ++j)
        if (mins[(i + j) % kBins] != UINT64_MAX) {
          mins[i] = mix64(mins[(i + j) % kBins] + static_cast<uint64_t>(j));
          break;
        }
  std::array<uint64_t, kBands> keys;
  for (int b = 0; b < kBands; ++b) {
    uint64_t h = mix64(static_cast<uint64_t>(b) + 0x51ed270b + salt);
    for (int r = 0; r < kRows; ++r) h = mix64(h ^ mins[b * kRows + r]);
    keys[b] = h;
  }
  return keys;
}

// Phrases that ask a model to spell out its reasoning: what a distiller wants to copy.
bool elicits_reasoning(std::string_view prompt) {
  static const char* kPhrases[] = {"step by step",       "step-by-step",   "reasoning behind", "your reasoning",
                                   "articulate",         "show your work", "think through",    "walk me through",
                                   "walk through",       "chain of thought", "explain each step", "reason carefully",
                                   "justify each",       "thought process", "lay out the logic", "showing your work",
                                   "worked solution"};
  std::string low(prompt);
  for (auto& c : low) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* p : kPhrases)
    if (low.find(p) != std::string::npos) return true;
  return false;
}

struct Request {
  uint32_t key;
  int64_t ms;
  uint32_t client, agent;
  uint64_t prompt_hash;
  int64_t completion;
  std::array<uint64_t, kKeys> bands;
  bool logprobs, reasoning;
};

struct Bucket {
  int64_t count = 0;
  std::unordered_set<uint64_t> prompts;  // distinct prompts (capped)
  std::unordered_set<uint32_t> keys;     // distinct keys (capped)
};

struct UnionFind {
  std::vector<uint32_t> parent;
  explicit UnionFind(size_t n) : parent(n) { std::iota(parent.begin(), parent.end(), 0u); }
  uint32_t find(uint32_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  }
  void join(uint32_t a, uint32_t b) { parent[find(a)] = find(b); }
};

std::string pct(double x) { return fmt::format("{:.0f}%", 100 * x); }

class Interner {
 public:
  uint32_t operator()(const std::string& s) {
    auto [it, fresh] = ids_.emplace(s, static_cast<uint32_t>(names_.size()));
    if (fresh) names_.push_back(s);
    return it->second;
  }
  const std::string& name(uint32_t id) const { return names_[id]; }
  size_t size() const { return names_.size(); }

 private:
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::string> names_;
};

const char* text_at(sqlite3_stmt* st, int col) {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, col));
  return p ? p : "";
}

}  // namespace

MonitorReport analyze_log(const std::string& db_path, const MonitorOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    fail("cannot open the request log '{}': {}", db_path, m);
  }
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(db, sqlite3_close);
  sqlite3_stmt* st = nullptr;
  const char* sql =
      "SELECT key_id, unix_ms, client, user_agent, prompt_tokens, completion_tokens, params, prompt, prompt_sha256 "
      "FROM requests ORDER BY key_id, unix_ms";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK)
    fail("'{}' is not a lineage request log (table requests with key_id, unix_ms, client, user_agent, ...): {}", db_path,
         sqlite3_errmsg(db));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(st, sqlite3_finalize);

  Interner keys, clients, agents;
  std::vector<Request> reqs;
  std::vector<int64_t> prompt_tokens, completion_tokens;
  // A key's prompts are reduced to their skeletons before hashing: the words that recur in at
  // least 3 and 10% of that key's prompts, in order. What a template fills in varies and drops
  // out; what it keeps remains, so the MinHash of the skeleton is the template's.
  std::vector<std::vector<uint64_t>> key_words;  // the current key's prompts as word hashes
  auto finish_key = [&](size_t from) {
    std::unordered_map<uint64_t, int> df;
    for (auto& w : key_words) {
      std::unordered_set<uint64_t> once(w.begin(), w.end());
      for (uint64_t h : once) ++df[h];
    }
    const double need = std::max(3.0, 0.1 * static_cast<double>(key_words.size()));
    std::vector<uint64_t> skeleton;
    for (size_t k = 0; k < key_words.size(); ++k) {
      auto& r = reqs[from + k];
      if (key_words[k].empty()) continue;  // no text logged: bands already set from the prompt hash
      skeleton.clear();
      for (uint64_t h : key_words[k])
        if (df[h] >= need) skeleton.push_back(h);
      // The prompt's own bands find templates with short fillers (even in keys with few
      // prompts); the skeleton's find templates whose fillers are long.
      auto own = band_keys(key_words[k], 0), skel = band_keys(skeleton.empty() ? key_words[k] : skeleton, 1);
      std::copy(own.begin(), own.end(), r.bands.begin());
      std::copy(skel.begin(), skel.end(), r.bands.begin() + kBands);
      // Templates often keep a fixed opening or ending around a long filler.
      const auto& w = key_words[k];
      const size_t n = std::min<size_t>(3, w.size() / 2);
      uint64_t first = mix64(0xf1), last = mix64(0x1a);
      for (size_t i = 0; i < n; ++i) first = mix64(first ^ w[i]), last = mix64(last ^ w[w.size() - 1 - i]);
      r.bands[2 * kBands] = n == 3 ? first : r.prompt_hash;
      r.bands[2 * kBands + 1] = n == 3 ? last : r.prompt_hash;
    }
    key_words.clear();
  };
  size_t key_from = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    Request r;
    r.key = keys(sqlite3_column_type(st, 0) == SQLITE_NULL ? std::string("(no key)") : text_at(st, 0));
    if (!reqs.empty() && r.key != reqs.back().key) {
      finish_key(key_from);
      key_from = reqs.size();
    }
    r.ms = sqlite3_column_int64(st, 1);
    r.client = clients(text_at(st, 2));
    r.agent = agents(text_at(st, 3));
    std::string_view params = text_at(st, 6);
    r.logprobs = params.find("\"logprobs\"") != std::string_view::npos || params.find("\"echo\"") != std::string_view::npos;
    std::string_view prompt = text_at(st, 7);
    std::string_view sha = text_at(st, 8);
    // Without logged text (--no-log-text) only exact repeats are seen, through the prompt hash.
    r.prompt_hash = prompt.empty() ? hash_bytes(sha) : hash_bytes(prompt);
    r.bands.fill(r.prompt_hash);
    key_words.emplace_back();
    if (!prompt.empty()) words_of(prompt, key_words.back());
    r.reasoning = !prompt.empty() && elicits_reasoning(prompt);
    if (prompt_tokens.size() <= r.key) prompt_tokens.resize(r.key + 1), completion_tokens.resize(r.key + 1);
    prompt_tokens[r.key] += sqlite3_column_int64(st, 4);
    r.completion = sqlite3_column_int64(st, 5);
    completion_tokens[r.key] += r.completion;
    reqs.push_back(r);
  }
  if (!reqs.empty()) finish_key(key_from);
  if (rc != SQLITE_DONE) fail("reading the request log '{}': {}", db_path, sqlite3_errmsg(db));

  // Templates: band buckets holding many different prompts.
  std::unordered_map<uint64_t, Bucket> buckets;
  buckets.reserve(reqs.size());
  for (const auto& r : reqs)
    for (uint64_t b : r.bands) {
      auto& k = buckets[b];
      ++k.count;
      if (k.prompts.size() < 64) k.prompts.insert(r.prompt_hash);
      if (k.keys.size() < 4096) k.keys.insert(r.key);
    }
  auto is_template = [&](const Bucket& b) { return b.count >= 5 && b.prompts.size() >= 5; };

  const size_t K = keys.size();
  MonitorReport report;
  report.requests = static_cast<int64_t>(reqs.size());
  std::vector<KeyFindings> kf(K);
  std::vector<std::pair<size_t, size_t>> range(K, {0, 0});
  UnionFind uf(K);
  std::vector<std::vector<uint64_t>> key_templates(K);  // templates each key relies on
  std::unordered_map<uint32_t, std::unordered_set<uint32_t>> keys_by_client;
  for (const auto& r : reqs) keys_by_client[r.client].insert(r.key);
  std::vector<int64_t> counts;

  size_t i = 0;
  while (i < reqs.size()) {
    size_t j = i;
    while (j < reqs.size() && reqs[j].key == reqs[i].key) ++j;
    const uint32_t key = reqs[i].key;
    range[key] = {i, j};  // rows come ordered by key: each key's requests are one range
    auto& f = kf[key];
    f.key_id = keys.name(key);
    f.requests = static_cast<int64_t>(j - i);
    f.prompt_tokens = prompt_tokens[key];
    f.completion_tokens = completion_tokens[key];
    counts.push_back(f.requests);
    std::unordered_map<uint64_t, int> uses, link_uses;  // template -> requests of this key
    std::unordered_set<uint64_t> distinct;
    int64_t lp = 0, cot = 0, on_shared = 0, lp_generated = 0;
    std::array<bool, 24> hours{};
    for (size_t k = i; k < j; ++k) {
      const auto& r = reqs[k];
      lp += r.logprobs;
      if (r.logprobs) lp_generated += r.completion;
      cot += r.reasoning;
      distinct.insert(r.prompt_hash);
      hours[static_cast<size_t>((r.ms / 3600000) % 24)] = true;
      // The request's template: of its band buckets that are templates, the most used one (the
      // same one for every prompt that keeps the template's words).
      // Keys are linked only through the MinHash bands: an opening or ending alone is too
      // common a thing to share.
      const Bucket *best = nullptr, *link = nullptr;
      uint64_t best_key = 0, link_key = 0;
      for (int i = 0; i < kKeys; ++i) {
        const uint64_t b = r.bands[i];
        const auto& bk = buckets[b];
        if (!is_template(bk)) continue;
        if (!best || bk.count > best->count || (bk.count == best->count && b < best_key)) best = &bk, best_key = b;
        if (i < 2 * kBands && (!link || bk.count > link->count || (bk.count == link->count && b < link_key)))
          link = &bk, link_key = b;
      }
      if (best) ++uses[best_key];
      if (link) {
        ++link_uses[link_key];
        on_shared += link->keys.size() >= 3;
      }
    }
    int64_t templated = 0;
    for (auto& [b, n] : uses)
      if (n >= 2) {
        templated += n;
        f.keys_on_template = std::max<int64_t>(f.keys_on_template, static_cast<int64_t>(buckets[b].keys.size()));
      }
    for (auto& [b, n] : link_uses)
      if (n >= 2) key_templates[key].push_back(b);
    // A key links to the others on its templates only when nearly all it sends is on templates
    // shared with other keys: a campaign's keys do that; people who use a common phrasing now
    // and then do not.
    if (on_shared < 0.6 * f.requests || f.requests < 10) key_templates[key].clear();
    f.logprob_share = double(lp) / f.requests;
    f.logprob_generated = lp > 0 ? double(lp_generated) / double(lp) : 0;
    f.cot_share = double(cot) / f.requests;
    f.template_share = double(templated) / f.requests;
    f.novelty = double(distinct.size()) / f.requests;
    f.hours_active = std::count(hours.begin(), hours.end(), true) / 24.0;
    if (f.requests >= 3) {
      double mean = 0, m2 = 0;
      for (size_t k = i + 1; k < j; ++k) mean += double(reqs[k].ms - reqs[k - 1].ms);
      mean /= double(j - i - 1);
      for (size_t k = i + 1; k < j; ++k) m2 += std::pow(double(reqs[k].ms - reqs[k - 1].ms) - mean, 2);
      f.timing_cv = mean > 0 ? std::sqrt(m2 / double(j - i - 1)) / mean : 0;
    }
    std::unordered_set<uint32_t> seen_clients;
    for (size_t k = i; k < j; ++k)
      if (seen_clients.insert(reqs[k].client).second)
        f.keys_on_client = std::max<int64_t>(f.keys_on_client, static_cast<int64_t>(keys_by_client[reqs[k].client].size()));
    i = j;
  }
  std::vector<int64_t> sorted_counts = counts;
  std::sort(sorted_counts.begin(), sorted_counts.end());
  const double median = sorted_counts.empty() ? 1 : std::max<double>(1, sorted_counts[sorted_counts.size() / 2]);

  // Clusters: keys that rely on two or more of the same templates (each used by 3+ keys), or
  // share a client address. One shared template is not enough: people phrase things alike.
  std::unordered_map<uint64_t, std::vector<uint32_t>> keys_on;
  for (uint32_t k = 0; k < K; ++k)
    for (uint64_t b : key_templates[k])
      if (buckets[b].keys.size() >= 3) keys_on[b].push_back(k);
  for (uint32_t k = 0; k < K; ++k) {
    std::unordered_map<uint32_t, int> shared;  // other key -> templates in common
    for (uint64_t b : key_templates[k]) {
      auto it = keys_on.find(b);
      if (it == keys_on.end()) continue;
      for (uint32_t o : it->second)
        if (o != k && ++shared[o] == 2) uf.join(k, o);
    }
  }
  for (auto& [c, ks] : keys_by_client)
    if (ks.size() >= 2 && ks.size() <= 4096) {
      uint32_t first = *ks.begin();
      for (uint32_t k : ks)
        if (kf[k].requests >= options.min_requests && kf[first].requests >= options.min_requests) uf.join(k, first);
    }

  // Each key's own evidence.
  for (auto& f : kf) {
    if (f.requests == 0) continue;
    auto add = [&](double w, std::string why) {
      f.score += w;
      f.reasons.push_back(fmt::format("{} (+{:.2f})", why, w));
    };
    bool specific = false;
    // Log-probabilities of generated text are distillation data; of a given text (echo, no
    // generation) they are how benchmarks are scored, and count for less.
    const double generated = f.logprob_generated;
    if (f.requests >= 20 && f.logprob_share >= 0.5) {
      if (generated >= 16) {
        add(0.5, fmt::format("asks for log-probabilities of generated text in {} of {} requests", pct(f.logprob_share), f.requests));
        specific = true;
      } else {
        add(0.2, fmt::format("asks for log-probabilities in {} of {} requests (scoring, {:.0f} tokens generated each)",
                             pct(f.logprob_share), f.requests, generated));
      }
    }
    if (f.requests >= 10 && f.cot_share >= 0.5) {
      add(0.5, fmt::format("elicits step-by-step reasoning in {} of requests", pct(f.cot_share)));
      specific = true;
    }
    if (f.requests >= 20 && f.template_share >= 0.7)
      add(0.25, fmt::format("{} of its prompts fill a template it reuses", pct(f.template_share)));
    if (f.requests >= 30 && f.timing_cv < 0.5)
      add(0.25, fmt::format("machine-regular timing (gaps vary by {:.2f} of their mean)", f.timing_cv));
    if (f.requests >= 30 && f.hours_active >= 0.9) add(0.15, fmt::format("active in {:.0f} of 24 hours", f.hours_active * 24));
    if (f.requests >= 20 * median) add(0.3, fmt::format("{:.0f}x the median key's volume", f.requests / median));
    if (f.keys_on_template >= 5 && f.template_share >= 0.5)
      add(0.25, fmt::format("its template is used by {} keys", f.keys_on_template));
    if (f.keys_on_client >= 5) add(0.2, fmt::format("its client address is shared by {} keys", f.keys_on_client));
    f.flagged = specific && f.score >= options.threshold && f.requests >= options.min_requests;
  }

  // Cluster evidence.
  std::unordered_map<uint32_t, std::vector<uint32_t>> members;
  for (uint32_t k = 0; k < K; ++k)
    if (kf[k].requests > 0) members[uf.find(k)].push_back(k);
  int next_id = 0;
  for (auto& [root, ks] : members) {
    if (ks.size() < 2) continue;
    ClusterFindings c;
    c.id = next_id++;
    std::unordered_set<uint32_t> uas, cls;
    std::unordered_map<uint64_t, std::unordered_set<uint32_t>> tmpl_keys;
    std::unordered_map<int64_t, std::unordered_set<uint32_t>> minute_keys;
    // The cluster's shares are its median key's: a few loud keys do not colour a crowd.
    std::vector<double> lps, cots, tpls, gens;
    for (uint32_t k : ks) {
      c.keys.push_back(kf[k].key_id);
      c.requests += kf[k].requests;
      c.completion_tokens += kf[k].completion_tokens;
      lps.push_back(kf[k].logprob_share);
      cots.push_back(kf[k].cot_share);
      tpls.push_back(kf[k].template_share);
      gens.push_back(kf[k].logprob_generated);
      for (uint64_t b : key_templates[k]) tmpl_keys[b].insert(k);
    }
    auto median_of = [](std::vector<double>& v) {
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    for (uint32_t k : ks)
      for (size_t q = range[k].first; q < range[k].second; ++q) {
        const auto& r = reqs[q];
        uas.insert(r.agent);
        cls.insert(r.client);
        minute_keys[r.ms / 60000].insert(r.key);
      }
    int64_t synced = 0;
    for (uint32_t k : ks)
      for (size_t q = range[k].first; q < range[k].second; ++q) synced += minute_keys[reqs[q].ms / 60000].size() >= 3;
    for (auto& [b, s] : tmpl_keys) c.shared_templates += s.size() >= 3;
    c.logprob_share = median_of(lps);
    c.cot_share = median_of(cots);
    c.template_share = median_of(tpls);
    const double generated = median_of(gens);
    c.synchrony = double(synced) / c.requests;
    c.user_agents = static_cast<int64_t>(uas.size());
    c.clients = static_cast<int64_t>(cls.size());
    auto add = [&](double w, std::string why) {
      c.score += w;
      c.reasons.push_back(fmt::format("{} (+{:.2f})", why, w));
    };
    const double n = static_cast<double>(ks.size());
    bool specific = false;
    if (c.shared_templates > 0 && n >= 3)
      add(0.3, fmt::format("{} keys share {} prompt template(s)", ks.size(), c.shared_templates));
    if (c.cot_share >= 0.5) {
      add(0.5, fmt::format("its median key elicits step-by-step reasoning in {} of requests", pct(c.cot_share)));
      specific = true;
    }
    if (c.logprob_share >= 0.5) {
      if (generated >= 16) {
        add(0.5, fmt::format("its median key asks for log-probabilities of generated text in {} of requests", pct(c.logprob_share)));
        specific = true;
      } else {
        add(0.2, fmt::format("its median key asks for log-probabilities in {} of requests (scoring)", pct(c.logprob_share)));
      }
    }
    if (c.template_share >= 0.7) add(0.3, fmt::format("its median key fills templates in {} of its prompts", pct(c.template_share)));
    if (c.synchrony >= 0.5 && n >= 3) add(0.3, fmt::format("{} of its requests come in minutes when 3+ of its keys are active", pct(c.synchrony)));
    if (n >= 5 && c.user_agents <= 0.2 * n) add(0.2, fmt::format("{} keys, {} user agents", ks.size(), c.user_agents));
    if (n >= 5 && c.clients <= 0.2 * n) add(0.2, fmt::format("{} keys, {} client addresses", ks.size(), c.clients));
    c.flagged = specific && c.score >= options.threshold;
    for (uint32_t k : ks) {
      kf[k].cluster = c.id;
      if (c.flagged && !kf[k].flagged) {
        kf[k].flagged = true;
        kf[k].reasons.push_back(fmt::format("member of flagged cluster {} ({} keys, score {:.2f})", c.id, ks.size(), c.score));
      }
    }
    report.clusters.push_back(std::move(c));
  }
  for (auto& f : kf)
    if (f.requests > 0) report.keys.push_back(std::move(f));
  std::sort(report.keys.begin(), report.keys.end(), [](const KeyFindings& a, const KeyFindings& b) {
    return a.flagged != b.flagged ? a.flagged : a.score > b.score;
  });
  std::sort(report.clusters.begin(), report.clusters.end(),
            [](const ClusterFindings& a, const ClusterFindings& b) { return a.score > b.score; });
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

nlohmann::json to_json(const MonitorReport& r) {
  nlohmann::json keys = nlohmann::json::array(), clusters = nlohmann::json::array();
  for (const auto& f : r.keys)
    keys.push_back({{"key_id", f.key_id},
                    {"flagged", f.flagged},
                    {"score", f.score},
                    {"cluster", f.cluster},
                    {"requests", f.requests},
                    {"prompt_tokens", f.prompt_tokens},
                    {"completion_tokens", f.completion_tokens},
                    {"logprob_share", f.logprob_share},
                    {"logprob_generated_tokens", f.logprob_generated},
                    {"template_share", f.template_share},
                    {"cot_share", f.cot_share},
                    {"novelty", f.novelty},
                    {"timing_cv", f.timing_cv},
                    {"hours_active", f.hours_active},
                    {"keys_on_template", f.keys_on_template},
                    {"keys_on_client", f.keys_on_client},
                    {"reasons", f.reasons}});
  for (const auto& c : r.clusters)
    clusters.push_back({{"id", c.id},
                        {"flagged", c.flagged},
                        {"score", c.score},
                        {"keys", c.keys},
                        {"requests", c.requests},
                        {"completion_tokens", c.completion_tokens},
                        {"shared_templates", c.shared_templates},
                        {"logprob_share", c.logprob_share},
                        {"cot_share", c.cot_share},
                        {"template_share", c.template_share},
                        {"synchrony", c.synchrony},
                        {"user_agents", c.user_agents},
                        {"clients", c.clients},
                        {"reasons", c.reasons}});
  return {{"requests", r.requests}, {"seconds", r.seconds}, {"keys", keys}, {"clusters", clusters}};
}

}  // namespace lineage::protect
