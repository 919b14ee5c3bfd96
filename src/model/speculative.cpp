// Speculative decoding: draft, verify in one target pass, accept or resample. See
// include/lineage/model/speculative.h.
#include "lineage/model/speculative.h"

#include <algorithm>
#include <memory>

#include "lineage/core/error.h"
#include "lineage/model/cpu_decoder.h"
#include "lineage/model/sampler.h"

namespace lineage::model {

IncrementalDecoder::IncrementalDecoder(Llama& m, int64_t capacity) : model_(m), capacity_(capacity) {
  if (m->device().is_cpu() && m->dtype() == torch::kFloat32)
    cpu_ = std::make_unique<CpuDecoder>(m, capacity);
  else
    cache_ = m->make_cache(1, capacity);
}

IncrementalDecoder::~IncrementalDecoder() = default;
IncrementalDecoder::IncrementalDecoder(IncrementalDecoder&&) noexcept = default;

int64_t IncrementalDecoder::length() const { return cpu_ ? cpu_->length() : cache_.length; }

void IncrementalDecoder::rewind(int64_t n) {
  if (n >= length()) return;
  if (cpu_) cpu_->rewind(n);
  else cache_.length = n;
}

IncrementalDecoder IncrementalDecoder::copy() const {
  KVCache cache = cache_;
  for (auto& t : cache.k) t = t.clone();
  for (auto& t : cache.v) t = t.clone();
  return IncrementalDecoder(model_, capacity_, cpu_ ? std::make_unique<CpuDecoder>(*cpu_) : nullptr, std::move(cache));
}

IncrementalDecoder::IncrementalDecoder(Llama model, int64_t capacity, std::unique_ptr<CpuDecoder> cpu, KVCache cache)
    : model_(std::move(model)), capacity_(capacity), cpu_(std::move(cpu)), cache_(std::move(cache)) {}

torch::Tensor IncrementalDecoder::step(std::span<IncrementalDecoder* const> seqs, std::span<const int32_t> tokens,
                                       CpuDecoderBatch& batch) {
  const int64_t n = static_cast<int64_t>(seqs.size());
  bool cpu = true;
  for (auto* d : seqs) cpu = cpu && d->cpu_;
  if (cpu) {
    std::vector<CpuDecoder*> decoders;
    for (auto* d : seqs) decoders.push_back(d->cpu_.get());
    auto logits = batch.step(decoders, tokens);
    return torch::from_blob(const_cast<float*>(logits.data()), {n, static_cast<int64_t>(logits.size()) / n}, torch::kFloat32).clone();
  }
  torch::NoGradGuard no_grad;
  std::vector<KVCache*> caches;
  for (auto* d : seqs) {
    if (d->cpu_) fail("IncrementalDecoder::step: CPU decoders and libtorch caches in one step");
    caches.push_back(&d->cache_);
  }
  auto& m = seqs[0]->model_;
  auto ids = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), torch::kLong).to(m->device());
  return m->decode_slots(ids, caches).to(torch::kCPU, torch::kFloat32).contiguous();
}

std::vector<float> IncrementalDecoder::feed(std::span<const int32_t> tokens, bool all) {
  if (cpu_) {
    auto l = all ? cpu_->feed_all(tokens) : cpu_->feed(tokens);
    return {l.begin(), l.end()};
  }
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(tokens.size());
  auto t = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), torch::kLong).view({1, n});
  auto logits = model_->forward(t.to(model_->device()), &cache_)[0];  // (n, V)
  if (!all) logits = logits.narrow(0, n - 1, 1);
  logits = logits.to(torch::kCPU, torch::kFloat32).contiguous();
  return {logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel()};
}

DraftVerdict judge_drafts(Sampler& sampler, const std::vector<std::vector<double>>& p,
                          const std::vector<std::vector<double>>& q, std::span<const int32_t> drafts) {
  DraftVerdict v;
  const int64_t k = static_cast<int64_t>(drafts.size());
  if (static_cast<int64_t>(q.size()) != k || static_cast<int64_t>(p.size()) < k)
    fail("internal: {} drafts with {} draft and {} target distributions", k, q.size(), p.size());
  for (; v.kept < k; ++v.kept) {
    const auto& pa = p[v.kept];
    const auto& qa = q[v.kept];
    const int32_t x = drafts[v.kept];
    if (sampler.uniform() * qa[x] < pa[x]) continue;  // kept with probability min(1, p/q)
    v.residual.assign(pa.size(), 0.0);
    double mass = 0;
    for (size_t i = 0; i < pa.size(); ++i) mass += v.residual[i] = std::max(0.0, pa[i] - qa[i]);
    if (!(mass > 0)) v.residual = pa;  // p = q there: the rejection had probability 0
    break;
  }
  return v;
}

