// protect::run_trace (see trace_run.h): the suspect opened through teacher::open, one function per
// reading (weights, an API's log-probabilities, predictions, generated text).
#include "lineage/protect/trace_run.h"

#include <fmt/format.h>

#include <cmath>

#include "lineage/core/device.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/teacher/open.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::protect {

namespace {

// What the trace reads: the suspect, our tokenizer, and the reference when one is given.
struct Subjects {
  bool url = false;
  std::unique_ptr<teacher::Teacher> suspect, reference;
  std::shared_ptr<text::Tokenizer> ours_tokenizer;  // when --tokenizer is given
  const text::Tokenizer& tokenizer() const { return ours_tokenizer ? *ours_tokenizer : suspect->tokenizer(); }
};

std::string resolve_method(const TraceRequest& q, const Subjects& s) {
  const bool logprobs = s.suspect->abilities().top_k && s.url;
  std::string method = q.method;
  if (method == "auto") method = !s.url ? "weights" : logprobs ? "logprobs" : "text";
  if (method != "weights" && method != "logprobs" && method != "predictions" && method != "text")
    fail("--method '{}' is not one of auto, weights, logprobs, predictions, text", method);
  if (s.url && (method == "weights" || method == "predictions"))
    fail("--method {} needs the suspect's weights; '{}' is a URL (use --method logprobs or text)", method, q.suspect);
  if (!s.url && method == "logprobs")
    fail("--method logprobs reads an API's log-probabilities; '{}' is not a URL (use --method weights)", q.suspect);
  if (method == "logprobs" && !logprobs)
    fail("'{}' does not return prompt log-probabilities (echo + logprobs): use --method text", q.suspect);
  if (q.wrong_keys > 0 && method != "weights" && method != "logprobs")
    fail("--wrong-keys works with --method weights or logprobs, not {}", method);
  if (!q.reference.empty() && method != "weights" && method != "logprobs")
    fail("--reference works with --method weights or logprobs, not {}", method);
  return method;
}

Subjects open_subjects(const TraceRequest& q) {
  Subjects s;
  s.url = teacher::is_url(q.suspect);
  if (s.url && q.tokenizer.empty())
    fail("a URL suspect needs --tokenizer: our model's tokenizer, the one the watermark was keyed on");
  if (!q.tokenizer.empty()) s.ours_tokenizer = io::load_tokenizer(q.tokenizer);
  teacher::TeacherSpec spec;
  spec.source = q.suspect;
  spec.device = parse_device(q.device);
  spec.http.api_key = q.api_key;
  spec.http.concurrency = q.concurrency;
  spec.http.tokenizer = s.ours_tokenizer;
  s.suspect = teacher::open(spec);
  return s;
}

// The reference must speak the suspect's vocabulary; the suspect, for a reading of its
// predictions, ours.
void open_reference(const TraceRequest& q, const std::string& method, Subjects& s) {
  if (!q.reference.empty()) {
    s.reference = teacher::open({q.reference, parse_device(q.device)});
    const auto& theirs = s.url ? s.ours_tokenizer->vocab() : s.suspect->tokenizer().vocab();
    if (text::vocab_digest(s.reference->tokenizer().vocab()) != text::vocab_digest(theirs))
      fail("--reference '{}' has another vocabulary than the suspect: the two distributions cannot be compared", q.reference);
  }
  if (!s.url && method != "text" && s.ours_tokenizer &&
      text::vocab_digest(s.ours_tokenizer->vocab()) != text::vocab_digest(s.suspect->tokenizer().vocab()))
    fail("the suspect's tokenizer differs from '{}': its predictions are not our token ids; use --method text", q.tokenizer);
}

// The suspect's top-k next-token log-probabilities over `ids` through its API (echo + logprobs),
// in windows of `window` tokens (each request scores one window, the token after it as the last
// position's next), fed to the green-mass reading; `ref` gets the reference's on the same tokens.
ContextDistributions read_api_contexts(teacher::Teacher& api, const std::vector<int32_t>& ids, const TraceRequest& q,
                                       model::Llama* reference, std::optional<ContextDistributions>& ref) {
  const int64_t W = std::max(2, q.window), K = q.top_logprobs;
  if (static_cast<int64_t>(ids.size()) < W + 1) fail("--text holds {} tokens, fewer than --window {} + 1", ids.size(), W);
  const int64_t B = (static_cast<int64_t>(ids.size()) - 1) / W;
  auto in = torch::empty({B, W}, torch::kLong), next = torch::empty({B, W}, torch::kLong);
  auto ina = in.accessor<int64_t, 2>(), nexta = next.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < W; ++t) {
      ina[b][t] = ids[b * W + t];
      nexta[b][t] = ids[b * W + t + 1];
    }
  teacher::TopKRequest req;
  req.k = K;
  req.next = next;
  auto top = api.top_k(in, req);
  auto tid = top.ids.to(torch::kCPU).contiguous(), tlp = top.logprobs.to(torch::kCPU).contiguous();
  auto ia = tid.accessor<int64_t, 3>();
  auto la = tlp.accessor<float, 3>();
  TopPredictions tp;
  tp.k = static_cast<int>(K);
  std::vector<std::vector<int32_t>> windows;
  for (int64_t b = 0; b < B; ++b) {
    windows.emplace_back(ids.begin() + b * W, ids.begin() + (b + 1) * W);
    std::vector<int32_t> bi(static_cast<size_t>(W * K));
    std::vector<float> bp(static_cast<size_t>(W * K));
    for (int64_t t = 0; t < W; ++t)
      for (int64_t j = 0; j < K; ++j) {
        bi[t * K + j] = static_cast<int32_t>(ia[b][t][j]);
        // Padding (fewer alternatives than asked, or ids the text mapping merged) carries ~0.
        bp[t * K + j] = std::exp(la[b][t][j]);
      }
    tp.ids.push_back(std::move(bi));
    tp.probs.push_back(std::move(bp));
  }
  ContextDistributions r;
  auto cd = read_contexts_top_k(windows, tp, api.tokenizer().vocab_size(), q.params.context, q.trace.max_contexts, reference,
                                reference ? &r : nullptr);
  if (reference) ref = std::move(r);
  return cd;
}

