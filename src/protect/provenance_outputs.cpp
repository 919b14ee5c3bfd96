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
  for (const auto& p : prompts) ids.push_back(tok.encode(p, true));
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

// The test both output methods share (Nikolic et al.'s design): `scores[o][u]` is how close the
// suspect is to model `others[o]` (candidates first, then references) on unit u (a prompt, a
// window). The closest candidate is tested against every other model with one-sided paired tests
// (`test` on the differences), Holm-corrected; it is attributed only when it beats all of them.
std::vector<ProvenanceRow> closest_candidate(const Subjects& s, const std::vector<const Subject*>& others,
                                             const std::vector<std::vector<double>>& scores, const std::string& method,
                                             const std::string& measure, int64_t queries,
                                             const std::function<double(const std::vector<double>&)>& test) {
  const size_t nc = s.candidates.size();
  size_t best = 0;
  for (size_t c = 1; c < nc; ++c)
    if (mean(scores[c]) > mean(scores[best])) best = c;
  std::vector<double> p;
  std::string against;
  for (size_t o = 0; o < others.size(); ++o) {
    if (o == best) continue;
    std::vector<double> d(scores[best].size());
    for (size_t u = 0; u < d.size(); ++u) d[u] = scores[best][u] - scores[o][u];
    p.push_back(test(d));
    against += fmt::format("{}{} {:.3f}", against.empty() ? "" : ", ", others[o]->name, mean(scores[o]));
  }
  std::vector<ProvenanceRow> rows;
  for (size_t c = 0; c < nc; ++c) {
    ProvenanceRow row;
    row.candidate = s.candidates[c].name;
    row.method = method;
    row.value = mean(scores[c]);
    row.statistic = fmt::format("{} {:.3f}", measure, row.value);
    row.queries = queries;
    if (c == best && !p.empty()) {
      auto adjusted = holm(p);
      row.p_value = *std::max_element(adjusted.begin(), adjusted.end());
      row.note = "closest; against " + against;
    } else if (c == best) {
      row.applies = false;
      row.note = "nothing to compare with: give another candidate or a --reference";
    } else {
      row.note = "not the closest candidate";
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
  auto suspect = continuations(s.suspect, prompts, q.gen_tokens, base);
  // Per prompt, the suspect's match rate with each candidate, then with each reference.
  std::vector<const Subject*> others;
  for (auto& c : s.candidates) others.push_back(&c);
  for (auto& r : s.references) others.push_back(&r);
  std::vector<std::vector<double>> rates;
  for (const Subject* o : others) {
    auto& mine = const_cast<Subject&>(*o);
    if (mine.continuations.empty()) mine.continuations = continuations(mine, prompts, q.gen_tokens, base);
    const auto& theirs = mine.continuations;
    std::vector<double> r(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) r[i] = match_rate(suspect[i], theirs[i]);
    rates.push_back(std::move(r));
  }
  return closest_candidate(s, others, rates, "blackbox", "token match", static_cast<int64_t>(prompts.size()),
                           [](const std::vector<double>& d) { return paired_z_p(d); });
}

namespace {

// Top-1 next token of `s` at every position of each window (W, T) in the base tokenizer's ids.
torch::Tensor top1(Subject& s, const torch::Tensor& windows) {
  torch::NoGradGuard no_grad;
  auto input = windows.slice(1, 0, -1);
  if (s.teacher->has_logits()) {
    std::vector<torch::Tensor> parts;
    for (int64_t b = 0; b < input.size(0); b += 8) parts.push_back(s.teacher->logits(input.slice(0, b, b + 8)).argmax(-1));
    return torch::cat(parts, 0).to(torch::kCPU);
  }
  teacher::TopKRequest req;
  req.k = 1;
  req.next = windows.slice(1, 1);
  return s.teacher->top_k(input, req).ids.select(-1, 0).to(torch::kCPU);
}

// Per window: the share of positions where the two models' top-1 agree.
std::vector<double> agreement(const torch::Tensor& a, const torch::Tensor& b) {
  auto same = (a == b).to(torch::kFloat64).mean(1);
  return std::vector<double>(same.data_ptr<double>(), same.data_ptr<double>() + same.numel());
}

}  // namespace

std::vector<ProvenanceRow> logprobs(Subjects& s, const torch::Tensor& windows, const ProvenanceRequest& q) {
  auto suspect = top1(s.suspect, windows);
  std::vector<const Subject*> others;
  std::vector<std::vector<double>> scores;
  for (auto* group : {&s.candidates, &s.references})
    for (auto& o : *group) {
      others.push_back(&o);
      if (!o.top1.defined()) o.top1 = top1(o, windows);
      scores.push_back(agreement(suspect, o.top1));
    }
  const uint64_t seed = q.seed;
  const int draws = q.permutations;
  return closest_candidate(s, others, scores, "logprobs", "top-1 agreement", windows.numel(),
                           [seed, draws](const std::vector<double>& d) { return sign_flip_p(d, draws, seed); });
}

}  // namespace lineage::protect::provenance
