// The HTTP teacher. See include/lineage/teacher/http_teacher.h.
#include "lineage/teacher/http_teacher.h"

#include <httplib.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "lineage/core/error.h"
#include "lineage/core/hash.h"
#include "lineage/core/progress.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::teacher {

using json = nlohmann::json;

namespace {

constexpr float kAbsent = -1e4f;  // log-probability of padding entries (exp underflows to 0)

// Answers kept by request key, in SQLite (WAL) so a crash loses at most the answer in flight.
class Journal {
 public:
  explicit Journal(const std::string& path) : path_(path) {
    if (path.empty()) return;
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK)
      fail("cannot open the teacher journal '{}': {}", path, db_ ? sqlite3_errmsg(db_) : "out of memory");
    sqlite3_busy_timeout(db_, 10000);
    char* err = nullptr;
    if (sqlite3_exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                          "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
                     nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      fail("teacher journal '{}': {}", path, m);
    }
  }
  ~Journal() {
    if (db_) sqlite3_close(db_);
  }
  bool get(const std::string& key, std::string* value) {
    if (!db_) return false;
    std::lock_guard lock(mu_);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "SELECT value FROM answers WHERE key = ?", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    if (found) value->assign(static_cast<const char*>(sqlite3_column_blob(st, 0)), sqlite3_column_bytes(st, 0));
    sqlite3_finalize(st);
    return found;
  }
  void put(const std::string& key, const std::string& value) {
    if (!db_) return;
    std::lock_guard lock(mu_);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", -1, &st, nullptr);
    sqlite3_bind_text(st, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) fail("teacher journal '{}': {}", path_, sqlite3_errmsg(db_));
  }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
};

struct Url {
  std::string origin;  // scheme://host:port
  std::string base;    // path prefix, e.g. /v1
};

Url parse_url(const std::string& url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) fail("teacher URL '{}' must start with http:// or https://", url);
  auto path_start = url.find('/', scheme_end + 3);
  Url u;
  u.origin = url.substr(0, path_start);
  u.base = path_start == std::string::npos ? "" : url.substr(path_start);
  while (!u.base.empty() && u.base.back() == '/') u.base.pop_back();
  if (u.origin.size() <= scheme_end + 3) fail("teacher URL '{}' has no host", url);
  return u;
}

// Piece text of every student token, for mapping text onto ids: the longest piece a string starts
// with is the student token that starts it.
struct PieceIndex {
  std::unordered_map<std::string, int32_t> by_text;
  size_t longest = 0;
  explicit PieceIndex(const text::Tokenizer& tok) {
    const auto& v = tok.vocab();
    // A neutral previous token, so SentencePiece pieces keep their leading space.
    int32_t prev = 0;
    for (int32_t i = 0; i < v.size(); ++i)
      if (v.types[i] == text::TokenType::kNormal) {
        prev = i;
        break;
      }
    for (int32_t i = 0; i < v.size(); ++i) {
      if (v.types[i] == text::TokenType::kControl || v.types[i] == text::TokenType::kUnused) continue;
      std::string s = tok.decode_piece(prev, i);
      if (s.empty()) continue;
      auto it = by_text.find(s);
      // Prefer ordinary pieces over byte-fallback tokens of the same text.
      if (it == by_text.end() || (v.types[it->second] == text::TokenType::kByte && v.types[i] != text::TokenType::kByte))
        by_text[s] = i;
      longest = std::max(longest, s.size());
    }
  }
  int32_t first_token(const std::string& s) const {
    for (size_t n = std::min(longest, s.size()); n > 0; --n) {
      auto it = by_text.find(s.substr(0, n));
      if (it != by_text.end()) return it->second;
    }
    return -1;
  }
};

std::string api_error_message(const httplib::Result& r) {
  if (!r) return fmt::format("no answer ({})", httplib::to_string(r.error()));
  std::string msg = r->body.substr(0, 300);
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") && j["error"]["message"].is_string())
    msg = j["error"]["message"].get<std::string>();
  return fmt::format("HTTP {}: {}", r->status, msg);
}

}  // namespace

std::string HttpCapabilities::describe() const {
  std::string s = completions ? "completions yes" : "completions no";
  s += prompt_logprobs ? fmt::format(", prompt logprobs yes (top {})", max_top_logprobs) : ", prompt logprobs no";
  s += token_ids ? ", token ids yes (same tokenizer: exact positions)" : ", token ids no (mapped through text)";
  return s;
}

