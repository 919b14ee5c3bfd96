// The HTTP teacher. See include/lineage/teacher/http_teacher.h.
#include "lineage/core/json.h"
#include "lineage/teacher/http_teacher.h"


#include <algorithm>
#include <atomic>
#include <cstring>
#include <cmath>
#include <cstdlib>

#include "lineage/core/error.h"
#include "lineage/core/hash.h"
#include "lineage/core/progress.h"
#include "lineage/text/vocab_digest.h"
#include "teacher/http_client.h"

namespace lineage::teacher {

using json = nlohmann::json;

std::string HttpCapabilities::describe() const {
  std::string s = completions ? "completions yes" : "completions no";
  s += prompt_logprobs ? fmt::format(", prompt logprobs yes (top {})", max_top_logprobs) : ", prompt logprobs no";
  s += token_ids ? ", token ids yes (same tokenizer: exact positions)" : ", token ids no (mapped through text)";
  return s;
}

struct HttpTeacher::Impl : http::Client {};

namespace {

// The model the teacher answers as: `wanted`, or the first /models lists. A server that is not
// there fails fast: two retries at start (the full patience comes afterwards).
json find_model(http::Client& im, httplib::Client& c, const std::string& url, const std::string& wanted) {
  json models;
  const int patience = im.opt.max_retries;
  try {
    im.opt.max_retries = std::min(2, patience);
    models = im.call(c, "GET", "/models", {}, /*probing=*/false);
    im.opt.max_retries = patience;
  } catch (const Error& e) {
    fail("teacher '{}' cannot be reached as an OpenAI-compatible API: {}", url, e.what());
  }
  if (!models.contains("data") || !models["data"].is_array() || models["data"].empty())
    fail("teacher '{}': /models lists no model", url);
  for (const auto& m : models["data"])
    if (wanted.empty() || m.value("id", "") == wanted) return m;
  fail("teacher '{}' does not serve a model '{}'", url, wanted);
}

// What a completion can carry: text, prompt log-probabilities (echo + logprobs, the most
// alternatives among 20, 5, 1), and token ids when the server speaks the student's tokenizer.
HttpCapabilities probe(http::Client& im, httplib::Client& c, const std::string& model, bool same_tokenizer,
                       const HttpTeacherOptions& options) {
  HttpCapabilities caps;
  json probe = {{"model", model}, {"prompt", "The"}, {"max_tokens", 1}, {"temperature", 0}};
  try {
    im.call(c, "POST", "/completions", probe, true);
    caps.completions = true;
  } catch (const Error& e) {
    if (!options.quiet) std::fprintf(stderr, "teacher %s: completions refused: %s\n", im.url_text.c_str(), e.what());
  }
  if (caps.completions) {
    for (int k : {20, 5, 1}) {
      json p = probe;
      p["echo"] = true;
      p["logprobs"] = k;
      p["max_tokens"] = 0;
      try {
        auto r = im.call(c, "POST", "/completions", p, true);
        const auto& lp = r["choices"][0]["logprobs"];
        if (lp.is_object() && lp.contains("top_logprobs") && lp["top_logprobs"].is_array() && lp["tokens"].is_array()) {
          caps.prompt_logprobs = true;
          caps.max_top_logprobs = k;
        }
        break;
      } catch (const std::exception&) {
      }
    }
  }
  if (caps.prompt_logprobs && same_tokenizer && !options.force_text) {
    json p = {{"model", model}, {"prompt", options.tokenizer->encode("The", true)}, {"max_tokens", 0}, {"echo", true},
              {"logprobs", 1}, {"return_tokens_as_token_ids", true}};
    try {
      auto r = im.call(c, "POST", "/completions", p, true);
      const auto& toks = r["choices"][0]["logprobs"]["tokens"];
      caps.token_ids = toks.is_array() && !toks.empty() && toks[0].is_string() && toks[0].get<std::string>().rfind("token_id:", 0) == 0;
    } catch (const std::exception&) {
    }
  }
  return caps;
}

}  // namespace

HttpTeacher::HttpTeacher(const std::string& url, const HttpTeacherOptions& options)
    : impl_(std::make_unique<Impl>()), options_(options) {
  auto& im = *impl_;
  im.opt = options;
  im.url = http::parse_url(url);
  im.url_text = im.url.origin + im.url.base;
  if (!options.tokenizer)
    fail("teacher '{}' is reached over HTTP and does not hand out its tokenizer: give the student's with --tokenizer FILE "
         "(or --student MODEL)", url);
  im.api_key = options.api_key;
  if (im.api_key.empty())
    if (const char* k = std::getenv("LINEAGE_API_KEY")) im.api_key = k;
  if (!options.extra_body.empty()) {
    try {
      check_json_depth(options.extra_body, fmt::format("teacher '{}': the extra request body", url));
      im.extra_body = json::parse(options.extra_body);
    } catch (const json::exception& e) {
      fail("teacher '{}': the extra request body is not JSON: {}", url, e.what());
    }
    if (!im.extra_body.is_object()) fail("teacher '{}': the extra request body must be a JSON object, got {}", url, options.extra_body);
  }
  im.journal = std::make_unique<http::Journal>(options.journal);
  const std::string student_digest = hex(text::vocab_digest(options.tokenizer->vocab()));
  auto c = im.connect();
  json model = find_model(im, *c, url, options.model);
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
  caps_ = probe(im, *c, info_.name, same_tokenizer, options);
  if (!options.quiet)
    std::fprintf(stderr, "teacher %s: model '%s'; %s\n", im.url_text.c_str(), info_.name.c_str(), caps_.describe().c_str());
}

HttpTeacher::~HttpTeacher() = default;

int64_t HttpTeacher::requests_sent() const { return impl_->sent; }

torch::Tensor HttpTeacher::logits(const torch::Tensor&) {
  fail("teacher '{}' is reached over HTTP: it gives top-k log-probabilities, not full logits (use --top-k K)", info_.source);
}

namespace {

// What /completions returned for an echoed prompt, as the API spells it.
ApiScoredText parse_scored(const json& r) {
  const auto& lp = r["choices"][0]["logprobs"];
  ApiScoredText sc;
  for (size_t j = 0; j < lp["tokens"].size(); ++j) {
    sc.tokens.push_back(lp["tokens"][j].get<std::string>());
    sc.offsets.push_back(lp.contains("text_offset") ? need_json_int(lp["text_offset"][j], "the teacher's text_offset", 0) : 0);
    sc.logprobs.push_back(lp["token_logprobs"][j].is_number() ? lp["token_logprobs"][j].get<float>() : std::nanf(""));
    std::vector<std::pair<std::string, float>> top;
    if (lp["top_logprobs"][j].is_object())
      for (auto& [s, v] : lp["top_logprobs"][j].items()) top.emplace_back(s, v.get<float>());
    std::sort(top.begin(), top.end(), [](auto& a, auto& b2) { return a.second > b2.second; });
    sc.top.push_back(std::move(top));
  }
  return sc;
}

// The answer of a server that scored our token ids (return_tokens_as_token_ids): per position t of
// `row` (T + 1 ids), the top K of position t + 1 and the log-probability of row[t + 1].
TopK top_k_from_ids(const ApiScoredText& sc, const std::vector<int32_t>& row, int64_t K, const std::string& url) {
  const int64_t T = static_cast<int64_t>(row.size()) - 1;
  if (static_cast<int64_t>(sc.tokens.size()) != T + 1) fail("teacher {}: scored {} tokens of a {}-token prompt", url, sc.tokens.size(), T + 1);
  TopK one;
  one.ids = torch::zeros({T, K}, torch::kLong);
  one.logprobs = torch::full({T, K}, http::kAbsent, torch::kFloat32);
  one.target_logprobs = torch::zeros({T}, torch::kFloat32);
  auto parse_id = [&](const std::string& s) {
    if (s.rfind("token_id:", 0) != 0) fail("teacher {}: expected a token id, got '{}'", url, s);
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
  return one;
}

// The journal's record of one row: per position K int32 ids, K float log-probabilities, the
// target's float log-probability.
int64_t record_bytes(int64_t K) { return K * 12 + 4; }

std::string pack_row(const TopK& one, int64_t T, int64_t K) {
  const int64_t rec = record_bytes(K);
  std::string blob(T * rec, '\0');
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
  return blob;
}

void unpack_row(const std::string& blob, int64_t b, int64_t T, int64_t K, torch::Tensor& ids, torch::Tensor& lps,
                torch::Tensor& tgt) {
  const int64_t rec = record_bytes(K);
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
}

}  // namespace

std::optional<std::vector<int32_t>> continuation_tokens(const text::Tokenizer& tok, const std::vector<int32_t>& before,
                                                        const std::string& text) {
  const std::string before_text = tok.decode(before);
  auto joins = [&](const std::vector<int32_t>& c) {
    std::vector<int32_t> all(before);
    all.insert(all.end(), c.begin(), c.end());
    return tok.decode(all) == before_text + text;
  };
  if (text.empty()) return std::vector<int32_t>{};
  // Encoded together, where that keeps `before` as it is: the seam split as the student splits.
  const bool bos = !before.empty() && before[0] == tok.bos_id();
  auto all = tok.encode(before_text + text, bos);
  if (all.size() > before.size() && std::equal(before.begin(), before.end(), all.begin())) {
    std::vector<int32_t> c(all.begin() + static_cast<std::ptrdiff_t>(before.size()), all.end());
    if (joins(c)) return c;
  }
  // Alone (byte-level BPE adds nothing in front of a text).
  auto alone = tok.encode(text, false);
  if (joins(alone)) return alone;
  // After a newline, which no merge crosses: SentencePiece puts a space in front of a fresh text,
  // and a continuation inside a sequence must not have it.
  auto after = tok.encode("\n" + text, false);
  for (size_t j = 1; j < after.size(); ++j) {
    if (tok.decode(after.data(), j) != "\n") continue;
    std::vector<int32_t> c(after.begin() + static_cast<std::ptrdiff_t>(j), after.end());
    if (joins(c)) return c;
    break;
  }
  return std::nullopt;
}

// One row: the T input tokens, echoed with their log-probabilities (positions 0..T-2), plus one
// greedy token whose alternatives are the distribution at position T-1 (T + 1 positions would not
// fit a model whose context is exactly T). Answers come from the journal when it has them.
std::string HttpTeacher::score_row(const std::vector<int32_t>& row, int64_t K, httplib::Client& c) {
  auto& im = *impl_;
  const int64_t T = static_cast<int64_t>(row.size()) - 1;
  json body = {{"model", info_.name}, {"max_tokens", 1}, {"echo", true}, {"logprobs", K}, {"temperature", 0}};
  std::vector<int32_t> input(row.begin(), row.end() - 1);
  if (caps_.token_ids) {
    body["prompt"] = input;
    body["return_tokens_as_token_ids"] = true;
  } else {
    // The text without the student's BOS: the server adds its own.
    std::vector<int32_t> no_bos(input.begin() + (input[0] == options_.tokenizer->bos_id() ? 1 : 0), input.end());
    body["prompt"] = options_.tokenizer->decode(no_bos);
  }
  std::string key = hex(sha256("topk\n" + info_.sha256 + "\n" + body.dump()));
  std::string blob;
  if (im.journal->get(key, &blob) && static_cast<int64_t>(blob.size()) == T * record_bytes(K)) return blob;
  ApiScoredText sc = parse_scored(im.call(c, "POST", "/completions", body));
  // Through text, offsets count from after the student's BOS.
  TopK one = caps_.token_ids ? top_k_from_ids(sc, row, K, im.url_text) : map_through_text(sc, row, *options_.tokenizer, K);
  blob = pack_row(one, T, K);
  im.journal->put(key, blob);
  return blob;
}

TopK HttpTeacher::top_k(const torch::Tensor& tokens, const TopKRequest& req) {
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
  impl_->parallel(B, [&](int64_t b, httplib::Client& c) {
    std::vector<int32_t> row(T + 1);
    const int64_t* src = cpu.data_ptr<int64_t>() + b * T;
    for (int64_t t = 0; t < T; ++t) row[t] = static_cast<int32_t>(src[t]);
    row[T] = static_cast<int32_t>(next.data_ptr<int64_t>()[b * T + T - 1]);
    unpack_row(score_row(row, K, c), b, T, K, ids, lps, tgt);
  });
  return TopK{ids.to(tokens.device()), lps.to(tokens.device()), tgt.to(tokens.device()), {}};
}

Abilities HttpTeacher::abilities() const {
  Abilities a;
  a.top_k = a.next_logprob = caps_.prompt_logprobs;
  a.max_top_k = caps_.prompt_logprobs ? caps_.max_top_logprobs : 0;
  a.generation = caps_.completions;
  return a;
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
    // The completion in the student's tokens, taken from the response's text alone: tokens that
    // follow the prompt's so that prompt + completion decode to the prompt's text + the response.
    // Never the prompt re-encoded and stripped where it happens to agree (a prompt whose text
    // re-encodes differently came back whole at the front of its completion).
    auto ids = continuation_tokens(tok, pr, text);
    if (!ids)
      fail("teacher '{}': the student's tokenizer cannot write its completion of prompt {} ('{}' ...) after the "
           "prompt's tokens (a tokenizer that does not decode what it encodes?)",
           info_.source, i, text.substr(0, 40));
    out[i] = std::move(*ids);
  });
  return out;
}

std::vector<int32_t> HttpTeacher::generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) {
  return generate_many({prompt}, {options})[0];
}

}  // namespace lineage::teacher
