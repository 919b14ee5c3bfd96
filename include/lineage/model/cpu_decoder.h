// Decoding one sequence on the CPU as matrix-vector work, the way llama2.c's run.c and llama.cpp
// do it: weights as plain rows (binary16 when the model's values are all binary16, as a 16-bit
// checkpoint's are: half the bytes read per token), a KV cache of plain arrays, and per token one
// matrix-vector product per projection instead of libtorch's GEMM path, which packs the weight
// matrix for a one-row product and wakes its thread pool for every small op. A prompt goes through
// a GEMM (all its positions at once: matmul_nt below). Results equal LlamaImpl::forward's to
// float32 rounding (tested). Generation, serving and the teachers' text use it for float32 models
// on the CPU.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "lineage/model/llama.h"

namespace lineage::model {

// A weight as float32 rows: the model's own storage when it is float32 on the CPU (no copy). A
// matrix whose values are all binary16 numbers also gets a binary16 copy, as the products read
// it: with AVX-512, panels of 32 rows each stored (in, 32) (`panels`; the GEMM's packed layout,
// and one sequential stream for a one-row product); elsewhere plain rows (`h`).
struct CpuDecoderWeight {
  torch::Tensor t, half;
  const float* p = nullptr;
  const uint16_t* h = nullptr;
  const uint16_t* panels = nullptr;
};

// The decoder's view of a model's weights (with the binary16 copies), made once per model and kept
// on it (LlamaImpl::derived) while its weights stay the same tensors unmodified: a teacher that
// answers many generate() calls converts its matrices once. In-place updates (an optimizer step,
// load_weights) bump the tensors' version counters and the next decoder re-derives.
struct CpuDecoderWeights {
  struct Layer {
    CpuDecoderWeight attention_norm, ffn_norm;  // (C)
    CpuDecoderWeight wq, wk, wv, wo;  // (C, C), (KVD, C), (KVD, C), (C, C) row-major (out, in)
    CpuDecoderWeight bq, bk, bv;      // (C), (KVD), (KVD); null without QKV bias
    CpuDecoderWeight w1, w2, w3;      // (F, C), (C, F), (F, C)
  };
  CpuDecoderWeight embedding, norm, head;  // (V, C), (C), (V, C)
  std::vector<Layer> layers;
  std::vector<std::pair<const void*, int64_t>> key;  // each weight's data pointer and version
  bool packed = false;                               // binary16 copies as panels (AVX-512 kernels)

  // The model's, from its cache when still current (thread-safe).
  static std::shared_ptr<const CpuDecoderWeights> of(const Llama& model);
};

// The per-position buffers of a decoder step and the work on them that a single sequence's feed
// and a batch's step share (cpu_decoder.cpp): x, xb, out (n, C); q (n, C); k, v (n, KVD); hb,
// hb2 (n, F).
struct CpuDecoderScratch {
  std::vector<float> x, xb, q, k, v, out, hb, hb2;
  // Sizes the buffers for n positions and puts the tokens' embeddings in x (fails on an id outside
  // the vocabulary).
  void embed(const CpuDecoderWeights& w, const ModelConfig& c, std::span<const int32_t> tokens);
  // xb = attention_norm(x); q, k, v = its projections (before RoPE).
  void project_qkv(const CpuDecoderWeights::Layer& L, const ModelConfig& c, int64_t n);
  // The rest of the block once `out` holds the attention's output: x += wo(out), then the MLP.
  void finish_block(const CpuDecoderWeights::Layer& L, const ModelConfig& c, int64_t n);
};

class CpuDecoder {
 public:
  // Reads `model`'s weights in place when they are float32 on the CPU (else a float32 copy);
  // `capacity` positions at most. The model must outlive the decoder and keep its weights.
  CpuDecoder(const Llama& model, int64_t capacity);

  // Feeds `tokens` at the next positions; returns the logits (vocab) after the last of them,
  // valid until the next call.
  std::span<const float> feed(std::span<const int32_t> tokens);
  // As feed, with the logits after every one of `tokens`: (n, vocab) row-major, valid until the
  // next call (a speculative verification reads them all).
  std::span<const float> feed_all(std::span<const int32_t> tokens);
  // Forgets the positions from `length` on (rejected draft tokens); the next feed writes there.
  void rewind(int64_t length);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }

 private:
  friend class CpuDecoderBatch;
  std::span<const float> feed_impl(std::span<const int32_t> tokens, bool all);
  ModelConfig c_;
  int64_t capacity_, length_ = 0, head_dim_, kv_dim_;
  std::shared_ptr<const CpuDecoderWeights> w_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer (capacity, KVD)
  std::vector<float> cos_, sin_;                       // (capacity, head_dim) rotate-half tables
  CpuDecoderScratch s_;
  std::vector<float> att_,    // (S)
      logits_,
      scores_,       // scores (H, 64, S)
      all_logits_;   // (n, V) of feed_all
};

// One new token for each of several sequences of one model, as llama.cpp's server batches its
// slots: the projections, the MLP and the output head as GEMMs over all the sequences' rows, and
// each sequence's attention over its own cache (sequences spread over the intra-op threads). The
// same logits as each decoder's feed() of its one token, to float32 rounding (tested); the
// server's engine steps its sequences with it.
class CpuDecoderBatch {
 public:
  // Feeds tokens[i] to *seqs[i] (all decoders of one model, each with room for one more position);
  // returns their logits (n, vocab) row-major, valid until the next call.
  std::span<const float> step(std::span<CpuDecoder* const> seqs, std::span<const int32_t> tokens);

 private:
  CpuDecoderScratch s_;
  std::vector<float> att_, logits_;
};

// IEEE binary16 bits to float32 (the decoder's conversion on CPUs without F16C).
float half_to_float(uint16_t h);

// True when `x` is exactly a binary16 number (no rounding), with its bits in `h`.
bool exact_half(float x, uint16_t& h);

// y (n, out) = x (n, in) . W^T with W (out, in) row-major, all dense: the prompt's projections.
// On CPUs with AVX-512 the decoder's own blocked kernel over libtorch's intra-op threads (OpenBLAS
// may be held to narrower kernels by its build or OPENBLAS_CORETYPE); elsewhere sgemm.
void matmul_nt(const float* x, const float* w, float* y, int64_t n, int64_t in, int64_t out);

// For tests and comparisons: true makes the decoder and matmul_nt use their portable kernels
// (sgemm, AVX2 or plain one-row products over binary16 rows) even on a CPU with AVX-512.
void prefer_portable_cpu_kernels(bool on);

// Sets OpenBLAS's threads and libtorch's intra-op threads to `threads` together (0: leave the
// defaults): the one place the CLI and benches choose them, so that neither pool spins on cores
// the other needs.
void set_cpu_threads(int threads);

}  // namespace lineage::model
