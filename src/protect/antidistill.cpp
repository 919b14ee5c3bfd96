// The proxy-gradient logit adjustment of antidistillation sampling and fingerprinting. See
// include/lineage/protect/antidistill.h.
#include "lineage/protect/antidistill.h"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <numeric>
#include <random>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/model/generate.h"
#include "lineage/protect/watermark.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::protect {

void validate(const AntidistillParams& p) {
  if (!std::isfinite(p.lambda)) fail("antidistillation lambda must be a finite number, got {}", p.lambda);
  if (!(p.epsilon > 0) || !std::isfinite(p.epsilon))
    fail("antidistillation epsilon (the finite-difference step) must be > 0, got {}", p.epsilon);
  if (p.rows < 1) fail("antidistillation rows (held-out windows per gradient) must be >= 1, got {}", p.rows);
  if (p.seq_len < 1) fail("antidistillation seq_len must be >= 1, got {}", p.seq_len);
  if (p.refresh_every < 0) fail("antidistillation refresh must be >= 0 requests (0: never), got {}", p.refresh_every);
}

torch::Tensor proxy_objective(model::Llama& net, const std::vector<std::vector<int32_t>>& windows,
                              const ProxyObjective& objective) {
  if (windows.empty()) fail("the proxy objective needs at least one window of held-out tokens");
  const int64_t R = static_cast<int64_t>(windows.size());
  int64_t L = 0;
  for (const auto& w : windows) L = std::max<int64_t>(L, static_cast<int64_t>(w.size()));
  if (L < 2) fail("the proxy objective needs windows of at least 2 tokens");
  const int64_t T = L - 1, V = net->config().vocab_size;
  // Right-padded: inputs and targets (R, T), valid (R, T) 1 where a target exists.
  std::vector<int64_t> in(R * T, 0), tgt(R * T, 0);
  std::vector<float> valid(R * T, 0);
  for (int64_t r = 0; r < R; ++r) {
    const auto& w = windows[r];
    for (int64_t t = 0; t + 1 < static_cast<int64_t>(w.size()); ++t) {
      if (w[t] < 0 || w[t] >= V || w[t + 1] < 0 || w[t + 1] >= V)
        fail("held-out token id outside the proxy's vocabulary of {}", V);
      in[r * T + t] = w[t];
      tgt[r * T + t] = w[t + 1];
      valid[r * T + t] = 1;
    }
  }
  const auto dev = net->device();
  auto inputs = torch::tensor(in, torch::kLong).view({R, T}).to(dev);
  auto logp = torch::log_softmax(net->forward(inputs), -1);  // (R, T, V)
  if (objective.kind == ProxyObjective::Kind::kHeldOutLoss) {
    auto mask = torch::tensor(valid).view({R, T}).to(dev, logp.scalar_type());
    auto targets = torch::tensor(tgt, torch::kLong).view({R, T, 1}).to(dev);
    auto nll = -logp.gather(-1, targets).squeeze(-1);  // (R, T)
    return (nll * mask).sum() / mask.sum();
  }
  if (!objective.green) fail("the green-mass objective needs a watermark key");
  const Watermark& wm = *objective.green;
  const int h = wm.params().context;
  // green (R, T, V): the key's green list after each position's context (its ids up to t).
  auto green = torch::zeros({R, T, V}, torch::kBool);
  auto* g = green.data_ptr<bool>();
  for (int64_t r = 0; r < R; ++r) {
    const auto& w = windows[r];
    for (int64_t t = 0; t + 1 < static_cast<int64_t>(w.size()); ++t) {
      if (t + 1 < h) {
        valid[r * T + t] = 0;  // fewer than h ids before: no green list (the watermark leaves it alone too)
        continue;
      }
      auto m = wm.green_mask(std::span<const int32_t>(w.data(), static_cast<size_t>(t + 1)), V);
      bool* row = g + (r * T + t) * V;
      bool any = false;
      for (int64_t v = 0; v < V; ++v) any |= (row[v] = m[v] != 0);
      if (!any) valid[r * T + t] = 0;  // an all-red list has no mass to raise
    }
  }
  auto mask = torch::tensor(valid).view({R, T}).to(dev, logp.scalar_type());
  if (mask.sum().item<double>() == 0) fail("no held-out position has the {} ids a green list needs", h);
  green = green.to(dev);
  auto log_mass = logp.masked_fill(green.logical_not(), -std::numeric_limits<double>::infinity()).logsumexp(-1);
  log_mass = log_mass.masked_fill(mask == 0, 0);  // (R, T); positions without a green list are not counted
  return (log_mass * mask).sum() / mask.sum();
}

