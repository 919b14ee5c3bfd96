// Labelled synthetic traffic for `lineage monitor --simulate`: ordinary users of five kinds and
// extraction campaigns of three, written as a lineage request log plus a `labels` table.
//
// Ordinary:  casual (a few daytime sessions; varied questions, common phrasings, some homework
//            "step by step"), power (the same, ten times more), developer (an app template of its
//            own, test prompts repeated, some classify with logprobs; office addresses shared),
//            batch (one template, thousands of requests in a nightly burst), evaluator (benchmark
//            templates shared with other researchers, echo + logprobs, no generation).
// Campaigns: blatant (1-3 keys, one template, reasoning elicited, logprobs, paced around the
//            clock from one address), distributed (20-40 keys, shared templates, synchronised
//            windows, a few subnets and user agents), careful (40-80 keys, casual volumes,
//            paraphrased templates, no logprobs, human-like sessions, a distinct address and a
//            browser user agent per key).
#include <sqlite3.h>

#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>

#include "lineage/core/error.h"
#include "lineage/protect/monitor.h"

namespace lineage::protect {

namespace {

const std::vector<std::string> kTopics = {
    "black holes", "photosynthesis", "the french revolution", "sourdough bread", "compound interest", "jazz",
    "the immune system", "climate change", "machine learning", "roman history", "volcanoes", "chess openings",
    "the stock market", "meditation", "electric cars", "coral reefs", "shakespeare", "the internet", "vaccines",
    "plate tectonics", "coffee", "quantum computing", "marathon training", "the moon landing", "bees", "tax returns",
    "gardening", "the renaissance", "crypto", "dinosaurs", "origami", "the olympics", "sleep", "impressionism",
    "nuclear power", "the silk road", "dogs", "cats", "fermentation", "the brain", "wind turbines", "knitting",
    "ancient egypt", "glaciers", "poker", "the beatles", "recycling", "solar panels", "hurricanes", "tea"};
const std::vector<std::string> kCasual = {
    "Can you explain {}?", "What is {} exactly", "Write a short poem about {}.", "Give me three fun facts about {}",
    "How does {} work?", "tell me a joke about {}", "Summarize the history of {} in a paragraph.",
    "im confused about {}, can you help", "Recommend a good book about {}.", "Is {} overrated? be honest",
    "Write a limerick on {}", "What should a beginner know about {}?", "my kid asked me about {} - what do I say",
    "Plan a weekend around {} for two people", "Pros and cons of {}?", "Explain {} like I am five"};
const std::vector<std::string> kWords = {
    "please", "quick", "question", "about", "my", "new", "old", "why", "does", "the", "a", "work", "when", "how",
    "best", "cheap", "fast", "today", "tomorrow", "idea", "list", "ten", "some", "good", "bad", "story", "write",
    "email", "boss", "friend", "party", "recipe", "dinner", "trip", "budget", "song", "name", "for", "with"};
const std::vector<std::string> kBrowsers = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1",
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15) Chrome/131.0 Mobile"};
const std::vector<std::string> kSdks = {"OpenAI/Python 1.54.0", "OpenAI/JS 4.73.0", "python-httpx/0.27.2", "curl/8.5.0"};
const std::vector<std::string> kBenchmarks = {
    "Question: {}\nAnswer:", "The following are multiple choice questions about {}.\n\nAnswer:",
    "Passage: {}\nQuestion: is it true?\nAnswer:", "Goal: {}\nSolution:", "{} Then,", "Q: {}\nA:"};
const std::vector<std::string> kDomains = {"calculus", "organic chemistry", "python programming", "contract law",
                                           "cell biology", "probability"};
const std::vector<std::string> kCarefulTemplates = {
    "Could you articulate the reasoning behind {} in {}?", "Walk me through how an expert would approach {} ({})",
    "I'd like to understand {} in {}: please lay out the logic one step at a time",
    "For my notes on {}, show your work on {}", "Think through {} carefully, covering {}, and explain each step",
    "What is the thought process behind {} when studying {}?", "Reason carefully about {} within {}, step by step",
    "Explain your reasoning: how does {} fit into {}?"};

constexpr int64_t kStartMs = 1793491200000;  // 2026-11-01T00:00:00Z

struct Sink {
  sqlite3* db = nullptr;
  sqlite3_stmt* ins = nullptr;
  sqlite3_stmt* lab = nullptr;
  int64_t rows = 0;
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      fail("simulated log: {}", m);
    }
  }
  void request(const std::string& key, int64_t ms, const std::string& client, const std::string& agent,
               const std::string& prompt, int64_t completion_tokens, const nlohmann::json& params) {
    sqlite3_reset(ins);
    std::string time = fmt::format("{}", ms);
    auto p = params.dump();
    sqlite3_bind_text(ins, 1, time.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 2, ms);
    sqlite3_bind_text(ins, 3, key.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 4, client.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 5, agent.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 6, static_cast<int64_t>(prompt.size() / 4 + 1));
    sqlite3_bind_int64(ins, 7, completion_tokens);
    sqlite3_bind_text(ins, 8, p.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 9, prompt.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(ins) != SQLITE_DONE) fail("simulated log: {}", sqlite3_errmsg(db));
    ++rows;
  }
  void label(const std::string& key, const std::string& kind, const std::string& campaign, bool is_campaign) {
    sqlite3_reset(lab);
    sqlite3_bind_text(lab, 1, key.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(lab, 2, kind.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(lab, 3, campaign.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(lab, 4, is_campaign ? 1 : 0);
    if (sqlite3_step(lab) != SQLITE_DONE) fail("simulated log: {}", sqlite3_errmsg(db));
  }
};

struct Sim {
  std::mt19937_64 rng;
  Sink& sink;
  int days;

  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
  }
  int uniform(int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); }
  double real() { return std::uniform_real_distribution<double>(0, 1)(rng); }
  double expo(double mean) { return std::exponential_distribution<double>(1.0 / mean)(rng); }
  std::string fill(const std::string& tmpl, const std::string& a, const std::string& b = "") {
    return fmt::format(fmt::runtime(tmpl), a, b);
  }
  std::string residential() { return fmt::format("{}.{}.{}.{}", uniform(24, 223), uniform(0, 255), uniform(0, 255), uniform(1, 254)); }
  std::string free_text(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += (i ? " " : "") + pick(kWords);
    return s;
  }
  nlohmann::json chat(int max_tokens) { return {{"temperature", 0.7}, {"top_p", 1.0}, {"n", 1}, {"stream", false}, {"max_tokens", max_tokens}}; }

  // Human sessions: daytime in a time zone, a few requests minutes apart.
  template <typename Prompt>
  void sessions(const std::string& key, int requests, const std::string& client, const std::string& agent, Prompt prompt,
                int completion_mean) {
    const int tz = uniform(-8, 9);
    int done = 0;
    while (done < requests) {
      int64_t day = uniform(0, days - 1);
      double hour = 8 + 14 * real() - tz;
      int64_t ms = kStartMs + day * 86400000 + static_cast<int64_t>(hour * 3600000);
      int n = std::min(requests - done, uniform(1, 8));
      for (int i = 0; i < n; ++i, ++done) {
        ms += static_cast<int64_t>(1000 * (15 + expo(150)));
        auto [text, params] = prompt();
        const int64_t cap = params.value("max_tokens", int64_t{256});
        sink.request(key, ms, client, agent, text, std::min<int64_t>(cap, static_cast<int64_t>(expo(completion_mean)) + 1), params);
      }
    }
  }

  std::pair<std::string, nlohmann::json> casual_prompt(double homework) {
    if (real() < homework)
      return {fmt::format("Solve step by step: {} + {} * {}", uniform(2, 999), uniform(2, 99), uniform(2, 99)), chat(256)};
    if (real() < 0.3) return {free_text(uniform(4, 14)) + "?", chat(256)};
    return {fill(pick(kCasual), pick(kTopics)) + (real() < 0.5 ? " " + free_text(uniform(0, 6)) : ""), chat(256)};
  }

  void ordinary(const std::string& kind, int index) {
    const std::string key = fmt::format("{}-{:04d}", kind, index);
    sink.label(key, kind, "", false);
    if (kind == "casual" || kind == "power") {
      const double homework = real() < 0.2 ? 0.3 * real() : 0.0;
      int n = kind == "casual" ? uniform(3, 40) : uniform(60, 400);
      sessions(key, n, residential(), pick(kBrowsers), [&] { return casual_prompt(homework); }, 200);
    } else if (kind == "developer") {
      const std::string company = fmt::format("{} {}", pick(kWords), pick(kTopics));
      const bool classifier = real() < 0.3;
      const std::string office = fmt::format("198.51.{}.{}", index % 40, uniform(1, 254));  // teams share addresses
      std::vector<std::string> tests;
      for (int i = 0; i < 5; ++i) tests.push_back(fmt::format("test {} {}", i, free_text(3)));
      sessions(key, uniform(20, 300), office, pick(kSdks), [&]() -> std::pair<std::string, nlohmann::json> {
        if (real() < 0.3) return {pick(tests), chat(64)};
        if (classifier) {
          auto p = chat(1);
          p["logprobs"] = true;
          p["top_logprobs"] = 5;
          return {fmt::format("Classify the sentiment of this {} review as positive or negative: {}", company, free_text(uniform(5, 20))), p};
        }
        return {fmt::format("You are the support assistant of {}. Customer message: {}", company, free_text(uniform(5, 25))), chat(300)};
      }, 150);
    } else if (kind == "batch") {
      const std::string tmpl = fmt::format("Summarize this {} ticket for the {} team in two sentences: ", pick(kTopics), pick(kWords));
      const std::string client = fmt::format("203.0.113.{}", uniform(1, 254));
      const int nights = uniform(1, days);
      const int per = uniform(100, 400);
      const int hour = uniform(0, 23);
      for (int d = 0; d < nights; ++d) {
        int64_t ms = kStartMs + (int64_t(d) * days / nights) * 86400000 + hour * 3600000;
        for (int i = 0; i < per; ++i) {
          ms += static_cast<int64_t>(2000 * (0.9 + 0.2 * real()));
          sink.request(key, ms, client, "python-httpx/0.27.2", tmpl + free_text(uniform(10, 40)), 60, chat(80));
        }
      }
    } else {  // evaluator
      const std::string bench = pick(kBenchmarks);
      const std::string client = fmt::format("192.0.2.{}", uniform(1, 254));
      const std::string agent = pick(kSdks);
      const int runs = uniform(1, 4);
      for (int r = 0; r < runs; ++r) {
        int64_t ms = kStartMs + uniform(0, days - 1) * int64_t(86400000) + uniform(8, 20) * int64_t(3600000);
        const int n = uniform(50, 500);
        for (int i = 0; i < n; ++i) {
          ms += static_cast<int64_t>(1000 * expo(1.5)) + 50;
          auto p = chat(0);
          p["logprobs"] = true;
          p["echo"] = true;
          sink.request(key, ms, client, agent, fill(bench, pick(kTopics) + " " + free_text(uniform(3, 12))), 0, p);
        }
      }
    }
  }

  // Paced requests: every `gap` seconds (± jitter) over the scheduled windows.
  void campaign(const std::string& kind, int campaign_no, int nkeys) {
    const std::string cname = fmt::format("{}-campaign-{}", kind, campaign_no);
    const std::string domain = pick(kDomains);
    int64_t item = 0;  // systematic coverage: items enumerated, never repeated, across all keys
    std::vector<std::string> templates;
    if (kind == "blatant") {
      templates = {fmt::format("Solve the following {} problem and explain your reasoning step by step. Problem {{}}: {{}}", domain)};
    } else if (kind == "distributed") {
      templates = {fmt::format("You are an expert in {}. Think through problem {{}} step by step: {{}}", domain),
                   fmt::format("Give a detailed worked solution to {} exercise {{}}, showing your work: {{}}", domain),
                   fmt::format("{} question {{}}: {{}}. Answer concisely.", domain)};
    } else {
      templates = kCarefulTemplates;
    }
    const std::string subnet = fmt::format("45.{}.{}", uniform(0, 255), uniform(0, 255));
    std::vector<std::pair<int, int>> windows;  // distributed: shared daily windows (day, hour)
    for (int d = 0; d < days; ++d) windows.push_back({d, uniform(0, 21)});
    for (int k = 0; k < nkeys; ++k) {
      const std::string key = fmt::format("{}-{:02d}", cname, k);
      sink.label(key, kind, cname, true);
      auto next_prompt = [&]() {
        const std::string& t = templates[static_cast<size_t>(item) % templates.size()];
        std::string text = kind == "careful" ? fill(t, fmt::format("{} topic {}", domain, item), pick(kTopics))
                                             : fill(t, std::to_string(item), free_text(uniform(6, 20)));
        ++item;
        return text;
      };
      if (kind == "blatant") {
        const double gap = 60 + 60 * real();
        int64_t ms = kStartMs + uniform(0, 3600) * int64_t(1000);
        const int n = uniform(3000, 8000);
        for (int i = 0; i < n; ++i) {
          ms += static_cast<int64_t>(1000 * gap * (0.85 + 0.3 * real()));
          auto p = chat(512);
          p["logprobs"] = true;
          p["top_logprobs"] = 20;
          sink.request(key, ms, subnet + ".10", "python-requests/2.31.0", next_prompt(), 400, p);
        }
      } else if (kind == "distributed") {
        const std::string client = fmt::format("{}.{}", subnet, uniform(1, 6));
        const std::string agent = k % 2 ? "python-requests/2.31.0" : "aiohttp/3.9.1";
        const int per_window = uniform(30, 90);
        for (auto [d, h] : windows) {
          int64_t ms = kStartMs + d * int64_t(86400000) + h * int64_t(3600000) + uniform(0, 120) * int64_t(1000);
          for (int i = 0; i < per_window; ++i) {
            ms += static_cast<int64_t>(1000 * 70 * (0.8 + 0.4 * real()));
            auto p = chat(512);
            if (real() < 0.5) p["logprobs"] = true, p["top_logprobs"] = 10;
            sink.request(key, ms, client, agent, next_prompt(), 350, p);
          }
        }
      } else {
        sessions(key, uniform(20, 60), residential(), pick(kBrowsers),
                 [&]() -> std::pair<std::string, nlohmann::json> { return {next_prompt(), chat(800)}; }, 500);
      }
    }
  }
};

}  // namespace

