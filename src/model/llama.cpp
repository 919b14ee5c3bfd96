// Llama-family decoder forward pass. Architecture as in Touvron et al. (2023) "LLaMA"; GQA from
// Ainslie et al. (2023); rotate-half RoPE layout as Hugging Face transformers writes it.
#include "lineage/model/llama.h"

#include <algorithm>
#include <cmath>

#include "lineage/core/error.h"

namespace lineage::model {

namespace F = torch::nn::functional;

namespace {
// Norms and softmaxes run in float32 whatever the activation dtype, as the reference
// implementations do — in float64 when the model is float64 (the finite-difference tests need
// its digits).
torch::Tensor at_least_f32(const torch::Tensor& x) {
  return x.scalar_type() == torch::kDouble ? x : x.to(torch::kFloat32);
}

thread_local ActivationObserver* t_observer = nullptr;
}  // namespace

ObserveActivations::ObserveActivations(ActivationObserver* observer) : previous_(t_observer) { t_observer = observer; }
ObserveActivations::~ObserveActivations() { t_observer = previous_; }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto xf = at_least_f32(x);
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return y.to(x.scalar_type()) * weight;
}

AttentionImpl::AttentionImpl(const ModelConfig& c)
    : n_heads(c.n_heads), n_kv_heads(c.n_kv_heads), head_dim(c.head_dim()) {
  using torch::nn::LinearOptions;
  wq = register_module("wq", torch::nn::Linear(LinearOptions(c.dim, c.dim).bias(c.qkv_bias)));
  wk = register_module("wk", torch::nn::Linear(LinearOptions(c.dim, c.kv_dim()).bias(c.qkv_bias)));
  wv = register_module("wv", torch::nn::Linear(LinearOptions(c.dim, c.kv_dim()).bias(c.qkv_bias)));
  wo = register_module("wo", torch::nn::Linear(LinearOptions(c.dim, c.dim).bias(false)));
}

namespace {

// x (B, H, T, hd): pairs (i, i + hd/2) rotate by the angle of position t and frequency i.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  auto halves = x.chunk(2, -1);
  auto rotated = torch::cat({-halves[1], halves[0]}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, KVCache* cache, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = wq(x).view({B, T, n_heads, head_dim}).transpose(1, 2);     // (B, H, T, hd)
  auto k = wk(x).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);  // (B, KV, T, hd)
  auto v = wv(x).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);  // (B, KV, T, hd)
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);

  int64_t past = 0;
  if (cache) {
    past = cache->length;
    cache->k[layer].narrow(2, past, T).copy_(k);
    cache->v[layer].narrow(2, past, T).copy_(v);
    k = cache->k[layer].narrow(2, 0, past + T);  // (B, KV, S, hd)
    v = cache->v[layer].narrow(2, 0, past + T);
  }
  const int64_t S = k.size(2);
  const int64_t G = n_heads / n_kv_heads;  // query heads per KV head
  torch::Tensor out;                        // (B, H, T, hd)
  if (T == 1) {
    // Decoding: the G query heads that share a KV head are stacked as G rows against it, so the
    // cache is not copied per head at every step. (Measured: for prefill, the repeat path below
    // is faster on CPU, and a single query needs no mask.)
    auto qg = q.reshape({B, n_kv_heads, G, head_dim});                                       // (B, KV, G, hd)
    auto scores = torch::matmul(qg, k.transpose(-2, -1)) / std::sqrt(double(head_dim));  // (B, KV, G, S)
    auto probs = torch::softmax(at_least_f32(scores), -1).to(q.scalar_type());
    out = torch::matmul(probs, v).view({B, n_heads, 1, head_dim});
  } else {
    if (G > 1) {
      k = k.repeat_interleave(G, /*dim=*/1);  // (B, H, S, hd)
      v = v.repeat_interleave(G, /*dim=*/1);
    }
    auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(head_dim));  // (B, H, T, S)
    // Query i sits at absolute position past + i and sees keys 0..past + i.
    auto opts = torch::TensorOptions().device(x.device()).dtype(torch::kLong);
    auto qpos = torch::arange(past, past + T, opts).unsqueeze(1);  // (T, 1)
    auto kpos = torch::arange(0, S, opts).unsqueeze(0);            // (1, S)
    scores = scores.masked_fill(kpos > qpos, -std::numeric_limits<float>::infinity());
    auto probs = torch::softmax(at_least_f32(scores), -1).to(q.scalar_type());
    out = torch::matmul(probs, v);
  }
  if (t_observer) t_observer->heads(layer, out);
  return wo(out.transpose(1, 2).reshape({B, T, n_heads * head_dim}));
}