struct HttpTeacher::Impl {
  Url url;
  std::string url_text;
  std::string api_key;
  json extra_body = json::object();  // options.extra_body, parsed
  std::unique_ptr<Journal> journal;
  std::unique_ptr<PieceIndex> pieces;
  std::atomic<int64_t> sent{0};
  HttpTeacherOptions opt;

  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>(url.origin);
    c->set_connection_timeout(std::min<time_t>(30, static_cast<time_t>(opt.timeout_s)), 0);
    c->set_read_timeout(static_cast<time_t>(opt.timeout_s), 0);
    c->set_write_timeout(static_cast<time_t>(opt.timeout_s), 0);
    if (!api_key.empty()) c->set_bearer_token_auth(api_key);
    c->set_keep_alive(true);
    return c;
  }

  // One request, retried on what retrying can fix. Returns the parsed answer; fails naming the
  // URL and the server's message on anything else.
  json call(httplib::Client& c, const std::string& method, const std::string& path, const json& body, bool probing = false) {
    std::mt19937_64 rng(std::random_device{}());
    double delay = opt.backoff_s;
    for (int attempt = 0;; ++attempt) {
      sent++;
      auto r = method == "GET" ? c.Get(url.base + path) : c.Post(url.base + path, body.dump(), "application/json");
      bool retry = !r || r->status == 429 || r->status >= 500;
      if (r && r->status == 200) {
        auto j = json::parse(r->body, nullptr, false);
        if (j.is_discarded()) fail("teacher {}{}: the answer is not JSON: {}", url_text, path, r->body.substr(0, 200));
        return j;
      }
      if (!retry || probing || attempt >= opt.max_retries) {
        if (probing && r && r->status >= 400 && r->status < 500) throw Error(api_error_message(r));
        fail("teacher {}{}: {}{}", url_text, path, api_error_message(r),
             retry ? fmt::format(" (gave up after {} tries)", attempt + 1) : "");
      }
      double wait = std::min(delay, 30.0) * std::uniform_real_distribution<double>(0.75, 1.25)(rng);
      if (r && r->has_header("Retry-After")) {
        try {
          wait = std::max(wait, std::stod(r->get_header_value("Retry-After")));
        } catch (...) {
        }
      }
      if (!opt.quiet)
        std::fprintf(stderr, "teacher %s%s: %s; retrying in %.1f s\n", url_text.c_str(), path.c_str(), api_error_message(r).c_str(), wait);
      std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      delay *= 2;
    }
  }

  // Runs f(i, client) for i in [0, n), `concurrency` at a time; the first error is rethrown.
  void parallel(int64_t n, const std::function<void(int64_t, httplib::Client&)>& f) {
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::mutex mu;
    auto worker = [&] {
      auto c = client();
      while (true) {
        int64_t i = next++;
        if (i >= n) return;
        try {
          f(i, *c);
        } catch (...) {
          std::lock_guard lock(mu);
          if (!error) error = std::current_exception();
          next = n;
        }
      }
    };
    int threads = static_cast<int>(std::min<int64_t>(std::max(1, opt.concurrency), n));
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
  }
};