int64_t simulate_traffic(const std::string& path, const SimulationOptions& o) {
  if (std::filesystem::exists(path)) fail("'{}' exists: the simulation writes a new log", path);
  if (o.ordinary_keys < 1 || o.campaign_keys < 0 || o.days < 1) fail("simulation: keys and days must be positive");
  Sink sink;
  if (sqlite3_open_v2(path.c_str(), &sink.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
    fail("cannot create '{}': {}", path, sink.db ? sqlite3_errmsg(sink.db) : "out of memory");
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(sink.db, sqlite3_close);
  // The request log's schema (serve/request_log.h), and the labels.
  sink.exec(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
      "CREATE TABLE requests (id INTEGER PRIMARY KEY, time TEXT NOT NULL, unix_ms INTEGER NOT NULL, key_id TEXT,"
      " client TEXT, user_agent TEXT, endpoint TEXT, model TEXT, status INTEGER, prompt_tokens INTEGER,"
      " completion_tokens INTEGER, prompt_sha256 TEXT, params TEXT, prompt TEXT, latency_ms REAL, error TEXT);"
      "CREATE TABLE labels (key_id TEXT PRIMARY KEY, kind TEXT, campaign TEXT, campaign_key INTEGER);"
      "BEGIN;");
  if (sqlite3_prepare_v2(sink.db,
                         "INSERT INTO requests (time, unix_ms, key_id, client, user_agent, endpoint, model, status,"
                         " prompt_tokens, completion_tokens, prompt_sha256, params, prompt, latency_ms)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, '/v1/chat/completions', 'teacher', 200, ?6, ?7, '', ?8, ?9, 0)",
                         -1, &sink.ins, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(sink.db, "INSERT INTO labels VALUES (?1, ?2, ?3, ?4)", -1, &sink.lab, nullptr) != SQLITE_OK)
    fail("simulated log: {}", sqlite3_errmsg(sink.db));
  Sim sim{std::mt19937_64(o.seed), sink, o.days};
  // Ordinary kinds: casual 50%, power 15%, developer 20%, batch 5%, evaluator 10%.
  const std::vector<std::pair<std::string, double>> ordinary = {
      {"casual", 0.5}, {"power", 0.15}, {"developer", 0.2}, {"batch", 0.05}, {"evaluator", 0.1}};
  int made = 0;
  for (size_t i = 0; i < ordinary.size(); ++i) {
    int n = i + 1 == ordinary.size() ? o.ordinary_keys - made : static_cast<int>(o.ordinary_keys * ordinary[i].second);
    for (int k = 0; k < n; ++k) sim.ordinary(ordinary[i].first, k);
    made += n;
  }
  // Campaign keys: blatant ~5%, distributed ~35%, careful ~60%.
  int left = o.campaign_keys, no = 0;
  int blatant = std::max(1, o.campaign_keys / 20), distributed = o.campaign_keys * 35 / 100;
  while (blatant > 0 && left > 0) {
    int n = std::min({blatant, left, sim.uniform(1, 3)});
    sim.campaign("blatant", no++, n);
    blatant -= n, left -= n;
  }
  while (distributed > 0 && left > 0) {
    int n = std::min({distributed, left, sim.uniform(20, 40)});
    sim.campaign("distributed", no++, n);
    distributed -= n, left -= n;
  }
  while (left > 0) {
    int n = std::min(left, sim.uniform(40, 80));
    sim.campaign("careful", no++, n);
    left -= n;
  }
  sqlite3_finalize(sink.ins);
  sqlite3_finalize(sink.lab);
  sink.exec("COMMIT; CREATE INDEX requests_key_time ON requests(key_id, unix_ms);");
  return sink.rows;
}

std::vector<KindScore> evaluate_monitor(const std::string& db_path, const MonitorReport& report) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK)
    fail("cannot open '{}'", db_path);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(db, sqlite3_close);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT key_id, kind, campaign_key FROM labels", -1, &st, nullptr) != SQLITE_OK)
    fail("'{}' has no labels table (only logs written by lineage monitor --simulate do)", db_path);
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(st, sqlite3_finalize);
  std::map<std::string, bool> flagged;
  for (const auto& k : report.keys) flagged[k.key_id] = k.flagged;
  std::map<std::string, KindScore> by_kind;
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::string key = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    std::string kind = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
    auto& s = by_kind[kind];
    s.kind = kind;
    s.campaign = sqlite3_column_int(st, 2) != 0;
    ++s.keys;
    s.flagged += flagged.count(key) && flagged[key];
  }
  std::vector<KindScore> out;
  for (auto& [k, s] : by_kind) out.push_back(s);
  std::stable_sort(out.begin(), out.end(), [](const KindScore& a, const KindScore& b) { return a.campaign < b.campaign; });
  return out;
}

}  // namespace lineage::protect
