// `lineage provenance` (see protect/provenance.h): opens the suspect, the candidates and the
// references, runs every test they allow, and names a parent only at p < alpha after a Bonferroni
// correction over the tests that ran.
#include "lineage/protect/provenance.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "lineage/core/device.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/teacher/open.h"
#include "lineage/text/vocab_digest.h"
#include "protect/provenance_internal.h"

namespace lineage::protect {

using json = nlohmann::json;
using provenance::Subject;
using provenance::Subjects;

namespace {

void check_request(const ProvenanceRequest& q) {
  if (q.suspect.empty()) fail("no suspect given (--suspect MODEL or URL)");
  if (q.candidates.empty()) fail("no candidate parent given (--candidate MODEL or URL, once per candidate)");
  if (q.text.empty() || !std::filesystem::exists(q.text)) fail("--text '{}' does not exist", q.text);
  if (!(q.alpha > 0 && q.alpha < 1)) fail("--alpha {} must be in (0, 1)", q.alpha);
  if (q.queries < 2) fail("--queries {} must be at least 2", q.queries);
  if (q.prompt_tokens < 1 || q.gen_tokens < 1) fail("--prompt-tokens and --gen-tokens must be at least 1");
  if (q.windows < 2 || q.window < 2) fail("--windows and --window must be at least 2");
  if (q.method != "auto" && q.method != "blackbox" && q.method != "logprobs" && q.method != "weights")
    fail("--method '{}' is not one of auto, blackbox, logprobs, weights", q.method);
}

Subject open_subject(const std::string& source, const ProvenanceRequest& q, const std::shared_ptr<text::Tokenizer>& tok) {
  Subject s;
  s.source = source;
  s.name = teacher::is_url(source) ? source : std::filesystem::path(source).filename().string();
  if (s.name.empty() || s.name == "model.safetensors") s.name = source;
  teacher::TeacherSpec spec;
  spec.source = source;
  spec.device = parse_device(q.device);
  spec.http.api_key = q.api_key;
  spec.http.tokenizer = tok;
  spec.http.quiet = q.quiet;
  if (teacher::is_url(source) && !tok) fail("'{}' is a URL: give the tokenizer its ids are mapped onto (--tokenizer)", source);
  s.teacher = teacher::open(spec);
  return s;
}

bool same_vocab(const Subjects& s, const text::Tokenizer& base) {
  const auto want = text::vocab_digest(base.vocab());
  auto ok = [&](const Subject& x) { return text::vocab_digest(x.teacher->tokenizer().vocab()) == want; };
  bool all = ok(s.suspect);
  for (const auto& c : s.candidates) all = all && ok(c);
  for (const auto& r : s.references) all = all && ok(r);
  return all;
}

bool all_can(const Subjects& s, const std::function<bool(const teacher::Abilities&)>& can) {
  bool all = can(s.suspect.teacher->abilities());
  for (const auto& c : s.candidates) all = all && can(c.teacher->abilities());
  for (const auto& r : s.references) all = all && can(r.teacher->abilities());
  return all;
}

// `count` windows of `width` + 1 ids, evenly spaced over the text.
torch::Tensor text_windows(const std::vector<int32_t>& ids, int count, int width) {
  const int64_t W = width + 1;
  const int64_t fit = static_cast<int64_t>(ids.size()) / W;
  if (fit < 2) fail("--text holds {} tokens, too few for windows of {} tokens", ids.size(), width);
  const int64_t n = std::min<int64_t>(count, fit);
  auto out = torch::empty({n, W}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = (fit / n) * i * W;
    for (int64_t t = 0; t < W; ++t) out[i][t] = ids[at + t];
  }
  return out;
}

void add_rows(std::vector<ProvenanceRow>& rows, std::vector<ProvenanceRow> more) {
  for (auto& r : more) rows.push_back(std::move(r));
}

// The verdict: per candidate its smallest p over the tests that count (the weights test, and the
// output tests with outputs_decide), times their number.
void decide(ProvenanceResult& res) {
  std::map<std::string, std::pair<double, int>> per;  // candidate -> (smallest log10 p, tests)
  for (const auto& r : res.rows) {
    if (!r.applies || (!res.outputs_decide && r.method != "weights")) continue;
    auto& [best, tests] = per.try_emplace(r.candidate, 0.0, 0).first->second;
    best = std::min(best, r.log10_p);
    ++tests;
  }
  double best_log = 0;
  for (const auto& [name, bt] : per) {
    const double adjusted = std::min(0.0, bt.first + std::log10(static_cast<double>(bt.second)));
    if (adjusted < best_log) best_log = adjusted, res.verdict_candidate = name;
  }
  res.verdict_p = std::pow(10.0, best_log);
  res.verdict_log10_p = best_log;
  if (best_log >= std::log10(res.alpha)) res.verdict_candidate.clear();
}

}  // namespace

std::vector<ProvenanceResult> run_provenance(const ProvenanceRequest& request, const std::vector<std::string>& suspects) {
  if (suspects.empty()) fail("no suspect given (--suspect MODEL or URL)");
  ProvenanceRequest q = request;
  q.suspect = suspects[0];
  check_request(q);
  std::shared_ptr<text::Tokenizer> given = q.tokenizer.empty() ? nullptr : io::load_tokenizer(q.tokenizer);
  Subjects s;
  for (const auto& c : q.candidates) s.candidates.push_back(open_subject(c, q, given));
  for (const auto& r : q.references) s.references.push_back(open_subject(r, q, given));
  const text::Tokenizer& base = given ? *given : s.candidates[0].teacher->tokenizer();
  const auto ids = base.encode(read_file(q.text), false);
  const bool any = q.method == "auto";
  std::vector<std::string> prompts;
  torch::Tensor windows;
  std::vector<ProvenanceResult> results;
  for (const auto& suspect : suspects) {
    s.suspect = open_subject(suspect, q, given);
    ProvenanceResult res;
    res.suspect = suspect;
    res.alpha = q.alpha;
    res.outputs_decide = q.outputs_decide;
    const bool distributions = all_can(s, [](const teacher::Abilities& a) { return a.logits || (a.top_k && a.next_logprob); }) &&
                               same_vocab(s, base);
    if (any || q.method == "blackbox") {
      if (all_can(s, [](const teacher::Abilities& a) { return a.generation; })) {
        if (prompts.empty()) prompts = provenance::sample_prompts(ids, base, q.queries, q.prompt_tokens, q.seed);
        add_rows(res.rows, provenance::blackbox(s, prompts, q, base));
      } else if (!any) {
        fail("--method blackbox needs every model to generate text");
      }
    }
    if (any || q.method == "logprobs") {
      if (distributions) {
        if (!windows.defined()) windows = text_windows(ids, q.windows, q.window);
        add_rows(res.rows, provenance::logprobs(s, windows, q));
      } else if (!any) {
        fail("--method logprobs needs next-token distributions from every model over one vocabulary");
      }
    }
    if (any || q.method == "weights") add_rows(res.rows, provenance::weights(s));
    decide(res);
    results.push_back(std::move(res));
  }
  return results;
}

ProvenanceResult run_provenance(const ProvenanceRequest& q) { return run_provenance(q, {q.suspect})[0]; }

json ProvenanceResult::to_json() const {
  json rows_json = json::array();
  for (const auto& r : rows)
    rows_json.push_back({{"candidate", r.candidate}, {"method", r.method}, {"statistic", r.statistic}, {"value", r.value},
                         {"p_value", r.p_value}, {"log10_p", r.log10_p}, {"queries_or_tokens", r.queries},
                         {"applies", r.applies}, {"note", r.note}});
  return {{"suspect", suspect}, {"rows", rows_json}, {"alpha", alpha}, {"outputs_decide", outputs_decide},
          {"verdict", verdict_candidate.empty() ? json(nullptr) : json(verdict_candidate)}, {"verdict_p", verdict_p}, {"verdict_log10_p", verdict_log10_p}};
}

std::string ProvenanceResult::table() const {
  auto p_text = [](const ProvenanceRow& r) {
    if (!r.applies) return std::string("n/a");
    if (r.log10_p < -300) return fmt::format("1e{:.0f}", r.log10_p);
    return r.p_value > 0 ? fmt::format("{:.3g}", r.p_value) : std::string("<1e-300");
  };
  std::string out = fmt::format("{:<28} {:<9} {:<34} {:>10} {:>10}  {}\n", "candidate", "method", "statistic", "p-value",
                                "queries", "note");
  for (const auto& r : rows)
    out += fmt::format("{:<28} {:<9} {:<34} {:>10} {:>10}  {}\n", r.candidate, r.method, r.applies ? r.statistic : "-",
                       p_text(r), r.queries, r.note);
  if (!outputs_decide)
    out += "(blackbox and logprobs p-values are shown, not counted in the verdict: --outputs-decide counts them)\n";
  if (verdict_candidate.empty())
    out += fmt::format("verdict: derived from none of the candidates at alpha {} (smallest adjusted p {:.3g})\n", alpha, verdict_p);
  else
    out += fmt::format("verdict: derived from {} (adjusted p {} < alpha {})\n", verdict_candidate,
                       verdict_p > 0 ? fmt::format("{:.3g}", verdict_p) : fmt::format("1e{:.0f}", verdict_log10_p), alpha);
  return out;
}

}  // namespace lineage::protect