HttpTeacher::HttpTeacher(const std::string& url, const HttpTeacherOptions& options)
    : impl_(std::make_unique<Impl>()), options_(options) {
  auto& im = *impl_;
  im.opt = options;
  im.url = parse_url(url);
  im.url_text = im.url.origin + im.url.base;
  if (!options.tokenizer)
    fail("teacher '{}' is reached over HTTP and does not hand out its tokenizer: give the student's with --tokenizer FILE "
         "(or --student MODEL)", url);
  im.api_key = options.api_key;
  if (im.api_key.empty())
    if (const char* k = std::getenv("LINEAGE_API_KEY")) im.api_key = k;
  if (!options.extra_body.empty()) {
    try {
      im.extra_body = json::parse(options.extra_body);
    } catch (const json::exception& e) {
      fail("teacher '{}': the extra request body is not JSON: {}", url, e.what());
    }
    if (!im.extra_body.is_object()) fail("teacher '{}': the extra request body must be a JSON object, got {}", url, options.extra_body);
  }
  im.journal = std::make_unique<Journal>(options.journal);
  im.pieces = std::make_unique<PieceIndex>(*options.tokenizer);
  const std::string student_digest = hex(text::vocab_digest(options.tokenizer->vocab()));

  // Probe: the model list, then what a completion can carry.
  auto c = im.client();
  json models;
  try {
    // A server that is not there fails fast: two retries at start, the full patience afterwards.
    im.opt.max_retries = std::min(2, options.max_retries);
    models = im.call(*c, "GET", "/models", {}, /*probing=*/false);
    im.opt.max_retries = options.max_retries;
  } catch (const Error& e) {
    fail("teacher '{}' cannot be reached as an OpenAI-compatible API: {}", url, e.what());
  }
  if (!models.contains("data") || !models["data"].is_array() || models["data"].empty())
    fail("teacher '{}': /models lists no model", url);
  json model;
  for (const auto& m : models["data"])
    if (options.model.empty() || m.value("id", "") == options.model) {
      model = m;
      break;
    }
  if (model.is_null()) fail("teacher '{}' does not serve a model '{}'", url, options.model);
  info_.source = url;
  info_.name = model.value("id", "");
  info_.tokenizer_sha256 = student_digest;
  info_.vocab_size = options.tokenizer->vocab_size();
  bool same_tokenizer = false;
  if (model.contains("lineage") && model["lineage"].is_object()) {
    const auto& l = model["lineage"];
    info_.parameters = l.value("parameters", int64_t{0});
    info_.sha256 = l.value("sha256", "");
    same_tokenizer = l.value("tokenizer_sha256", "") == student_digest;
  }
  if (info_.sha256.empty()) info_.sha256 = hex(sha256(im.url_text + "\n" + info_.name));

  json probe = {{"model", info_.name}, {"prompt", "The"}, {"max_tokens", 1}, {"temperature", 0}};
  try {
    im.call(*c, "POST", "/completions", probe, true);
    caps_.completions = true;
  } catch (const Error& e) {
    if (!options.quiet) std::fprintf(stderr, "teacher %s: completions refused: %s\n", url.c_str(), e.what());
  }
  if (caps_.completions) {
    for (int k : {20, 5, 1}) {
      json p = probe;
      p["echo"] = true;
      p["logprobs"] = k;
      p["max_tokens"] = 0;
      try {
        auto r = im.call(*c, "POST", "/completions", p, true);
        const auto& lp = r["choices"][0]["logprobs"];
        if (lp.is_object() && lp.contains("top_logprobs") && lp["top_logprobs"].is_array() && lp["tokens"].is_array()) {
          caps_.prompt_logprobs = true;
          caps_.max_top_logprobs = k;
        }
        break;
      } catch (const std::exception&) {
      }
    }
  }
  if (caps_.prompt_logprobs && same_tokenizer && !options.force_text) {
    json p = {{"model", info_.name}, {"prompt", options.tokenizer->encode("The", true)}, {"max_tokens", 0}, {"echo", true},
              {"logprobs", 1}, {"return_tokens_as_token_ids", true}};
    try {
      auto r = im.call(*c, "POST", "/completions", p, true);
      const auto& toks = r["choices"][0]["logprobs"]["tokens"];
      caps_.token_ids = toks.is_array() && !toks.empty() && toks[0].is_string() && toks[0].get<std::string>().rfind("token_id:", 0) == 0;
    } catch (const std::exception&) {
    }
  }
  if (!options.quiet)
    std::fprintf(stderr, "teacher %s: model '%s'; %s\n", im.url_text.c_str(), info_.name.c_str(), caps_.describe().c_str());
}

HttpTeacher::~HttpTeacher() = default;

int64_t HttpTeacher::requests_sent() const { return impl_->sent; }

torch::Tensor HttpTeacher::logits(const torch::Tensor&) {
  fail("teacher '{}' is reached over HTTP: it gives top-k log-probabilities, not full logits (use --top-k K)", info_.source);
}