FeedForwardImpl::FeedForwardImpl(const ModelConfig& c) {
  using torch::nn::LinearOptions;
  w1 = register_module("w1", torch::nn::Linear(LinearOptions(c.dim, c.hidden_dim).bias(false)));
  w2 = register_module("w2", torch::nn::Linear(LinearOptions(c.hidden_dim, c.dim).bias(false)));
  w3 = register_module("w3", torch::nn::Linear(LinearOptions(c.dim, c.hidden_dim).bias(false)));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return w2(F::silu(w1(x)) * w3(x));
}

BlockImpl::BlockImpl(const ModelConfig& c) {
  attention_norm = register_module("attention_norm", RMSNorm(c.dim, c.norm_eps));
  attention = register_module("attention", Attention(c));
  ffn_norm = register_module("ffn_norm", RMSNorm(c.dim, c.norm_eps));
  feed_forward = register_module("feed_forward", FeedForward(c));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin, KVCache* cache, int64_t layer) {
  if (ActivationObserver* o = t_observer) {  // the same computation, with its activations shown
    auto a = attention_norm(x);
    o->normed(layer, 0, a);
    auto h = x + attention(a, cos, sin, cache, layer);
    auto f = ffn_norm(h);
    o->normed(layer, 1, f);
    auto inner = F::silu(feed_forward->w1(f)) * feed_forward->w3(f);
    o->mlp(layer, inner);
    auto out = h + feed_forward->w2(inner);
    o->block(layer, x, out);
    return out;
  }
  auto h = x + attention(attention_norm(x), cos, sin, cache, layer);
  return h + feed_forward(ffn_norm(h));
}

LlamaImpl::LlamaImpl(const ModelConfig& config) : config_(config) {
  config_.validate("model config");
  tok_embeddings_ = register_module("tok_embeddings",
                                    torch::nn::Embedding(config_.vocab_size, config_.dim));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.n_layers; ++i) layers_->push_back(Block(config_));
  norm_ = register_module("norm", RMSNorm(config_.dim, config_.norm_eps));
  if (!config_.tie_embeddings) {
    output_ = register_module(
        "output",
        torch::nn::Linear(torch::nn::LinearOptions(config_.dim, config_.vocab_size).bias(false)));
  }
  init_weights();
}

void LlamaImpl::ensure_rope(int64_t positions, torch::Device device) {
  std::lock_guard lock(*rope_mu_);
  const int64_t have = rope_cos_.defined() ? rope_cos_.size(0) : 0;
  if (have >= positions && rope_cos_.device() == device) return;
  if (have < positions) {
    // Rotary tables in float64, stored as float32: angle(t, i) = t / theta^(2i / head_dim).
    const int64_t rows = std::min(config_.max_seq_len, std::max({positions, 2 * have, int64_t{1024}}));
    const int64_t hd = config_.head_dim();
    auto i = torch::arange(0, hd / 2, torch::kFloat64);
    auto inv_freq = torch::pow(config_.rope_theta, -2.0 * i / double(hd));  // (hd/2)
    auto angles = torch::outer(torch::arange(0, rows, torch::kFloat64), inv_freq);  // (rows, hd/2)
    rope_cos_ = torch::cat({angles, angles}, -1).cos().to(torch::kFloat32);
    rope_sin_ = torch::cat({angles, angles}, -1).sin().to(torch::kFloat32);
  }
  rope_cos_ = rope_cos_.to(device);
  rope_sin_ = rope_sin_.to(device);
}

