// The radioactivity test. See include/lineage/protect/trace.h.
#include "lineage/protect/trace.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "lineage/core/error.h"

namespace lineage::protect {

Predictions predict_next(model::Llama& suspect, std::vector<std::vector<int32_t>> texts, const TraceOptions& options) {
  if (options.top_n < 1) fail("trace: --top-n must be >= 1, got {}", options.top_n);
  const auto& cfg = suspect->config();
  for (const auto& t : texts)
    for (int32_t id : t)
      if (id < 0 || id >= cfg.vocab_size) fail("trace: token id {} is outside the suspect's vocabulary of {}", id, cfg.vocab_size);
  Predictions out;
  out.texts = std::move(texts);
  out.top_n = static_cast<int>(std::min<int64_t>(options.top_n, cfg.vocab_size));
  // Pieces of the context length: (text, begin, end).
  struct Piece {
    uint32_t text;
    size_t begin, end;
  };
  std::vector<Piece> pieces;
  const size_t L = static_cast<size_t>(cfg.max_seq_len);
  for (size_t t = 0; t < out.texts.size(); ++t)
    for (size_t b = 0; b < out.texts[t].size(); b += L)
      pieces.push_back({static_cast<uint32_t>(t), b, std::min(out.texts[t].size(), b + L)});

  torch::NoGradGuard no_grad;
  suspect->eval();
  const size_t B = static_cast<size_t>(std::max(1, options.batch_size));
  for (size_t i = 0; i < pieces.size(); i += B) {
    const size_t j = std::min(pieces.size(), i + B);
    int64_t T = 0;
    for (size_t k = i; k < j; ++k) T = std::max<int64_t>(T, pieces[k].end - pieces[k].begin);
    auto tok = torch::zeros({static_cast<int64_t>(j - i), T}, torch::kLong);  // (B, T)
    auto ta = tok.accessor<int64_t, 2>();
    for (size_t k = i; k < j; ++k)
      for (size_t p = pieces[k].begin; p < pieces[k].end; ++p) ta[k - i][p - pieces[k].begin] = out.texts[pieces[k].text][p];
    auto logits = suspect->forward(tok.to(suspect->device()));                       // (B, T, V)
    auto top = std::get<1>(logits.topk(out.top_n, -1)).to(torch::kCPU).contiguous();  // (B, T, n)
    auto tp = top.accessor<int64_t, 3>();
    for (size_t k = i; k < j; ++k)
      for (size_t p = pieces[k].begin; p < pieces[k].end; ++p)
        for (int r = 0; r < out.top_n; ++r)
          out.items.push_back({pieces[k].text, static_cast<uint32_t>(p), static_cast<int32_t>(tp[k - i][p - pieces[k].begin][r])});
  }
  return out;
}

Verdict score_predictions(const Watermark& wm, const Predictions& pred, const std::vector<std::vector<int32_t>>& ours,
                          const TraceOptions& options) {
  GreenCounter counter(wm);
  for (const auto& t : ours) counter.exclude(t);
  if (options.exclude_read_windows)
    for (const auto& t : pred.texts) counter.exclude(t);
  for (const auto& it : pred.items)
    counter.add_one(std::span<const int32_t>(pred.texts[it.text].data(), it.pos + 1), it.token);
  return verdict_of(counter, wm, options.threshold_z,
                    fmt::format("predictions: top-{} next-token predictions over {} texts", pred.top_n, pred.texts.size()),
                    static_cast<int64_t>(pred.texts.size()), static_cast<int64_t>(pred.items.size()));
}

Verdict trace_predictions(model::Llama& suspect, const Watermark& wm, const std::vector<std::vector<int32_t>>& texts,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options) {
  return score_predictions(wm, predict_next(suspect, texts, options), ours, options);
}

namespace {

// Mean next-token distributions per distinct context, filled one position at a time. The slot of
// a context is fixed at its first occurrence, so two readers fed the same positions (a suspect and
// a reference) hold the same contexts in the same order.
class ContextAccumulator {
 public:
  ContextAccumulator(int h, int64_t vocab, int64_t max_contexts, int64_t texts) : V_(vocab) {
    out_.h = h;
    out_.texts = texts;
    // Each context keeps V probabilities: at most 2^26 floats (256 MiB) in all.
    max_ = std::min<int64_t>(max_contexts, std::max<int64_t>(1, (int64_t{1} << 26) / vocab));
  }
  // The slot for the prediction after text[0..i], or -1 (too early for h ids, or past the cap).
  int64_t slot(const std::vector<int32_t>& text, size_t i) {
    const size_t H = static_cast<size_t>(out_.h);
    if (i + 1 < H) return -1;
    ++out_.positions;
    std::string key(reinterpret_cast<const char*>(text.data() + (i + 1 - H)), 4 * H);
    auto it = index_.find(key);
    if (it != index_.end()) {
      ++out_.repeated;
      ++out_.counts[it->second];
      return static_cast<int64_t>(it->second);
    }
    if (static_cast<int64_t>(out_.contexts.size()) >= max_) return -1;
    index_.emplace(std::move(key), out_.contexts.size());
    out_.contexts.emplace_back(text.begin() + (i + 1 - H), text.begin() + i + 1);
    out_.probs.emplace_back(static_cast<size_t>(V_), 0.0f);
    out_.counts.push_back(1);
    return static_cast<int64_t>(out_.contexts.size()) - 1;
  }
  std::vector<float>& probs(int64_t slot) { return out_.probs[static_cast<size_t>(slot)]; }
  ContextDistributions finish() {
    for (size_t c = 0; c < out_.probs.size(); ++c)
      for (auto& q : out_.probs[c]) q /= static_cast<float>(out_.counts[c]);
    return std::move(out_);
  }

