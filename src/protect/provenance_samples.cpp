// The "samples" test of `lineage provenance` (issue 30): does the suspect find a candidate's own
// samples more likely than independent models do? A student trained to match a teacher's
// distribution (logit KD) or on its generated text (sequence-level KD) takes on what the teacher
// says that real text does not — its idiosyncrasies — and so assigns the teacher's temperature-1
// samples a higher likelihood, relative to its likelihood of real text, than a model trained on the
// real text alone. The same idea underlies membership and training-data inference from a model's
// likelihoods (e.g. Shokri et al. 2017; Carlini et al. 2021), here with the teacher's samples as the
// "members". Per candidate: its samples continue prompts cut from the probe text; every model's
// excess = mean log-probability per sampled token minus its mean log-probability per token of real
// windows of the same text; the suspect's excess against each reference's, paired over samples
// (one-sided sign-flip permutation test), Holm over the references. Subtracting the real-text
// likelihood takes out most of what quality alone does: a better model finds both more likely.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lineage/core/error.h"
#include "lineage/core/mix.h"
#include "protect/provenance_internal.h"

namespace lineage::protect::provenance {

namespace {

double mean(const std::vector<double>& v) { return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }

// Per row of `tokens` (N, T): the mean log-probability `s` gives its tokens from column `from` on.
std::vector<double> mean_logprob(Subject& s, const torch::Tensor& tokens, int64_t from) {
  torch::NoGradGuard no_grad;
  std::vector<double> out;
  for (int64_t b = 0; b < tokens.size(0); b += 8) {
    auto x = tokens.slice(0, b, b + 8);
    auto input = x.slice(1, 0, -1), next = x.slice(1, 1);
    torch::Tensor lp;
    if (s.teacher->has_logits()) {
      auto logits = s.teacher->logits(input).to(torch::kCPU).to(torch::kFloat32);
      lp = torch::log_softmax(logits, -1).gather(-1, next.unsqueeze(-1)).squeeze(-1);
    } else {
      teacher::TopKRequest req;
      req.k = 1;
      req.next = next;
      lp = s.teacher->top_k(input, req).target_logprobs.to(torch::kCPU);
    }
    auto per_row = lp.slice(1, from - 1).to(torch::kFloat64).mean(1).contiguous();
    out.insert(out.end(), per_row.data_ptr<double>(), per_row.data_ptr<double>() + per_row.numel());
  }
  return out;
}

// A candidate's temperature-1 continuations of the prompts, `tokens` long each, as rows of prompt +
// continuation ids (a continuation that ends early is left out).
torch::Tensor own_samples(Subject& c, const std::vector<std::vector<int32_t>>& prompts, int tokens, uint64_t seed) {
  std::vector<model::GenerateOptions> options(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    options[i].max_tokens = tokens;
    options[i].sampling.temperature = 1.0f;
    options[i].sampling.seed = splitmix64(seed ^ (0x5a3b1e5ULL + i));
  }
  const auto said = c.teacher->generate_many(prompts, options);
  std::vector<int64_t> flat;
  int64_t rows = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (static_cast<int>(said[i].size()) < tokens) continue;
    flat.insert(flat.end(), prompts[i].begin(), prompts[i].end());
    flat.insert(flat.end(), said[i].begin(), said[i].begin() + tokens);
    ++rows;
  }
  if (rows == 0) return {};
  return torch::tensor(flat, torch::kLong).view({rows, static_cast<int64_t>(prompts[0].size()) + tokens});
}

}  // namespace

std::vector<ProvenanceRow> samples(Subjects& s, const std::vector<int32_t>& ids, const torch::Tensor& windows,
                                   const ProvenanceRequest& q) {
  // Prompts of the probe text, in the base tokenizer's ids (one vocabulary: checked by the caller).
  const int64_t span = static_cast<int64_t>(ids.size()) - q.prompt_tokens;
  if (span < 1) fail("--text holds {} tokens, fewer than --prompt-tokens {} + 1", ids.size(), q.prompt_tokens);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < q.samples; ++i) {
    const int64_t at = static_cast<int64_t>(splitmix64(q.seed ^ (0x5a4d ^ static_cast<uint64_t>(i))) % static_cast<uint64_t>(span));
    prompts.emplace_back(ids.begin() + at, ids.begin() + at + q.prompt_tokens);
  }
  auto real = [&](Subject& x) {
    if (std::isnan(x.real_logprob)) x.real_logprob = mean(mean_logprob(x, windows, 1));
    return x.real_logprob;
  };
  // Every model's excess on candidate c's samples, per sample.
  auto excess = [&](Subject& x, size_t c) {
    auto& cached = x.sample_excess[s.candidates[c].name];
    if (cached.empty() && s.candidates[c].own_samples.defined()) {
      cached = mean_logprob(x, s.candidates[c].own_samples, q.prompt_tokens);
      const double r = real(x);
      for (auto& v : cached) v -= r;
    }
    return cached;
  };
  std::vector<ProvenanceRow> rows;
  for (size_t c = 0; c < s.candidates.size(); ++c) {
    ProvenanceRow row;
    row.candidate = s.candidates[c].name;
    row.method = "samples";
    if (!s.candidates[c].teacher->abilities().generation) {
      row.applies = false;
      row.note = "the candidate does not generate text";
      rows.push_back(row);
      continue;
    }
    if (!s.candidates[c].own_samples.defined())
      s.candidates[c].own_samples = own_samples(s.candidates[c], prompts, q.sample_tokens, q.seed);
    const auto& X = s.candidates[c].own_samples;
    if (!X.defined() || X.size(0) < 8) {
      row.applies = false;
      row.note = "fewer than 8 of its samples reached --sample-tokens";
      rows.push_back(row);
      continue;
    }
    const auto suspect = excess(s.suspect, c);
    row.value = mean(suspect);
    row.queries = X.numel() + windows.numel();
    std::vector<double> p;
    std::string against;
    for (auto& r : s.references) {
      const auto other = excess(r, c);
      std::vector<double> d(suspect.size());
      for (size_t i = 0; i < d.size(); ++i) d[i] = suspect[i] - other[i];
      p.push_back(sign_flip_p(d, q.permutations, q.seed ^ 0x5a));
      against += fmt::format("{}{} {:+.3f}", against.empty() ? "" : ", ", r.name, mean(other));
    }
    row.statistic = fmt::format("excess log-lik {:+.3f} on {} samples", row.value, X.size(0));
    if (p.empty()) {
      row.applies = false;
      row.note = "no --reference (an independent model) to compare with";
    } else {
      const auto adjusted = holm(p);
      row.p_value = *std::max_element(adjusted.begin(), adjusted.end());
      row.note = "its own samples; references " + against;
    }
    row.log10_p = std::log10(std::max(row.p_value, 1e-300));
    rows.push_back(row);
  }
  return rows;
}

}  // namespace lineage::protect::provenance
