// The radioactivity test. See include/lineage/protect/trace.h.
#include "lineage/protect/trace.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

ContextDistributions read_contexts(model::Llama& suspect, const std::vector<std::vector<int32_t>>& texts, int h,
                                   int64_t max_contexts) {
  const auto& cfg = suspect->config();
  const int64_t V = cfg.vocab_size;
  for (const auto& t : texts)
    for (int32_t id : t)
      if (id < 0 || id >= V) fail("trace: token id {} is outside the suspect's vocabulary of {}", id, V);
  // Each context keeps V probabilities: at most 2^26 floats (256 MiB) in all.
  max_contexts = std::min<int64_t>(max_contexts, std::max<int64_t>(1, (int64_t{1} << 26) / V));
  ContextDistributions out;
  out.h = h;
  out.texts = static_cast<int64_t>(texts.size());
  // Every occurrence of a context adds its distribution; the mean is scored. Averaging keeps
  // the suspect's lean towards the green list and flattens what varies with the wider prefix,
  // which shrinks the null variance γ(1−γ)Σp̄² (and stays exact: p̄ owes nothing to the key).
  std::unordered_map<std::string, size_t> index;
  std::vector<int64_t> counts;
  torch::NoGradGuard no_grad;
  suspect->eval();
  const size_t L = static_cast<size_t>(cfg.max_seq_len), H = static_cast<size_t>(h);
  for (const auto& t : texts) {
    for (size_t b = 0; b < t.size(); b += L) {
      const size_t e = std::min(t.size(), b + L);
      auto tok = torch::tensor(std::vector<int64_t>(t.begin() + b, t.begin() + e), torch::kLong).view({1, -1});
      auto p = torch::softmax(suspect->forward(tok.to(suspect->device())).to(torch::kFloat32), -1)[0].to(torch::kCPU).contiguous();
      for (size_t i = b; i < e; ++i) {
        if (i + 1 < H) continue;  // the prediction after ids [0, i] needs h of them
        ++out.positions;
        std::string key(reinterpret_cast<const char*>(t.data() + (i + 1 - H)), 4 * H);
        auto it = index.find(key);
        if (it == index.end()) {
          if (static_cast<int64_t>(out.contexts.size()) >= max_contexts) continue;
          it = index.emplace(std::move(key), out.contexts.size()).first;
          out.contexts.emplace_back(t.begin() + (i + 1 - H), t.begin() + i + 1);
          out.probs.emplace_back(static_cast<size_t>(V), 0.0f);
          counts.push_back(0);
        } else {
          ++out.repeated;
        }
        const float* row = p[static_cast<int64_t>(i - b)].data_ptr<float>();
        auto& acc = out.probs[it->second];
        for (int64_t v = 0; v < V; ++v) acc[v] += row[v];
        ++counts[it->second];
      }
    }
  }
  for (size_t c = 0; c < out.probs.size(); ++c)
    for (auto& q : out.probs[c]) q /= static_cast<float>(counts[c]);
  return out;
}

Verdict score_green_mass(const Watermark& wm, const ContextDistributions& cd, const std::vector<std::vector<int32_t>>& ours,
                         const TraceOptions& options) {
  const size_t h = static_cast<size_t>(wm.params().context);
  if (static_cast<int>(h) != cd.h) fail("trace: contexts were read with h = {}, the watermark uses h = {}", cd.h, h);
  // Tokens never scored after a context: those that follow it in our own outputs.
  auto context_key = [&](const int32_t* end) { return std::string(reinterpret_cast<const char*>(end - h), 4 * h); };
  std::unordered_map<std::string, std::vector<int32_t>> excluded;
  for (const auto& t : ours)
    for (size_t i = h; i < t.size(); ++i) excluded[context_key(t.data() + i)].push_back(t[i]);
  const double g = wm.params().gamma;
  double sum_m = 0, sum_mean = 0, sum_var = 0;
  int64_t dropped = 0;
  std::vector<float> probs;
  for (size_t c = 0; c < cd.contexts.size(); ++c) {
    probs = cd.probs[c];
    const int64_t V = static_cast<int64_t>(probs.size());
    if (auto it = excluded.find(context_key(cd.contexts[c].data() + h)); it != excluded.end())
      for (int32_t x : it->second)
        if (x >= 0 && x < V) probs[x] = 0, ++dropped;
    auto mask = wm.green_mask(cd.contexts[c], V);
    double m = 0, total = 0, sq = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double q = probs[v];
      total += q;
      sq += q * q;
      if (mask[v]) m += q;
    }
    sum_m += m;
    sum_mean += g * total;
    sum_var += g * (1 - g) * sq;
  }
  Verdict v;
  v.method = fmt::format("weights: green mass of the next-token distribution at {} distinct contexts of {} texts",
                         cd.contexts.size(), cd.texts);
  v.mass = true;
  v.documents = cd.texts;
  v.tokens = cd.positions;
  v.scored = static_cast<int64_t>(cd.contexts.size());
  v.repeated = cd.repeated;
  v.excluded = dropped;
  v.gamma = g;
  v.green_mass = sum_m;
  v.expected_mass = sum_mean;
  v.z = sum_var > 0 ? (sum_m - sum_mean) / std::sqrt(sum_var) : 0;
  v.p_value = v.scored > 0 ? normal_upper_tail(v.z) : 1.0;
  v.green = static_cast<int64_t>(std::llround(sum_m));
  v.threshold_z = options.threshold_z;
  v.flagged = v.scored > 0 && v.z > options.threshold_z;
  v.key_fingerprint = wm.fingerprint();
  return v;
}

Verdict trace_green_mass(model::Llama& suspect, const Watermark& wm, const std::vector<std::vector<int32_t>>& texts,
                         const std::vector<std::vector<int32_t>>& ours, const TraceOptions& options) {
  auto cd = read_contexts(suspect, texts, wm.params().context, options.max_contexts);
  if (!options.exclude_read_windows) return score_green_mass(wm, cd, ours, options);
  auto all = ours;
  all.insert(all.end(), texts.begin(), texts.end());
  return score_green_mass(wm, cd, all, options);
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