std::vector<int32_t> generate_speculative(Llama& target, Llama& draft, const std::vector<int32_t>& prompt,
                                          const GenerateOptions& options, int draft_tokens, SpeculativeStats* stats,
                                          const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) fail("generation needs at least one prompt token");
  if (draft_tokens < 1) fail("--draft-tokens must be >= 1, got {}", draft_tokens);
  const auto& tc = target->config();
  const auto& dc = draft->config();
  if (dc.vocab_size != tc.vocab_size)
    fail("the draft model has a vocabulary of {} tokens, the target {}: a draft must use the target's tokenizer",
         dc.vocab_size, tc.vocab_size);
  const int64_t P = static_cast<int64_t>(prompt.size()), V = tc.vocab_size;
  if (P > tc.max_seq_len) fail("prompt of {} tokens does not fit the context length {}", P, tc.max_seq_len);
  for (int32_t id : prompt)
    if (id < 0 || id >= V) fail("prompt token id {} is outside the vocabulary of {}", id, V);
  torch::NoGradGuard no_grad;
  target->eval();
  draft->eval();
  const int64_t room = P + std::max(options.max_tokens, 0) + draft_tokens;
  IncrementalDecoder t(target, std::min<int64_t>(tc.max_seq_len, room)), d(draft, std::min<int64_t>(dc.max_seq_len, room));
  Sampler sampler(options.sampling);
  SpeculativeStats local;
  SpeculativeStats& st = stats ? *stats : local;

  std::vector<int32_t> ctx(prompt), out, ext;
  if (P > 1) {  // both hold every token but the last, which each round feeds
    std::span<const int32_t> head(prompt.data(), static_cast<size_t>(P - 1));
    t.feed(head, false);
    if (P - 1 <= d.capacity()) d.feed(head, false);
  }
  while (static_cast<int>(out.size()) < options.max_tokens) {
    const int64_t n = static_cast<int64_t>(ctx.size());
    if (n > t.capacity()) break;  // the context is full: the last token cannot be fed back
    const int64_t remaining = options.max_tokens - static_cast<int64_t>(out.size());
    // Draft tokens this round: within both contexts, and no more than can still be emitted.
    int64_t k = std::min<int64_t>({draft_tokens, t.capacity() - n, remaining - 1, d.capacity() - n + 1});
    k = std::max<int64_t>(k, 0);

    std::vector<int32_t> drafts;
    std::vector<std::vector<double>> q;
    if (k > 0) {
      // The draft holds ctx[0, n - 1): rejected tokens dropped, a last kept draft token it never
      // fed (all k were kept) fed now.
      if (d.length() > n - 1) d.rewind(n - 1);
      if (d.length() < n - 1)
        d.feed(std::span<const int32_t>(ctx.data() + d.length(), static_cast<size_t>(n - 1 - d.length())), false);
      auto logits = d.feed(std::span<const int32_t>(&ctx[n - 1], 1), false);
      for (int64_t i = 0; i < k; ++i) {
        q.push_back(sampler.distribution(logits));
        drafts.push_back(sampler.draw(q.back()));
        if (i + 1 < k) logits = d.feed(std::span<const int32_t>(&drafts.back(), 1), false);
      }
    }
    // One target pass over the last token and the drafts: k + 1 next-token distributions.
    std::vector<int32_t> verify{ctx[n - 1]};
    verify.insert(verify.end(), drafts.begin(), drafts.end());
    auto rows = t.feed(verify, true);
    ext = ctx;
    ext.insert(ext.end(), drafts.begin(), drafts.end());
    std::vector<std::vector<double>> p;
    for (int64_t i = 0; i <= k; ++i) {
      std::span<float> row(rows.data() + i * V, static_cast<size_t>(V));
      if (options.logits_processor) options.logits_processor(std::span<const int32_t>(ext.data(), n + i), row);
      p.push_back(sampler.distribution(row));
    }
    ++st.verifications;
    st.drafted += k;

    auto verdict = judge_drafts(sampler, p, q, drafts);
    const int64_t a = verdict.kept;
    std::vector<int32_t> take(drafts.begin(), drafts.begin() + a);
    take.push_back(verdict.residual.empty() ? sampler.draw(p[k]) : sampler.draw(verdict.residual));
    st.accepted += a;
    t.rewind(n + a);  // it holds ctx and the kept drafts; the new last token is fed next round

    bool stop = false;
    for (int32_t id : take) {
      if (std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end()) {
        stop = true;
        break;
      }
      out.push_back(id);
      ctx.push_back(id);
      ++st.emitted;
      if ((on_token && !on_token(id)) || static_cast<int>(out.size()) >= options.max_tokens) {
        stop = true;
        break;
      }
    }
    if (stop) break;
  }
  return out;
}

}  // namespace lineage::model