std::vector<std::vector<int32_t>> token_windows(std::span<const int32_t> ids, int seq_len, const std::string& source) {
  if (seq_len < 1) fail("window length must be >= 1, got {}", seq_len);
  const size_t n = static_cast<size_t>(seq_len) + 1;
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i + n <= ids.size(); i += n) out.emplace_back(ids.begin() + i, ids.begin() + i + n);
  if (out.empty())
    fail("'{}' has {} tokens: fewer than one window of {} (pass more text, or a shorter window)", source, ids.size(), n);
  return out;
}

ProxyAdjuster::ProxyAdjuster(model::Llama proxy, std::vector<std::vector<int32_t>> data, ProxyObjective objective,
                             AntidistillParams params)
    : proxy_(std::move(proxy)), data_(std::move(data)), objective_(std::move(objective)), params_(params) {
  validate(params_);
  if (data_.empty()) fail("antidistillation needs held-out windows to estimate the proxy's gradient on");
  if (objective_.kind == ProxyObjective::Kind::kGreenMass && !objective_.green)
    fail("the fingerprint objective needs a watermark key");
  proxy_->eval();
  refresh();
}

int64_t ProxyAdjuster::vocab_size() const { return proxy_->config().vocab_size; }
int64_t ProxyAdjuster::context_length() const { return proxy_->config().max_seq_len; }