void LlamaImpl::init_weights(double std) {
  // GPT-2's scheme (Radford et al. 2019), as HF's initializer_range=0.02: every matrix N(0, std),
  // the projections that write into the residual stream (wo, w2) scaled by 1/sqrt(2 * n_layers),
  // biases zero, norms one. libtorch's defaults give N(0, 1) embeddings, and tied to the output
  // those make logits of size ~sqrt(dim).
  torch::NoGradGuard no_grad;
  const double residual_std = std / std::sqrt(2.0 * config_.n_layers);
  for (auto& p : named_parameters(/*recurse=*/true)) {
    const std::string& name = p.key();
    if (name.find("norm") != std::string::npos) p.value().fill_(1.0);
    else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.value().zero_();
    else if (name.find(".wo.") != std::string::npos || name.find(".w2.") != std::string::npos) p.value().normal_(0.0, residual_std);
    else p.value().normal_(0.0, std);
  }
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& tokens, KVCache* cache) {
  auto h = hidden(tokens, cache);  // (B, T, dim)
  if (output_) return output_(h);  // (B, T, V)
  return torch::matmul(h, tok_embeddings_->weight.t());
}

int64_t logit_chunk_rows(int64_t rows, int64_t vocab) {
  constexpr int64_t kWhole = int64_t{256} << 20, kChunk = int64_t{128} << 20;  // bytes of float32 logits
  if (rows * vocab * 4 <= kWhole) return 0;
  return std::max<int64_t>(64, kChunk / (vocab * 4));
}

torch::Tensor LlamaImpl::head_weight() const { return output_ ? output_->weight : tok_embeddings_->weight; }

torch::Tensor LlamaImpl::hidden(const torch::Tensor& tokens, KVCache* cache) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be (B, T), got ", tokens.sizes());
  const int64_t T = tokens.size(1);
  const int64_t start = cache ? cache->length : 0;
  if (start + T > config_.max_seq_len)
    fail("sequence of {} positions exceeds the model's context length {}", start + T,
         config_.max_seq_len);
  if (cache && start + T > cache->capacity())
    fail("sequence of {} positions exceeds the KV cache capacity {}", start + T, cache->capacity());
  auto h = tok_embeddings_(tokens);  // (B, T, dim)
  ensure_rope(start + T, h.device());
  auto cos = rope_cos_.narrow(0, start, T).to(h.scalar_type());  // (T, hd)
  auto sin = rope_sin_.narrow(0, start, T).to(h.scalar_type());
  for (size_t l = 0; l < layers_->size(); ++l)
    h = layers_->ptr<BlockImpl>(l)->forward(h, cos, sin, cache, static_cast<int64_t>(l));
  if (cache) cache->length += T;
  return norm_(h);
}

torch::Tensor LlamaImpl::decode_slots(const torch::Tensor& tokens, const std::vector<KVCache*>& caches) {
  TORCH_CHECK(tokens.dim() == 1, "tokens must be (N), got ", tokens.sizes());
  const int64_t N = tokens.size(0);
  if (N != static_cast<int64_t>(caches.size())) fail("decode_slots: {} tokens for {} caches", N, caches.size());
  for (auto* c : caches) {
    if (c->k.empty() || c->k[0].size(0) != 1) fail("decode_slots needs single-sequence caches");
    if (c->length + 1 > c->capacity()) fail("sequence of {} positions exceeds the KV cache capacity {}", c->length + 1, c->capacity());
  }
  auto h = tok_embeddings_(tokens).unsqueeze(1);  // (N, 1, dim)
  std::vector<int64_t> pos(N);
  for (int64_t i = 0; i < N; ++i) pos[i] = caches[i]->length;
  ensure_rope(*std::max_element(pos.begin(), pos.end()) + 1, h.device());
  auto pos_t = torch::tensor(pos, torch::kLong).to(rope_cos_.device());
  auto cos = rope_cos_.index_select(0, pos_t).to(h.scalar_type()).view({N, 1, 1, -1});  // (N, 1, 1, hd)
  auto sin = rope_sin_.index_select(0, pos_t).to(h.scalar_type()).view({N, 1, 1, -1});
  for (size_t l = 0; l < layers_->size(); ++l) {
    auto block = layers_->ptr<BlockImpl>(l);
    auto& att = *block->attention;
    const int64_t H = att.n_heads, KV = att.n_kv_heads, hd = att.head_dim, G = H / KV;
    auto x = block->attention_norm(h);
    auto q = apply_rope(att.wq(x).view({N, 1, H, hd}).transpose(1, 2), cos, sin);   // (N, H, 1, hd)
    auto k = apply_rope(att.wk(x).view({N, 1, KV, hd}).transpose(1, 2), cos, sin);  // (N, KV, 1, hd)
    auto v = att.wv(x).view({N, 1, KV, hd}).transpose(1, 2);
    std::vector<torch::Tensor> outs;
    outs.reserve(N);
    for (int64_t i = 0; i < N; ++i) {
      auto& c = *caches[i];
      c.k[l].narrow(2, pos[i], 1).copy_(k.narrow(0, i, 1));
      c.v[l].narrow(2, pos[i], 1).copy_(v.narrow(0, i, 1));
      auto ck = c.k[l].narrow(2, 0, pos[i] + 1);  // (1, KV, S, hd)
      auto cv = c.v[l].narrow(2, 0, pos[i] + 1);
      auto qg = q.narrow(0, i, 1).reshape({1, KV, G, hd});
      auto scores = torch::matmul(qg, ck.transpose(-2, -1)) / std::sqrt(double(hd));  // (1, KV, G, S)
      auto probs = torch::softmax(at_least_f32(scores), -1).to(q.scalar_type());
      outs.push_back(torch::matmul(probs, cv).reshape({1, 1, H * hd}));
    }
    h = h + att.wo(torch::cat(outs, 0));
    h = h + block->feed_forward(block->ffn_norm(h));
  }
  for (auto* c : caches) c->length += 1;
  h = norm_(h).squeeze(1);  // (N, dim)
  if (output_) return output_(h);
  return torch::matmul(h, tok_embeddings_->weight.t());
}