 private:
  int64_t V_, max_ = 0;
  ContextDistributions out_;
  std::unordered_map<std::string, size_t> index_;
};

void check_ids(const std::vector<std::vector<int32_t>>& texts, int64_t V, const char* whose) {
  for (const auto& t : texts)
    for (int32_t id : t)
      if (id < 0 || id >= V) fail("trace: token id {} is outside {} vocabulary of {}", id, whose, V);
}

// The model's next-token probabilities over a text, in windows of its context length: f(i, row).
template <typename F>
void read_probabilities(model::Llama& m, const std::vector<int32_t>& t, F&& f) {
  torch::NoGradGuard no_grad;
  m->eval();
  const size_t L = static_cast<size_t>(m->config().max_seq_len);
  for (size_t b = 0; b < t.size(); b += L) {
    const size_t e = std::min(t.size(), b + L);
    auto tok = torch::tensor(std::vector<int64_t>(t.begin() + b, t.begin() + e), torch::kLong).view({1, -1});
    auto p = torch::softmax(m->forward(tok.to(m->device())).to(torch::kFloat32), -1)[0].to(torch::kCPU).contiguous();
    for (size_t i = b; i < e; ++i) f(i, p[static_cast<int64_t>(i - b)].data_ptr<float>());
  }
}

}  // namespace

ContextDistributions read_contexts(model::Llama& suspect, const std::vector<std::vector<int32_t>>& texts, int h,
                                   int64_t max_contexts) {
  const int64_t V = suspect->config().vocab_size;
  check_ids(texts, V, "the suspect's");
  // Every occurrence of a context adds its distribution; the mean is scored. Averaging keeps
  // the suspect's lean towards the green list and flattens what varies with the wider prefix
  // (and stays exact: p̄ owes nothing to the key).
  ContextAccumulator acc(h, V, max_contexts, static_cast<int64_t>(texts.size()));
  for (const auto& t : texts)
    read_probabilities(suspect, t, [&](size_t i, const float* row) {
      if (int64_t s = acc.slot(t, i); s >= 0) {
        auto& q = acc.probs(s);
        for (int64_t v = 0; v < V; ++v) q[v] += row[v];
      }
    });
  return acc.finish();
}

ContextDistributions read_contexts_top_k(const std::vector<std::vector<int32_t>>& texts, const TopPredictions& top,
                                         int64_t vocab, int h, int64_t max_contexts, model::Llama* reference,
                                         ContextDistributions* reference_out) {
  if (top.ids.size() != texts.size() || top.probs.size() != texts.size() || top.k < 1)
    fail("trace: top-k predictions for {} texts, {} given", texts.size(), top.ids.size());
  check_ids(texts, vocab, "our");
  const size_t K = static_cast<size_t>(top.k);
  ContextAccumulator acc(h, vocab, max_contexts, static_cast<int64_t>(texts.size()));
  std::optional<ContextAccumulator> ref;
  if (reference) {
    if ((*reference)->config().vocab_size != vocab)
      fail("trace: the reference model's vocabulary ({}) differs from the suspect's ({})", (*reference)->config().vocab_size, vocab);
    ref.emplace(h, vocab, max_contexts, static_cast<int64_t>(texts.size()));
  }
  for (size_t t = 0; t < texts.size(); ++t) {
    const auto& text = texts[t];
    if (top.ids[t].size() != text.size() * K || top.probs[t].size() != text.size() * K)
      fail("trace: text {} has {} positions but {} top-{} predictions", t, text.size(), top.ids[t].size() / K, K);
    for (int32_t id : top.ids[t])
      if (id < 0 || id >= vocab) fail("trace: predicted token id {} is outside the vocabulary of {}", id, vocab);
    auto add_suspect = [&](size_t i) {
      int64_t s = acc.slot(text, i);
      if (s >= 0)
        for (size_t j = 0; j < K; ++j) acc.probs(s)[top.ids[t][i * K + j]] += top.probs[t][i * K + j];
    };
    if (!ref) {
      for (size_t i = 0; i < text.size(); ++i) add_suspect(i);
      continue;
    }
    read_probabilities(*reference, text, [&](size_t i, const float* row) {
      add_suspect(i);
      if (int64_t s = ref->slot(text, i); s >= 0)
        for (size_t j = 0; j < K; ++j) {
          const int32_t id = top.ids[t][i * K + j];
          ref->probs(s)[id] += row[id];
        }
    });
  }
  if (ref) *reference_out = ref->finish();
  return acc.finish();
}

Verdict score_green_mass(const Watermark& wm, const ContextDistributions& cd, const ContextDistributions* reference,
                         const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options) {
  const size_t h = static_cast<size_t>(wm.params().context);
  if (static_cast<int>(h) != cd.h) fail("trace: contexts were read with h = {}, the watermark uses h = {}", cd.h, h);
  if (reference && (reference->h != cd.h || reference->contexts != cd.contexts))
    fail("trace: the reference model read other contexts than the suspect (both must read the same text)");
  // Tokens never scored after a context: those that follow it in our own outputs.
  auto context_key = [&](const int32_t* end) { return std::string(reinterpret_cast<const char*>(end - h), 4 * h); };
  std::unordered_map<std::string, std::vector<int32_t>> excluded;
  for (const auto& t : ours)
    for (size_t i = h; i < t.size(); ++i) excluded[context_key(t.data() + i)].push_back(t[i]);
  const double g = wm.params().gamma;
  // Per context c: a_v = p̄(v) − r̄(v) (the reference's mean, or 0), S_c = Σ_green a_v. For a key the
  // suspect never saw, S_c has mean γΣa and variance σ_c² = γ(1−γ)Σa², independently across contexts.
  // The contexts are pooled as a weighted Stouffer sum, weights √n_c/σ_c (n_c: occurrences read):
  // each context counts as its own z-score, a frequent one (which the suspect also met more often in
  // training, where any lean towards our green lists was learnt) more than a rare one. The weights owe
  // nothing to the key, so z stays standard normal under the null.
  double sum_s = 0, sum_var = 0, mass = 0, mass_expected = 0, mass_reference = 0;
  int64_t dropped = 0;
  for (size_t c = 0; c < cd.contexts.size(); ++c) {
    const auto& q = cd.probs[c];
    const int64_t V = static_cast<int64_t>(q.size());
    if (reference && reference->probs[c].size() != q.size())
      fail("trace: the reference model's vocabulary ({}) differs from the suspect's ({})", reference->probs[c].size(), V);
    std::vector<bool> skip;
    if (auto it = excluded.find(context_key(cd.contexts[c].data() + h)); it != excluded.end()) {
      skip.assign(static_cast<size_t>(V), false);
      for (int32_t x : it->second)
        if (x >= 0 && x < V && !skip[x]) skip[x] = true, ++dropped;
    }
    auto mask = wm.green_mask(cd.contexts[c], V);
    double s_green = 0, s_all = 0, sq = 0;
    for (int64_t v = 0; v < V; ++v) {
      if (!skip.empty() && skip[v]) continue;
      const double r = reference ? reference->probs[c][v] : 0.0, av = q[v] - r;
      s_all += av;
      sq += av * av;
      mass_expected += g * q[v];
      if (mask[v]) s_green += av, mass += q[v], mass_reference += r;
    }
    if (sq <= 0) continue;  // the suspect predicts here exactly as the reference: nothing to weigh
    const double w = std::sqrt(static_cast<double>(std::max<int64_t>(1, cd.counts[c])) / (g * (1 - g) * sq));
    sum_s += w * (s_green - g * s_all);
    sum_var += w * w * g * (1 - g) * sq;
  }
  Verdict v;
  v.method = fmt::format("weights: green mass of the next-token distribution{} at {} distinct contexts of {} texts",
                         reference ? " against the reference's" : "", cd.contexts.size(), cd.texts);
  v.mass = true;
  v.documents = cd.texts;
  v.tokens = cd.positions;
  v.scored = static_cast<int64_t>(cd.contexts.size());
  v.repeated = cd.repeated;
  v.excluded = dropped;
  v.gamma = g;
  v.green_mass = mass;
  v.expected_mass = mass_expected;
  if (reference) v.reference_mass = mass_reference;
  v.z = sum_var > 0 ? sum_s / std::sqrt(sum_var) : 0;
  v.p_value = sum_var > 0 ? normal_upper_tail(v.z) : 1.0;
  v.green = static_cast<int64_t>(std::llround(mass));
  v.threshold_z = options.threshold_z;
  v.flagged = sum_var > 0 && v.z > options.threshold_z;
  v.key_fingerprint = wm.fingerprint();
  return v;
}

Calibration calibrate_green_mass(const ContextDistributions& contexts, const ContextDistributions* reference,
                                 const std::vector<std::vector<int32_t>>& ours, const WatermarkParams& params, int keys,
                                 const TraceOptions& options) {
  Calibration c;
  c.keys = keys;
  for (int k = 0; k < keys; ++k) {
    const double p = score_green_mass(Watermark(WatermarkKey::random(), params), contexts, reference, ours, options).p_value;
    c.below_01 += p < 0.01;
    c.below_001 += p < 0.001;
    c.smallest_p = std::min(c.smallest_p, p);
  }
  return c;
}

Verdict trace_generations(const Watermark& wm, const std::vector<std::vector<int32_t>>& prompts,
                          const std::vector<std::vector<int32_t>>& completions,
                          const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options) {
  if (prompts.size() != completions.size()) fail("trace: {} prompts but {} completions", prompts.size(), completions.size());
  GreenCounter counter(wm);
  for (const auto& t : ours) counter.exclude(t);
  for (const auto& p : prompts) counter.exclude(p);
  int64_t candidates = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> all(prompts[i]);
    all.insert(all.end(), completions[i].begin(), completions[i].end());
    candidates += static_cast<int64_t>(completions[i].size());
    counter.add(all, prompts[i].size());
  }
  return verdict_of(counter, wm, options.threshold_z,
                    fmt::format("text: {} generations of the suspect", completions.size()),
                    static_cast<int64_t>(completions.size()), candidates);
}

}  // namespace lineage::protect