void ProxyAdjuster::refresh() {
  std::vector<size_t> order(data_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(params_.seed + draws_++);
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(std::min(order.size(), static_cast<size_t>(params_.rows)));
  std::vector<std::vector<int32_t>> windows;
  for (size_t i : order) windows.push_back(data_[i]);
  set_direction(windows);
  ++generation_;
}

void ProxyAdjuster::count_request() {
  ++requests_;
  if (params_.refresh_every > 0 && requests_ % params_.refresh_every == 0) refresh();
}

void ProxyAdjuster::set_direction(const std::vector<std::vector<int32_t>>& windows) {
  // g = ∇θ J, accumulated over chunks of windows weighted by their predicted positions.
  auto params = proxy_->named_parameters(/*recurse=*/true);
  for (auto& p : params) {
    p.value().set_requires_grad(true);
    if (p.value().grad().defined()) p.value().mutable_grad().zero_();
  }
  int64_t total = 0;
  for (const auto& w : windows) total += std::max<int64_t>(0, static_cast<int64_t>(w.size()) - 1);
  double value = 0;
  {
    torch::AutoGradMode grad_on(true);
    constexpr size_t kChunk = 8;
    for (size_t i = 0; i < windows.size(); i += kChunk) {
      std::vector<std::vector<int32_t>> chunk(windows.begin() + i, windows.begin() + std::min(windows.size(), i + kChunk));
      int64_t positions = 0;
      for (const auto& w : chunk) positions += std::max<int64_t>(0, static_cast<int64_t>(w.size()) - 1);
      auto j = proxy_objective(proxy_, chunk, objective_) * (static_cast<double>(positions) / static_cast<double>(total));
      j.backward();
      value += j.item<double>();
    }
  }
  objective_value_ = value;
  double sq = 0;
  for (auto& p : params) {
    if (!p.value().grad().defined()) continue;
    sq += p.value().grad().to(torch::kDouble).pow(2).sum().item<double>();
  }
  grad_norm_ = std::sqrt(sq);
  if (!(grad_norm_ > 0) || !std::isfinite(grad_norm_))
    fail("the proxy's gradient of its {} is {} on the held-out windows: no direction to steer by", objective_.name(),
         grad_norm_);
  // θ± = θ ± ε·g/‖g‖, as two models of the proxy's config, device and dtype.
  torch::NoGradGuard no_grad;
  const double step = params_.epsilon / grad_norm_;
  auto make = [&](double sign) {
    model::Llama m(proxy_->config());
    m->to(proxy_->device(), proxy_->dtype());
    auto dst = m->named_parameters(true);
    for (auto& p : params) {
      auto* d = dst.find(p.key());
      if (!d) fail("internal: the proxy copy has no parameter '{}'", p.key());
      if (p.value().grad().defined())
        d->copy_(p.value() + sign * step * p.value().grad());
      else
        d->copy_(p.value());
    }
    m->eval();
    return m;
  };
  plus_ = make(+1);
  minus_ = make(-1);
  for (auto& p : params) {
    p.value().mutable_grad() = torch::Tensor();
    p.value().set_requires_grad(false);
  }
}

torch::Tensor ProxyAdjuster::delta_rows(const torch::Tensor& plus_logits, const torch::Tensor& minus_logits) const {
  // (N, V) each; the log-softmax in float64 so the difference of two close numbers keeps its digits.
  auto lp = torch::log_softmax(plus_logits.to(torch::kCPU, torch::kDouble), -1);
  auto lm = torch::log_softmax(minus_logits.to(torch::kCPU, torch::kDouble), -1);
  return ((lp - lm) / (2 * params_.epsilon)).to(torch::kFloat32).contiguous();
}

void ProxyAdjuster::advance(Stream& s, std::span<const int32_t> context, int64_t capacity) {
  if (context.empty()) fail("antidistillation needs at least one token of context");
  const int64_t need = static_cast<int64_t>(context.size());
  if (need > context_length())
    fail("a context of {} tokens is longer than the proxy's {} positions", need, context_length());
  const bool usable = s.generation == generation_ && s.plus.capacity() >= need &&
                      s.plus.length == static_cast<int64_t>(s.fed.size());
  size_t common = 0;
  if (usable)
    common = static_cast<size_t>(
        std::mismatch(s.fed.begin(), s.fed.end(), context.begin(), context.end()).first - s.fed.begin());
  if (usable && common == context.size() && common == s.fed.size() && s.delta.defined()) return;
  // What the caches hold in common with `context` stays (a rejected speculative draft or a
  // shorter context rewinds them); at least the last token is fed again, for its Δ.
  size_t keep = usable ? std::min(common, context.size() - 1) : 0;
  if (!usable) {
    const int64_t cap = std::min(context_length(), std::max(capacity, need));
    s.plus = plus_->make_cache(1, cap);
    s.minus = minus_->make_cache(1, cap);
    s.generation = generation_;
    keep = 0;
  }
  s.plus.length = s.minus.length = static_cast<int64_t>(keep);
  s.fed.resize(keep);
  std::vector<int64_t> fresh(context.begin() + static_cast<std::ptrdiff_t>(s.fed.size()), context.end());
  torch::NoGradGuard no_grad;
  const auto dev = plus_->device();
  auto tokens = torch::tensor(fresh, torch::kLong).view({1, static_cast<int64_t>(fresh.size())}).to(dev);
  auto zp = plus_->forward(tokens, &s.plus).select(1, -1);    // (1, V)
  auto zm = minus_->forward(tokens, &s.minus).select(1, -1);  // (1, V)
  s.delta = delta_rows(zp, zm)[0];
  s.fed.assign(context.begin(), context.end());
}

void ProxyAdjuster::step(const std::vector<Stream*>& streams, const std::vector<int32_t>& ids) {
  if (streams.size() != ids.size()) fail("internal: {} streams for {} ids", streams.size(), ids.size());
  std::vector<Stream*> batch;
  std::vector<int64_t> batch_ids;
  for (size_t i = 0; i < streams.size(); ++i) {
    Stream& s = *streams[i];
    if (s.generation == generation_ && s.plus.length < s.plus.capacity() &&
        s.plus.length == static_cast<int64_t>(s.fed.size())) {
      batch.push_back(&s);
      batch_ids.push_back(ids[i]);
    } else {  // made with an older ĝ, or full: fed again from its whole context
      auto context = s.fed;
      context.push_back(ids[i]);
      advance(s, context, static_cast<int64_t>(context.size()) + 1);
    }
  }
  if (batch.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<model::KVCache*> cp, cm;
  for (auto* s : batch) {
    cp.push_back(&s->plus);
    cm.push_back(&s->minus);
  }
  auto tokens = torch::tensor(batch_ids, torch::kLong).to(plus_->device());
  auto d = delta_rows(plus_->decode_slots(tokens, cp), minus_->decode_slots(tokens, cm));  // (N, V)
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i]->delta = d[static_cast<int64_t>(i)];
    batch[i]->fed.push_back(static_cast<int32_t>(batch_ids[i]));
  }
}

