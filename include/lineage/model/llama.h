// A Llama-family decoder on libtorch: token embedding, pre-norm blocks of grouped-query attention
// with rotary position embeddings and a SwiGLU MLP, final RMSNorm, output projection (optionally
// tied to the embedding). Covers Llama 1-3 and, with QKV bias, Qwen2.
//
// Weights carry Meta's llama names (tok_embeddings.weight, layers.N.attention.wq.weight, ...);
// io/weight_names.h maps every file format onto them. Rotary embeddings use the rotate-half
// layout of Hugging Face transformers: readers of interleaved formats (llama2.c, GGUF) permute
// the rows of wq/wk when loading and back when writing.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <mutex>

#include <map>
#include <string>
#include <vector>

#include "lineage/model/config.h"

namespace lineage::model {

// Per-layer keys and values of earlier positions, for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k;  // per layer (B, n_kv_heads, capacity, head_dim)
  std::vector<torch::Tensor> v;  // per layer (B, n_kv_heads, capacity, head_dim)
  int64_t length = 0;            // positions filled
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
};

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim) -> (..., dim)
  torch::Tensor weight;                           // (dim)
  double eps;
};
TORCH_MODULE(RMSNorm);

struct AttentionImpl : torch::nn::Module {
  explicit AttentionImpl(const ModelConfig& c);
  // x (B, T, dim); cos/sin (T, head_dim); returns (B, T, dim). With a cache, keys and values of
  // this call are stored at positions [cache.length, cache.length + T) of layer `layer`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        KVCache* cache, int64_t layer);
  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
  int64_t n_heads, n_kv_heads, head_dim;
};
TORCH_MODULE(Attention);

struct FeedForwardImpl : torch::nn::Module {
  explicit FeedForwardImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // w2(silu(w1 x) * w3 x)
  torch::nn::Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(FeedForward);

// Watches the activations of the forward passes run on this thread while an ObserveActivations
// is in scope (width pruning's importance, distill/prune.h). Not called by decode_slots.
struct ActivationObserver {
  virtual ~ActivationObserver() = default;
  // RMSNorm outputs (B, T, dim): which 0 the block's attention_norm, 1 its ffn_norm.
  virtual void normed(int64_t /*layer*/, int /*which*/, const torch::Tensor& /*y*/) {}
  // Each query head's attention output before wo: (B, n_heads, T, head_dim).
  virtual void heads(int64_t /*layer*/, const torch::Tensor& /*out*/) {}
  // The SwiGLU inner activation silu(w1 x) * w3 x before w2: (B, T, hidden_dim).
  virtual void mlp(int64_t /*layer*/, const torch::Tensor& /*inner*/) {}
  // A block's input and output (B, T, dim).
  virtual void block(int64_t /*layer*/, const torch::Tensor& /*in*/, const torch::Tensor& /*out*/) {}
};
class ObserveActivations {
 public:
  explicit ObserveActivations(ActivationObserver* observer);
  ~ObserveActivations();
  ObserveActivations(const ObserveActivations&) = delete;
  ObserveActivations& operator=(const ObserveActivations&) = delete;

 private:
  ActivationObserver* previous_;
};

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        KVCache* cache, int64_t layer);
  RMSNorm attention_norm{nullptr}, ffn_norm{nullptr};
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};
};
TORCH_MODULE(Block);

class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(const ModelConfig& config);

  // tokens (B, T) int64 -> logits (B, T, vocab). Without a cache, positions start at 0 and
  // attention is causal over the T tokens; with one, they start at cache->length and attend to
  // everything cached before them, and the cache grows by T.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr);
  // forward() without the output projection: the final-normed hidden states (B, T, dim), to be
  // multiplied by head_weight() (vocab, dim) — by chunks of rows, where (B, T, vocab) would not
  // fit (distill/chunked_loss.h).
  torch::Tensor hidden(const torch::Tensor& tokens, KVCache* cache = nullptr);
  // The output projection (vocab, dim): `output.weight`, or the embedding when tied.
  torch::Tensor head_weight() const;

  // One decoding step for N independent sequences at once (continuous batching, as llama.cpp's
  // server slots): tokens (N) int64, caches[i] the single-sequence cache of sequence i, each at its
  // own length. The matrix products run batched over the N rows; attention runs per sequence
  // against its own cache. Returns logits (N, vocab); every cache grows by one position.
  torch::Tensor decode_slots(const torch::Tensor& tokens, const std::vector<KVCache*>& caches);

  // Fresh weights: N(0, std), residual projections scaled down, norms 1, biases 0 (from the
  // current torch seed).
  void init_weights(double std = 0.02);

  // An empty cache for `batch` sequences of up to `capacity` positions, on the model's device.
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // Weights by their own names (tied models list tok_embeddings.weight only).
  std::map<std::string, torch::Tensor> weights() const;
  // Copies `w` into the model. Every weight must be present with the right shape; names the
  // first missing, unexpected or mis-shaped tensor, using `source` in the message.
  void load_weights(const std::map<std::string, torch::Tensor>& w, const std::string& source);

  const ModelConfig& config() const { return config_; }
  torch::Device device() const;
  torch::Dtype dtype() const;

  // What a consumer derives from the weights and keeps for the next call (the CPU decoder's
  // binary16 copies, model/cpu_decoder.h), dropped with the model. The model never reads it; the
  // consumer checks it still matches the weights, and holds derived_mutex() around it.
  std::shared_ptr<void>& derived() const { return derived_; }
  std::mutex& derived_mutex() const { return *derived_mu_; }

 private:
  ModelConfig config_;
  torch::nn::Embedding tok_embeddings_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  RMSNorm norm_{nullptr};
  torch::nn::Linear output_{nullptr};  // null when tied
  // Rotary tables (rows, head_dim) float32 for positions 0..rows-1, grown on demand up to the
  // context length and kept on the device last asked for: a file's context_length alone never
  // decides an allocation.
  torch::Tensor rope_cos_, rope_sin_;
  std::shared_ptr<std::mutex> rope_mu_ = std::make_shared<std::mutex>();
  mutable std::shared_ptr<void> derived_;
  std::shared_ptr<std::mutex> derived_mu_ = std::make_shared<std::mutex>();
  void ensure_rope(int64_t positions, torch::Device device);
};
TORCH_MODULE(Llama);

// Rows of logits to make at a time for `rows` positions over `vocab` tokens: 0 (all at once)
// while the (rows, vocab) float32 logits stay under 256 MiB, else as many rows as make 128 MiB
// (at least 64; 261 rows at V = 128,256: measured in bench_chunked_kd, 22% of the unchunked peak at 1.5x its speed). Training, evaluation and teachers chunk by it (distill/chunked_loss.h).
int64_t logit_chunk_rows(int64_t rows, int64_t vocab);

// Expected shape of every weight of a config, by own name (the reference for format readers).
std::map<std::string, std::vector<int64_t>> expected_shapes(const ModelConfig& c);

}  // namespace lineage::model