TopK map_through_text(const ApiScoredText& sc, const std::vector<int32_t>& ids, const text::Tokenizer& student, int64_t k) {
  const int64_t T = static_cast<int64_t>(ids.size()) - 1;
  auto out_ids = torch::zeros({T, k}, torch::kLong);
  auto out_lp = torch::full({T, k}, kAbsent, torch::kFloat32);
  auto out_target = torch::zeros({T}, torch::kFloat32);
  // Byte offset at which each student token starts.
  std::vector<int64_t> start(ids.size());
  int64_t off = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    start[i] = off;
    off += static_cast<int64_t>(student.decode_piece(i ? ids[i - 1] : -1, ids[i]).size());
  }
  std::map<int64_t, size_t> teacher_at;  // byte offset -> teacher token index (those with logprobs)
  for (size_t j = 1; j < sc.tokens.size(); ++j) teacher_at.emplace(sc.offsets[j], j);
  thread_local std::unique_ptr<PieceIndex> pieces;
  thread_local const text::Tokenizer* pieces_for = nullptr;
  if (pieces_for != &student) {
    pieces = std::make_unique<PieceIndex>(student);
    pieces_for = &student;
  }
  auto ia = out_ids.accessor<int64_t, 2>();
  auto la = out_lp.accessor<float, 2>();
  auto ta = out_target.accessor<float, 1>();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t next = ids[t + 1];
    auto hard = [&] {
      ia[t][0] = next;
      la[t][0] = 0;
      for (int64_t i = 1; i < k; ++i) ia[t][i] = (next + i) % student.vocab_size(), la[t][i] = kAbsent;
      ta[t] = 0;
    };
    auto it = teacher_at.find(start[t + 1]);
    if (it == teacher_at.end()) {
      hard();
      continue;
    }
    size_t j = it->second;
    std::map<int32_t, double> mass;
    for (const auto& [s, lp] : sc.top[j]) {
      int32_t id = pieces->first_token(s);
      if (id >= 0) mass[id] += std::exp(static_cast<double>(lp));
    }
    std::string next_text = student.decode_piece(ids[t], next);
    double target = std::nan("");
    if (sc.tokens[j] == next_text && std::isfinite(sc.logprobs[j])) target = sc.logprobs[j];
    else if (mass.count(next)) target = std::log(mass[next]);
    if (std::isnan(target) || mass.empty()) {
      hard();
      continue;
    }
    std::vector<std::pair<double, int32_t>> ranked;
    for (auto& [id, p] : mass) ranked.emplace_back(p, id);
    std::sort(ranked.begin(), ranked.end(), std::greater<>());
    int64_t i = 0;
    for (; i < k && i < static_cast<int64_t>(ranked.size()); ++i) {
      ia[t][i] = ranked[i].second;
      la[t][i] = static_cast<float>(std::log(std::min(1.0, ranked[i].first)));
    }
    for (int64_t f = 0; i < k; ++f) {  // padding: ids not used above, probability 0
      int32_t cand = static_cast<int32_t>(f % student.vocab_size());
      if (mass.count(cand)) continue;
      ia[t][i] = cand;
      la[t][i++] = kAbsent;
    }
    ta[t] = static_cast<float>(std::min(0.0, target));
  }
  return TopK{out_ids, out_lp, out_target, {}};
}