torch::Tensor ProxyAdjuster::prompt_deltas(std::span<const int32_t> tokens) {
  if (tokens.empty()) return torch::zeros({0, vocab_size()}, torch::kFloat32);
  if (static_cast<int64_t>(tokens.size()) > context_length())
    fail("a text of {} tokens is longer than the proxy's {} positions", tokens.size(), context_length());
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  auto t = torch::tensor(ids, torch::kLong).view({1, static_cast<int64_t>(ids.size())}).to(plus_->device());
  return delta_rows(plus_->forward(t)[0], minus_->forward(t)[0]);  // (T, V)
}

void ProxyAdjuster::apply(const Stream& s, std::span<float> logits, double temperature) const {
  if (!s.delta.defined()) fail("internal: antidistillation applied before the stream was advanced");
  if (static_cast<int64_t>(logits.size()) != s.delta.numel())
    fail("the teacher's {} logits do not match the proxy's vocabulary of {}", logits.size(), s.delta.numel());
  const float scale = static_cast<float>(params_.lambda * (temperature > 0 ? temperature : 1.0));
  const float* d = s.delta.data_ptr<float>();
  for (size_t v = 0; v < logits.size(); ++v) logits[v] += scale * d[v];
}

void adjust_logits(const std::vector<std::shared_ptr<ProxyAdjuster>>& adjusters,
                   std::vector<ProxyAdjuster::Stream>& streams, const Watermark* watermark,
                   std::span<const int32_t> context, std::span<float> logits, double temperature, int64_t capacity) {
  if (streams.size() != adjusters.size()) fail("internal: {} streams for {} adjusters", streams.size(), adjusters.size());
  for (size_t a = 0; a < adjusters.size(); ++a) {
    adjusters[a]->advance(streams[a], context, capacity);
    adjusters[a]->apply(streams[a], logits, temperature);
  }
  if (watermark) watermark->bias(context, logits);
}

std::vector<std::vector<int32_t>> teacher_sample_windows(model::Llama& teacher, const text::Tokenizer& tok, int rows,
                                                         int seq_len, uint64_t seed) {
  if (tok.bos_id() < 0)
    fail("the teacher's vocabulary has no BOS token to start its own samples from: pass held-out text instead");
  std::vector<std::vector<int32_t>> out;
  for (int r = 0; r < rows; ++r) {
    model::GenerateOptions g;
    g.max_tokens = seq_len;
    g.sampling.temperature = 1.0f;
    g.sampling.seed = seed + static_cast<uint64_t>(r);
    std::vector<int32_t> w{tok.bos_id()};
    auto got = model::generate(teacher, w, g);
    w.insert(w.end(), got.begin(), got.end());
    if (w.size() >= 2) out.push_back(std::move(w));
  }
  if (out.empty()) fail("the teacher wrote no sample of 2 tokens or more");
  return out;
}

model::Llama load_proxy(const std::string& path, const text::Tokenizer& teacher_tokenizer, int64_t min_context,
                        torch::Device device, torch::Dtype dtype) {
  auto file = io::read_model(path);
  if (file.config.vocab_size != teacher_tokenizer.vocab_size())
    fail("proxy '{}' has a vocabulary of {} tokens, the teacher {}: the proxy must use the teacher's tokenizer", path,
         file.config.vocab_size, teacher_tokenizer.vocab_size());
  if (file.tokenizer && text::vocab_digest(file.tokenizer->vocab()) != text::vocab_digest(teacher_tokenizer.vocab()))
    fail("proxy '{}' carries a tokenizer that splits text differently from the teacher's: the proxy must use the "
         "teacher's tokenizer",
         path);
  if (file.config.max_seq_len < min_context)
    fail("proxy '{}' has a context of {} positions, shorter than the teacher's {}", path, file.config.max_seq_len,
         min_context);
  return io::make_model(file, device, dtype);
}

