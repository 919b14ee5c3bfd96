// The output tests of `lineage provenance` (see protect/provenance.h): black-box token matches of
// greedy continuations, and top-1 agreement of next-token distributions against references.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "lineage/core/error.h"
#include "lineage/core/mix.h"
#include "protect/provenance_internal.h"

namespace lineage::protect::provenance {

namespace {

// Greedy continuations of equal-length prompts, `batch` at a time, each step one forward pass over
// the whole batch (no KV cache: prompts and continuations are short). Stops at EOS.
std::vector<std::vector<int32_t>> batched_greedy(model::Llama& m, const std::vector<std::vector<int32_t>>& prompts,
                                                 int gen_tokens, int32_t eos) {
  torch::NoGradGuard no_grad;
  m->eval();
  std::vector<std::vector<int32_t>> out(prompts.size());
  const int64_t ctx = m->config().max_seq_len;
  for (size_t b0 = 0; b0 < prompts.size(); b0 += 32) {
    const size_t b1 = std::min(prompts.size(), b0 + 32);
    const int64_t P = static_cast<int64_t>(prompts[b0].size());
    auto tok = torch::empty({static_cast<int64_t>(b1 - b0), P}, torch::kLong);
    for (size_t b = b0; b < b1; ++b)
      for (int64_t t = 0; t < P; ++t) tok[b - b0][t] = prompts[b][t];
    tok = tok.to(m->device());
    std::vector<bool> done(b1 - b0, false);
    for (int g = 0; g < gen_tokens && tok.size(1) < ctx; ++g) {
      auto next = m->forward(tok).select(1, tok.size(1) - 1).argmax(-1);  // (B)
      auto cpu = next.to(torch::kCPU);
      for (size_t b = b0; b < b1; ++b) {
        const int32_t id = static_cast<int32_t>(cpu[b - b0].item<int64_t>());
        if (done[b - b0] || id == eos) {
          done[b - b0] = true;
          continue;
        }
        out[b].push_back(id);
      }
      tok = torch::cat({tok, next.unsqueeze(1)}, 1);
    }
  }
  return out;
}

// What `s` continues each prompt text with, greedily, in the base tokenizer's ids.
std::vector<std::vector<int32_t>> continuations(Subject& s, const std::vector<std::string>& prompts, int gen_tokens,
                                                const text::Tokenizer& base) {
  const auto& tok = s.teacher->tokenizer();
  std::vector<std::vector<int32_t>> ids;
  for (const auto& p : prompts) ids.push_back(tok.encode(p, tok.vocab().add_bos));
  std::vector<std::vector<int32_t>> raw;
  if (model::Llama* m = s.teacher->model()) {
    // Prompts of one length go together.
    std::map<size_t, std::vector<size_t>> by_length;
    for (size_t i = 0; i < ids.size(); ++i) by_length[ids[i].size()].push_back(i);
    raw.resize(ids.size());
    for (const auto& [len, which] : by_length) {
      std::vector<std::vector<int32_t>> group;
      for (size_t i : which) group.push_back(ids[i]);
      auto got = batched_greedy(*m, group, gen_tokens, tok.eos_id());
      for (size_t j = 0; j < which.size(); ++j) raw[which[j]] = std::move(got[j]);
    }
  } else {
    model::GenerateOptions g;
    g.max_tokens = gen_tokens;
    g.sampling.temperature = 0;
    if (tok.eos_id() >= 0) g.stop_ids.push_back(tok.eos_id());
    raw = s.teacher->generate_many(ids, std::vector<model::GenerateOptions>(ids.size(), g));
  }
  std::vector<std::vector<int32_t>> out;
  for (auto& r : raw) {
    auto b = base.encode(tok.decode(r), false);
    if (static_cast<int>(b.size()) > gen_tokens) b.resize(gen_tokens);
    out.push_back(std::move(b));
  }
  return out;
}

// Share of positions where two continuations agree (a continuation that ended counts as agreeing
// only with one that ended there too).
double match_rate(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::max(a.size(), b.size());
  if (n == 0) return 1;
  size_t same = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) same += a[i] == b[i];
  return static_cast<double>(same) / static_cast<double>(n);
}

double mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return x.empty() ? 0 : s / static_cast<double>(x.size());
}