TopK HttpTeacher::top_k(const torch::Tensor& tokens, const TopKRequest& req) {
  auto& im = *impl_;
  if (!caps_.prompt_logprobs)
    fail("teacher '{}' does not return prompt log-probabilities (echo + logprobs): use --mode seq_kd", info_.source);
  if (req.k < 1 || req.k > caps_.max_top_logprobs)
    fail("--top-k {} is more than teacher '{}' returns (at most {} alternatives per token)", req.k, info_.source, caps_.max_top_logprobs);
  if (req.tail_samples > 0)
    fail("teacher '{}' is reached over HTTP and cannot draw from its tail: use --tail-samples 0", info_.source);
  if (!req.next.defined() || req.next.sizes() != tokens.sizes())
    fail("an HTTP teacher needs the next tokens of every position (TopKRequest.next of shape (B, T))");
  auto cpu = tokens.to(torch::kCPU, torch::kLong).contiguous();
  auto next = req.next.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t B = cpu.size(0), T = cpu.size(1), K = req.k;
  auto ids = torch::zeros({B, T, K}, torch::kLong);
  auto lps = torch::zeros({B, T, K}, torch::kFloat32);
  auto tgt = torch::zeros({B, T}, torch::kFloat32);
  im.parallel(B, [&](int64_t b, httplib::Client& c) {
    std::vector<int32_t> row(T + 1);
    const int64_t* src = cpu.data_ptr<int64_t>() + b * T;
    for (int64_t t = 0; t < T; ++t) row[t] = static_cast<int32_t>(src[t]);
    row[T] = static_cast<int32_t>(next.data_ptr<int64_t>()[b * T + T - 1]);
    // The T input tokens, echoed with their log-probabilities (positions 0..T-2), plus one greedy
    // token whose alternatives are the distribution at position T-1: T + 1 positions would not
    // fit a model whose context is exactly T.
    const bool by_ids = caps_.token_ids;
    json body = {{"model", info_.name}, {"max_tokens", 1}, {"echo", true}, {"logprobs", K}, {"temperature", 0}};
    std::vector<int32_t> input(row.begin(), row.end() - 1);
    if (by_ids) {
      body["prompt"] = input;
      body["return_tokens_as_token_ids"] = true;
    } else {
      // The text without the student's BOS: the server adds its own.
      std::vector<int32_t> no_bos(input.begin() + (input[0] == options_.tokenizer->bos_id() ? 1 : 0), input.end());
      body["prompt"] = options_.tokenizer->decode(no_bos);
    }
    std::string key = hex(sha256("topk\n" + info_.sha256 + "\n" + body.dump()));
    std::string blob;
    const int64_t rec = K * 12 + 4;  // per position: K int32 ids, K float logprobs, float target
    if (!im.journal->get(key, &blob) || static_cast<int64_t>(blob.size()) != T * rec) {
      auto r = im.call(c, "POST", "/completions", body);
      const auto& lp = r["choices"][0]["logprobs"];
      ApiScoredText sc;
      for (size_t j = 0; j < lp["tokens"].size(); ++j) {
        sc.tokens.push_back(lp["tokens"][j].get<std::string>());
        sc.offsets.push_back(lp.contains("text_offset") ? lp["text_offset"][j].get<int64_t>() : 0);
        sc.logprobs.push_back(lp["token_logprobs"][j].is_number() ? lp["token_logprobs"][j].get<float>() : std::nanf(""));
        std::vector<std::pair<std::string, float>> top;
        if (lp["top_logprobs"][j].is_object())
          for (auto& [s, v] : lp["top_logprobs"][j].items()) top.emplace_back(s, v.get<float>());
        std::sort(top.begin(), top.end(), [](auto& a, auto& b2) { return a.second > b2.second; });
        sc.top.push_back(std::move(top));
      }
      TopK one;
      if (by_ids) {
        if (static_cast<int64_t>(sc.tokens.size()) != T + 1)
          fail("teacher {}: scored {} tokens of a {}-token prompt", im.url_text, sc.tokens.size(), T + 1);
        one.ids = torch::zeros({T, K}, torch::kLong);
        one.logprobs = torch::full({T, K}, kAbsent, torch::kFloat32);
        one.target_logprobs = torch::zeros({T}, torch::kFloat32);
        auto parse_id = [&](const std::string& s) {
          if (s.rfind("token_id:", 0) != 0) fail("teacher {}: expected a token id, got '{}'", im.url_text, s);
          return std::stoll(s.substr(9));
        };
        auto oi = one.ids.accessor<int64_t, 2>();
        auto ol = one.logprobs.accessor<float, 2>();
        auto ot = one.target_logprobs.accessor<float, 1>();
        for (int64_t t = 0; t < T; ++t) {
          const auto& top = sc.top[t + 1];
          double mass = 0, target = std::nan("");
          for (int64_t i = 0; i < K && i < static_cast<int64_t>(top.size()); ++i) {
            oi[t][i] = parse_id(top[i].first);
            ol[t][i] = top[i].second;
            mass += std::exp(static_cast<double>(top[i].second));
            if (oi[t][i] == row[t + 1]) target = top[i].second;
          }
          if (t + 1 < T) target = sc.logprobs[t + 1];  // an echoed token: its own log-probability
          if (std::isnan(target)) {
            // The last position's next token is outside the top K: it is at most as likely as the
            // K-th, and at most half of what the top K leave.
            double kth = top.empty() ? 0.0 : std::exp(static_cast<double>(top.back().second));
            target = std::log(std::max(1e-30, std::min(kth, 0.5 * std::max(0.0, 1 - mass))));
          }
          ot[t] = static_cast<float>(target);
        }
      } else {
        // The text began after the student's BOS; offsets count from there.
        one = map_through_text(sc, row, *options_.tokenizer, K);
      }
      blob.resize(T * rec);
      auto oi = one.ids.accessor<int64_t, 2>();
      auto ol = one.logprobs.accessor<float, 2>();
      auto ot = one.target_logprobs.accessor<float, 1>();
      for (int64_t t = 0; t < T; ++t) {
        char* p = blob.data() + t * rec;
        for (int64_t i = 0; i < K; ++i) {
          int32_t id = static_cast<int32_t>(oi[t][i]);
          float v = ol[t][i];
          std::memcpy(p + i * 4, &id, 4);
          std::memcpy(p + K * 4 + i * 4, &v, 4);
        }
        float tv = ot[t];
        std::memcpy(p + K * 8, &tv, 4);
      }
      im.journal->put(key, blob);
    }
    auto ia = ids.accessor<int64_t, 3>();
    auto la = lps.accessor<float, 3>();
    auto ta = tgt.accessor<float, 2>();
    for (int64_t t = 0; t < T; ++t) {
      const char* p = blob.data() + t * rec;
      for (int64_t i = 0; i < K; ++i) {
        int32_t id;
        float v;
        std::memcpy(&id, p + i * 4, 4);
        std::memcpy(&v, p + K * 4 + i * 4, 4);
        ia[b][t][i] = id;
        la[b][t][i] = v;
      }
      std::memcpy(&ta[b][t], p + K * 8, 4);
    }
  });
  return TopK{ids.to(tokens.device()), lps.to(tokens.device()), tgt.to(tokens.device()), {}};
}