std::vector<std::vector<int32_t>> file_windows(const std::string& path, const text::Tokenizer& tok, int seq_len) {
  std::string text = read_file(path);
  auto ids = tok.encode(text, tok.vocab().add_bos);
  return token_windows(ids, seq_len, path);
}

std::vector<std::shared_ptr<ProxyAdjuster>> make_adjusters(const DeterrenceOptions& o, model::Llama& teacher,
                                                           const text::Tokenizer& tok, torch::Device device,
                                                           torch::Dtype dtype, bool quiet) {
  std::vector<std::shared_ptr<ProxyAdjuster>> out;
  if (!o.fingerprint_key.empty() && o.fingerprint_proxy.empty() && o.antidistill_proxy.empty())
    fail("--fingerprint-key needs --fingerprint-proxy PROXY (a model with the teacher's tokenizer)");
  if (o.fingerprint_key.empty() && !o.fingerprint_proxy.empty())
    fail("--fingerprint-proxy needs --fingerprint-key K (a key file made by lineage keygen)");
  const int64_t context = teacher->config().max_seq_len;
  const int seq_len = static_cast<int>(std::min<int64_t>(o.seq_len, context - 1));
  auto windows = [&](const std::string& path) {
    return path.empty() ? teacher_sample_windows(teacher, tok, o.rows, seq_len, o.seed + 1000003)
                        : file_windows(path, tok, seq_len);
  };
  auto params = [&](double lambda, double epsilon) {
    AntidistillParams p;
    p.lambda = lambda;
    p.epsilon = epsilon;
    p.rows = o.rows;
    p.seq_len = seq_len;
    p.refresh_every = o.refresh_every;
    p.seed = o.seed;
    validate(p);
    return p;
  };
  if (!o.antidistill_proxy.empty()) {
    auto p = params(o.antidistill_lambda, o.antidistill_epsilon);
    auto adj = std::make_shared<ProxyAdjuster>(load_proxy(o.antidistill_proxy, tok, context, device, dtype),
                                               windows(o.antidistill_data), ProxyObjective{}, p);
    if (!quiet)
      std::fprintf(stderr, "antidistillation on: proxy %s, lambda %g, epsilon %g, proxy loss %.4f on %s, |g| %.4g\n",
                   o.antidistill_proxy.c_str(), p.lambda, p.epsilon, adj->objective_value(),
                   o.antidistill_data.empty() ? "the teacher's own samples" : o.antidistill_data.c_str(),
                   adj->gradient_norm());
    out.push_back(std::move(adj));
  }
  if (!o.fingerprint_key.empty()) {
    auto p = params(o.fingerprint_lambda, o.fingerprint_epsilon);
    WatermarkParams wp{o.fingerprint_gamma, 0.0, o.fingerprint_context};
    validate(wp);
    auto wm = std::make_shared<const Watermark>(WatermarkKey::read(o.fingerprint_key), wp);
    const std::string& proxy = o.fingerprint_proxy.empty() ? o.antidistill_proxy : o.fingerprint_proxy;
    const std::string& data = o.fingerprint_data.empty() ? o.antidistill_data : o.fingerprint_data;
    auto adj = std::make_shared<ProxyAdjuster>(load_proxy(proxy, tok, context, device, dtype), windows(data),
                                               ProxyObjective{ProxyObjective::Kind::kGreenMass, wm}, p);
    if (!quiet)
      std::fprintf(stderr,
                   "fingerprint on: key %s, gamma %g, h %d, proxy %s, lambda %g, proxy log green mass %.4f, |g| %.4g\n",
                   wm->fingerprint().c_str(), wp.gamma, wp.context, proxy.c_str(), p.lambda, adj->objective_value(),
                   adj->gradient_norm());
    out.push_back(std::move(adj));
  }
  return out;
}

}  // namespace lineage::protect