// The test both output methods share. `suspect[c][u]`: how close the suspect is to candidate c on
// unit u (a prompt, a window). The closest candidate c* is attributed only when it beats, in paired
// one-sided tests (Holm over all of them):
//   - every other candidate, in the suspect's closeness to it;
//   - every reference, in the suspect's closeness to it (the suspect resembles c* more than any
//     independent model);
//   - every reference, in closeness to c* (c* resembles the suspect more than it resembles any
//     independent model).
// Closeness between models grows with their quality and with how far their training got, so one
// direction alone is fooled: an undertrained student of one teacher resembles a weak unrelated
// teacher more than its own, and more than a weaker reference does. Without references nobody is
// attributed.
std::vector<ProvenanceRow> closest_candidate(const Subjects& s, const std::vector<std::vector<double>>& suspect,
                                             const std::vector<std::vector<double>>& suspect_to_refs, const std::string& method,
                                             const std::string& measure, int64_t queries,
                                             const std::function<std::vector<double>(size_t, size_t)>& ref_closeness,
                                             const std::function<double(const std::vector<double>&)>& test) {
  const size_t nc = s.candidates.size();
  size_t best = 0;
  for (size_t c = 1; c < nc; ++c)
    if (mean(suspect[c]) > mean(suspect[best])) best = c;
  std::vector<double> p;
  std::string against;
  auto compare = [&](const std::vector<double>& other, const std::string& what) {
    std::vector<double> d(suspect[best].size());
    for (size_t u = 0; u < d.size(); ++u) d[u] = suspect[best][u] - other[u];
    p.push_back(test(d));
    against += fmt::format("{}{} {:.3f}", against.empty() ? "" : ", ", what, mean(other));
  };
  for (size_t c = 0; c < nc; ++c)
    if (c != best) compare(suspect[c], s.candidates[c].name);
  for (size_t r = 0; r < s.references.size(); ++r) {
    compare(suspect_to_refs[r], s.references[r].name);
    compare(ref_closeness(r, best), s.references[r].name + "~it");
  }
  std::vector<ProvenanceRow> rows;
  for (size_t c = 0; c < nc; ++c) {
    ProvenanceRow row;
    row.candidate = s.candidates[c].name;
    row.method = method;
    row.value = mean(suspect[c]);
    row.statistic = fmt::format("{} {:.3f}", measure, row.value);
    row.queries = queries;
    if (c != best) {
      row.note = "not the closest candidate";
    } else if (s.references.empty()) {
      row.applies = false;
      row.note = "closest, but no --reference (an independent model) to compare with";
    } else {
      auto adjusted = holm(p);
      row.p_value = *std::max_element(adjusted.begin(), adjusted.end());
      row.note = "closest; against " + against;
    }
    row.log10_p = std::log10(std::max(row.p_value, 1e-300));
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

std::vector<std::string> sample_prompts(const std::vector<int32_t>& ids, const text::Tokenizer& base, int count,
                                        int prompt_tokens, uint64_t seed) {
  const int64_t span = static_cast<int64_t>(ids.size()) - prompt_tokens;
  if (span < 1) fail("--text holds {} tokens, fewer than --prompt-tokens {} + 1", ids.size(), prompt_tokens);
  std::mt19937_64 rng(splitmix64(seed ^ 0x70726f76656e616eULL));
  std::vector<std::string> prompts;
  for (int i = 0; i < count; ++i) {
    const int64_t at = static_cast<int64_t>(rng() % static_cast<uint64_t>(span));
    prompts.push_back(base.decode(std::span<const int32_t>(ids.data() + at, prompt_tokens)));
  }
  return prompts;
}

std::vector<ProvenanceRow> blackbox(Subjects& s, const std::vector<std::string>& prompts, const ProvenanceRequest& q,
                                    const text::Tokenizer& base) {
  auto said = [&](Subject& x) -> const std::vector<std::vector<int32_t>>& {
    if (x.continuations.empty()) x.continuations = continuations(x, prompts, q.gen_tokens, base);
    return x.continuations;
  };
  auto rates = [&](const std::vector<std::vector<int32_t>>& a, const std::vector<std::vector<int32_t>>& b) {
    std::vector<double> r(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) r[i] = match_rate(a[i], b[i]);
    return r;
  };
  const auto& suspect = said(s.suspect);
  std::vector<std::vector<double>> scores, to_refs;
  for (auto& c : s.candidates) scores.push_back(rates(suspect, said(c)));
  for (auto& r : s.references) to_refs.push_back(rates(suspect, said(r)));
  auto ref_closeness = [&](size_t r, size_t c) { return rates(said(s.references[r]), said(s.candidates[c])); };
  return closest_candidate(s, scores, to_refs, "blackbox", "token match", static_cast<int64_t>(prompts.size()), ref_closeness,
                           [](const std::vector<double>& d) { return paired_z_p(d); });
}

namespace {

// Top-1 next token of `s` at every position of each window (W, T) in the base tokenizer's ids.
void read_windows(Subject& s, const torch::Tensor& windows) {
  torch::NoGradGuard no_grad;
  auto input = windows.slice(1, 0, -1);
  if (s.teacher->has_logits()) {
    std::vector<torch::Tensor> top;
    for (int64_t b = 0; b < input.size(0); b += 8) top.push_back(s.teacher->logits(input.slice(0, b, b + 8)).argmax(-1).to(torch::kCPU));
    s.top1 = torch::cat(top, 0);
    return;
  }
  teacher::TopKRequest req;
  req.k = 1;
  req.next = windows.slice(1, 1);
  s.top1 = s.teacher->top_k(input, req).ids.select(-1, 0).to(torch::kCPU);
}

// Per window: the share of positions where the two models' top-1 agree.
std::vector<double> agreement(const torch::Tensor& a, const torch::Tensor& b) {
  auto same = (a == b).to(torch::kFloat64).mean(1);
  return std::vector<double>(same.data_ptr<double>(), same.data_ptr<double>() + same.numel());
}

}  // namespace

void read_top1(Subjects& s, const torch::Tensor& windows) {
  if (!s.suspect.top1.defined()) read_windows(s.suspect, windows);
  for (auto* group : {&s.candidates, &s.references})
    for (auto& o : *group)
      if (!o.top1.defined()) read_windows(o, windows);
}

std::vector<ProvenanceRow> logprobs(Subjects& s, const torch::Tensor& windows, const ProvenanceRequest& q) {
  read_top1(s, windows);
  std::vector<std::vector<double>> scores, to_refs;
  for (auto& c : s.candidates) scores.push_back(agreement(s.suspect.top1, c.top1));
  for (auto& r : s.references) to_refs.push_back(agreement(s.suspect.top1, r.top1));
  auto ref_closeness = [&](size_t r, size_t c) { return agreement(s.references[r].top1, s.candidates[c].top1); };
  const uint64_t seed = q.seed;
  const int draws = q.permutations;
  return closest_candidate(s, scores, to_refs, "logprobs", "top-1 agreement", windows.numel(), ref_closeness,
                           [seed, draws](const std::vector<double>& d) { return sign_flip_p(d, draws, seed); });
}

}  // namespace lineage::protect::provenance