// weights and logprobs: the green mass of the suspect's next-token distributions.
void trace_green_mass(const TraceRequest& q, Subjects& s, const Watermark& wm, std::vector<int32_t>& ids,
                      std::vector<std::vector<int32_t>>& ours, TraceResult& out) {
  ContextDistributions cd;
  std::optional<ContextDistributions> ref;
  model::Llama* reference = s.reference ? s.reference->model() : nullptr;
  if (out.method == "weights") {
    cd = read_contexts(*s.suspect->model(), {ids}, q.params.context, q.trace.max_contexts);
    if (reference) ref = read_contexts(*reference, {ids}, q.params.context, q.trace.max_contexts);
  } else {
    cd = read_api_contexts(*s.suspect, ids, q, reference, ref);
  }
  if (q.trace.exclude_read_windows) ours.push_back(ids);
  out.verdict = score_green_mass(wm, cd, ref ? &*ref : nullptr, ours, q.trace);
  if (out.method == "logprobs")
    out.verdict.method = fmt::format("logprobs: green mass of the top-{} log-probabilities '{}' returns{} at {} distinct contexts",
                                     q.top_logprobs, q.suspect, ref ? ", against the reference's on the same tokens," : "",
                                     cd.contexts.size());
  if (q.wrong_keys > 0) out.calibration = calibrate_green_mass(cd, ref ? &*ref : nullptr, ours, q.params, q.wrong_keys, q.trace);
}

// text: the suspect completes evenly spaced pieces of the text; its completions are scored.
Verdict trace_text(const TraceRequest& q, Subjects& s, const Watermark& wm, const std::vector<int32_t>& ids,
                   const std::vector<std::vector<int32_t>>& ours) {
  const auto& tok = s.tokenizer();
  std::vector<std::vector<int32_t>> prompts;
  const size_t P = static_cast<size_t>(std::max(1, q.prompt_tokens));
  if (ids.size() < P) fail("--text '{}' holds fewer tokens than --prompt-tokens {}", q.text, P);
  if (q.samples < 1) fail("--samples {} must be at least 1", q.samples);
  const size_t span = ids.size() - P + 1;
  for (int i = 0; i < q.samples; ++i) {
    size_t at = span * static_cast<size_t>(i) / static_cast<size_t>(q.samples);
    std::vector<int32_t> p;
    if (tok.bos_id() >= 0 && tok.vocab().add_bos) p.push_back(tok.bos_id());
    p.insert(p.end(), ids.begin() + at, ids.begin() + at + P);
    prompts.push_back(std::move(p));
  }
  std::vector<model::GenerateOptions> g(prompts.size());
  for (size_t i = 0; i < g.size(); ++i) {
    g[i].max_tokens = q.gen_tokens;
    g[i].sampling = {q.temperature, 0, 1.0f, q.seed + i};
  }
  auto completions = s.suspect->generate_many(prompts, g);
  return trace_generations(wm, prompts, completions, ours, q.trace);
}

}  // namespace

TraceResult run_trace(const TraceRequest& q) {
  Watermark wm(WatermarkKey::read(q.key), q.params);
  Subjects s = open_subjects(q);
  TraceResult out;
  out.method = resolve_method(q, s);
  open_reference(q, out.method, s);
  const auto& tok = s.tokenizer();
  auto ids = tok.encode(read_file(q.text), false);
  if (static_cast<int64_t>(ids.size()) > q.max_tokens) ids.resize(q.max_tokens);
  if (ids.size() < 2) fail("--text '{}' holds fewer than 2 tokens", q.text);
  std::vector<std::vector<int32_t>> ours;
  for (const auto& f : q.ours)
    for (auto& d : encode_text(tok, read_file(f), f).docs) ours.push_back(std::move(d.ids));
  if (out.method == "weights" || out.method == "logprobs")
    trace_green_mass(q, s, wm, ids, ours, out);
  else if (out.method == "predictions")
    out.verdict = trace_predictions(*s.suspect->model(), wm, {ids}, ours, q.trace);
  else
    out.verdict = trace_text(q, s, wm, ids, ours);
  return out;
}

nlohmann::json TraceResult::to_json() const {
  auto j = protect::to_json(verdict);
  if (calibration)
    j["wrong_keys"] = {{"keys", calibration->keys}, {"below_0.01", calibration->below_01},
                       {"below_0.001", calibration->below_001}, {"smallest_p", calibration->smallest_p}};
  return j;
}

std::string TraceResult::describe() const {
  std::string s = protect::describe(verdict) + "\nmethod: " + verdict.method + "\n";
  if (calibration)
    s += fmt::format("calibration: {} random wrong keys, {} below p = 0.01 and {} below p = 0.001 (about {:.0f} and {:.1f} "
                     "expected); smallest p {:.3g}\n",
                     calibration->keys, calibration->below_01, calibration->below_001, 0.01 * calibration->keys,
                     0.001 * calibration->keys, calibration->smallest_p);
  return s;
}

}  // namespace lineage::protect