std::vector<std::vector<int32_t>> HttpTeacher::generate_many(const std::vector<std::vector<int32_t>>& prompts,
                                                             const std::vector<model::GenerateOptions>& all) {
  auto& im = *impl_;
  if (!caps_.completions) fail("teacher '{}' does not answer /completions", info_.source);
  std::vector<std::vector<int32_t>> out(prompts.size());
  const auto& tok = *options_.tokenizer;
  im.parallel(static_cast<int64_t>(prompts.size()), [&](int64_t i, httplib::Client& c) {
    const auto& pr = prompts[i];
    const auto& g = all[i];
    json body = {{"model", info_.name}, {"max_tokens", g.max_tokens}, {"temperature", g.sampling.temperature},
                 {"top_p", g.sampling.top_p}, {"seed", static_cast<int64_t>(g.sampling.seed & 0x7fffffffffffffffULL)}};
    for (const auto& [name, value] : im.extra_body.items()) body[name] = value;
    if (caps_.token_ids) {
      body["prompt"] = pr;
    } else {
      std::vector<int32_t> no_bos(pr.begin() + (!pr.empty() && pr[0] == tok.bos_id() ? 1 : 0), pr.end());
      body["prompt"] = tok.decode(no_bos);
    }
    std::string key = hex(sha256("generate\n" + info_.sha256 + "\n" + body.dump()));
    std::string text;
    if (!im.journal->get(key, &text)) {
      auto r = im.call(c, "POST", "/completions", body);
      text = r["choices"][0]["text"].get<std::string>();
      im.journal->put(key, text);
    }
    // The completion in the student's tokens: the prompt's text and the completion encoded together,
    // minus the prompt's own tokens where they agree (so the split at the seam is the student's).
    auto ids = tok.encode(text, false);
    if (tok.vocab().model == text::VocabModel::kSpm && !text.empty() && tok.vocab().add_space_prefix) {
      // SentencePiece would add a space prefix to a fresh text; inside a sequence it must not.
      std::string joined = tok.decode(pr) + text;
      auto all = tok.encode(joined, pr.empty() ? false : pr[0] == tok.bos_id());
      size_t same = 0;
      while (same < all.size() && same < pr.size() && all[same] == pr[same]) ++same;
      ids.assign(all.begin() + same, all.end());
    }
    out[i] = std::move(ids);
  });
  return out;
}

std::vector<int32_t> HttpTeacher::generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) {
  return generate_many({prompt}, {options})[0];
}

}  // namespace lineage::teacher