KVCache LlamaImpl::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  auto opts = torch::TensorOptions().device(device()).dtype(dtype());
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    cache.k.push_back(torch::zeros({batch, config_.n_kv_heads, capacity, config_.head_dim()}, opts));
    cache.v.push_back(torch::zeros({batch, config_.n_kv_heads, capacity, config_.head_dim()}, opts));
  }
  return cache;
}

std::map<std::string, torch::Tensor> LlamaImpl::weights() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  return out;
}

void LlamaImpl::load_weights(const std::map<std::string, torch::Tensor>& w,
                             const std::string& source) {
  torch::NoGradGuard no_grad;
  auto params = named_parameters(/*recurse=*/true);
  for (const auto& [name, t] : w)
    if (!params.contains(name)) fail("'{}': unexpected tensor '{}' for this model", source, name);
  for (auto& p : params) {
    auto it = w.find(p.key());
    if (it == w.end()) fail("'{}': tensor '{}' is missing", source, p.key());
    if (it->second.sizes() != p.value().sizes())
      fail("'{}': tensor '{}' has shape {}, expected {}", source, p.key(),
           fmt::join(it->second.sizes(), "x"), fmt::join(p.value().sizes(), "x"));
    p.value().copy_(it->second);
  }
}

torch::Device LlamaImpl::device() const { return tok_embeddings_->weight.device(); }
torch::Dtype LlamaImpl::dtype() const { return tok_embeddings_->weight.scalar_type(); }

std::map<std::string, std::vector<int64_t>> expected_shapes(const ModelConfig& c) {
  std::map<std::string, std::vector<int64_t>> s;
  s["tok_embeddings.weight"] = {c.vocab_size, c.dim};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto p = fmt::format("layers.{}.", l);
    s[p + "attention_norm.weight"] = {c.dim};
    s[p + "attention.wq.weight"] = {c.dim, c.dim};
    s[p + "attention.wk.weight"] = {c.kv_dim(), c.dim};
    s[p + "attention.wv.weight"] = {c.kv_dim(), c.dim};
    s[p + "attention.wo.weight"] = {c.dim, c.dim};
    if (c.qkv_bias) {
      s[p + "attention.wq.bias"] = {c.dim};
      s[p + "attention.wk.bias"] = {c.kv_dim()};
      s[p + "attention.wv.bias"] = {c.kv_dim()};
    }
    s[p + "ffn_norm.weight"] = {c.dim};
    s[p + "feed_forward.w1.weight"] = {c.hidden_dim, c.dim};
    s[p + "feed_forward.w2.weight"] = {c.dim, c.hidden_dim};
    s[p + "feed_forward.w3.weight"] = {c.hidden_dim, c.dim};
  }
  s["norm.weight"] = {c.dim};
  if (!c.tie_embeddings) s["output.weight"] = {c.vocab_size, c.dim};
  return s;
}

}  // namespace lineage::model
