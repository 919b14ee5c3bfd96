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
  std::vector<Subject*> others;
  for (auto& c : s.candidates) others.push_back(&c);
  for (auto& r : s.references) others.push_back(&r);
  std::vector<std::vector<double>> rates;
  for (Subject* o : others) {
    auto theirs = continuations(*o, prompts, q.gen_tokens, base);
    std::vector<double> r(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) r[i] = match_rate(suspect[i], theirs[i]);
    rates.push_back(std::move(r));
  }
  const size_t nc = s.candidates.size();
  size_t best = 0;
  for (size_t c = 1; c < nc; ++c)
    if (mean(rates[c]) > mean(rates[best])) best = c;
  // The closest candidate against every other model: one-sided paired tests over prompts, Holm.
  std::vector<double> p;
  std::string against;
  for (size_t o = 0; o < others.size(); ++o) {
    if (o == best) continue;
    std::vector<double> d(prompts.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = rates[best][i] - rates[o][i];
    p.push_back(paired_z_p(d));
    against += fmt::format("{}{} {:.3f}", against.empty() ? "" : ", ", others[o]->name, mean(rates[o]));
  }
  std::vector<ProvenanceRow> rows;
  for (size_t c = 0; c < nc; ++c) {
    ProvenanceRow row;
    row.candidate = s.candidates[c].name;
    row.method = "blackbox";
    row.value = mean(rates[c]);
    row.statistic = fmt::format("token match {:.3f}", row.value);
    row.queries = static_cast<int64_t>(prompts.size());
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
  std::vector<ProvenanceRow> rows;
  auto suspect = top1(s.suspect, windows);
  std::vector<torch::Tensor> cand, refs;
  for (auto& c : s.candidates) cand.push_back(top1(c, windows));
  for (auto& r : s.references) refs.push_back(top1(r, windows));
  const int64_t tokens = windows.numel();
  for (size_t c = 0; c < s.candidates.size(); ++c) {
    ProvenanceRow row;
    row.candidate = s.candidates[c].name;
    row.method = "logprobs";
    row.queries = tokens;
    auto mine = agreement(suspect, cand[c]);
    row.value = mean(mine);
    // Controls: the references, else the other candidates.
    std::vector<std::pair<std::string, const torch::Tensor*>> controls;
    for (size_t r = 0; r < refs.size(); ++r) controls.push_back({s.references[r].name, &refs[r]});
    if (controls.empty())
      for (size_t o = 0; o < cand.size(); ++o)
        if (o != c) controls.push_back({s.candidates[o].name, &cand[o]});
    if (controls.empty()) {
      row.applies = false;
      row.note = "no reference to compare with (--reference)";
      rows.push_back(row);
      continue;
    }
    double worst = 0;
    std::string against;
    for (size_t k = 0; k < controls.size(); ++k) {
      auto theirs = agreement(*controls[k].second, cand[c]);
      std::vector<double> d(mine.size());
      for (size_t w = 0; w < d.size(); ++w) d[w] = mine[w] - theirs[w];
      worst = std::max(worst, sign_flip_p(d, q.permutations, q.seed + k));
      against += fmt::format("{}{} {:.3f}", against.empty() ? "" : ", ", controls[k].first, mean(theirs));
    }
    row.p_value = worst;
    row.log10_p = std::log10(worst);
    row.statistic = fmt::format("top-1 agreement {:.3f}", row.value);
    row.note = "against " + against;
    rows.push_back(row);
  }
  return rows;
}

}  // namespace lineage::protect::provenance
