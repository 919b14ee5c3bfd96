// Matrix-vector decoding on the CPU (see cpu_decoder.h).
#include "lineage/model/cpu_decoder.h"

#include <cblas.h>

#include <cmath>
#include <cstring>

#include "lineage/core/error.h"

namespace lineage::model {

namespace {

// One row of a matrix-vector product: dot(w, x) over n floats. Compiled for AVX-512, AVX2 and
// plain x86-64, chosen when the program starts (GCC target_clones): the build stays portable.
__attribute__((target_clones("avx512f", "avx2", "default"))) float dot(const float* w, const float* x, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += w[i] * x[i];
  return s;
}

// y (n, out) = x (n, in) . W^T, W (out, in) row-major; plus bias when given. One position is a
// matrix-vector product on this thread (OpenBLAS's threads would cost more to wake than the
// product takes at these sizes); several go through sgemm.
void linear(const float* x, const float* w, const float* bias, float* y, int64_t n, int64_t in, int64_t out) {
  if (n == 1) {
    for (int64_t o = 0; o < out; ++o) y[o] = dot(w + o * in, x, in);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(out), static_cast<int>(in), 1.0f,
                x, static_cast<int>(in), w, static_cast<int>(in), 0.0f, y, static_cast<int>(out));
  }
  if (bias)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out; ++j) y[i * out + j] += bias[j];
}

// RMSNorm of n rows of C, as RMSNormImpl: x * rsqrt(mean(x^2) + eps) * w.
void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t C, double eps) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * C;
    float ss = 0;
    for (int64_t j = 0; j < C; ++j) ss += xi[j] * xi[j];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + static_cast<float>(eps));
    for (int64_t j = 0; j < C; ++j) y[i * C + j] = xi[j] * r * w[j];
  }
}

// Rotate-half RoPE of one head vector at table row `pos`.
void rope(float* v, const float* cos, const float* sin, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * cos[i] - b * sin[i];
    v[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

}  // namespace

void set_cpu_threads(int threads) {
  if (threads <= 0) return;
  openblas_set_num_threads(threads);
  torch::set_num_threads(threads);
}

CpuDecoder::CpuDecoder(const Llama& model, int64_t capacity)
    : c_(model->config()), capacity_(std::min(capacity, model->config().max_seq_len)) {
  if (capacity_ < 1) fail("CpuDecoder: capacity {} must be at least 1", capacity);
  head_dim_ = c_.head_dim();
  kv_dim_ = c_.kv_dim();
  auto w = model->weights();
  auto pin = [](const torch::Tensor& t) {
    Weight out;
    out.t = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();  // no copy when already so
    out.p = out.t.data_ptr<float>();
    return out;
  };
  auto get = [&](const std::string& name) {
    auto it = w.find(name);
    if (it == w.end()) fail("CpuDecoder: the model has no weight '{}'", name);
    return pin(it->second);
  };
  embedding_ = get("tok_embeddings.weight");
  norm_ = get("norm.weight");
  head_ = pin(model->head_weight());
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Layer L;
    L.attention_norm = get(p + "attention_norm.weight");
    L.ffn_norm = get(p + "ffn_norm.weight");
    L.wq = get(p + "attention.wq.weight");
    L.wk = get(p + "attention.wk.weight");
    L.wv = get(p + "attention.wv.weight");
    L.wo = get(p + "attention.wo.weight");
    if (c_.qkv_bias) {
      L.bq = get(p + "attention.wq.bias");
      L.bk = get(p + "attention.wk.bias");
      L.bv = get(p + "attention.wv.bias");
    }
    L.w1 = get(p + "feed_forward.w1.weight");
    L.w2 = get(p + "feed_forward.w2.weight");
    L.w3 = get(p + "feed_forward.w3.weight");
    L.k_cache.assign(static_cast<size_t>(capacity_ * kv_dim_), 0.0f);
    L.v_cache.assign(static_cast<size_t>(capacity_ * kv_dim_), 0.0f);
    layers_.push_back(std::move(L));
  }
  // The rotary tables of LlamaImpl::ensure_rope: angles in float64, stored as float32.
  cos_.resize(static_cast<size_t>(capacity_ * head_dim_));
  sin_.resize(cos_.size());
  const int64_t half = head_dim_ / 2;
  for (int64_t t = 0; t < capacity_; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(t) * std::pow(c_.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim_));
      cos_[t * head_dim_ + i] = cos_[t * head_dim_ + i + half] = static_cast<float>(std::cos(angle));
      sin_[t * head_dim_ + i] = sin_[t * head_dim_ + i + half] = static_cast<float>(std::sin(angle));
    }
  logits_.resize(static_cast<size_t>(c_.vocab_size));
  att_.resize(static_cast<size_t>(capacity_));
}

std::span<const float> CpuDecoder::feed(std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) fail("CpuDecoder: nothing to feed");
  if (length_ + n > capacity_) fail("sequence of {} positions exceeds the decoder's capacity {}", length_ + n, capacity_);
  const int64_t C = c_.dim, F = c_.hidden_dim, H = c_.n_heads, KV = c_.n_kv_heads, hd = head_dim_, G = H / KV;
  auto grow = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(static_cast<size_t>(size));
  };
  grow(x_, n * C);
  grow(xb_, n * C);
  grow(q_, n * C);
  grow(k_, n * kv_dim_);
  grow(v_, n * kv_dim_);
  grow(out_, n * C);
  grow(hb_, n * F);
  grow(hb2_, n * F);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || id >= c_.vocab_size) fail("token id {} is outside the vocabulary of {}", id, c_.vocab_size);
    std::memcpy(&x_[i * C], embedding_.p + static_cast<size_t>(id) * C, sizeof(float) * C);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (Layer& L : layers_) {
    rmsnorm(x_.data(), L.attention_norm.p, xb_.data(), n, C, c_.norm_eps);
    linear(xb_.data(), L.wq.p, L.bq.p, q_.data(), n, C, C);
    linear(xb_.data(), L.wk.p, L.bk.p, k_.data(), n, C, kv_dim_);
    linear(xb_.data(), L.wv.p, L.bv.p, v_.data(), n, C, kv_dim_);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = length_ + i;
      const float* cs = &cos_[pos * hd];
      const float* sn = &sin_[pos * hd];
      for (int64_t h = 0; h < H; ++h) rope(&q_[i * C + h * hd], cs, sn, hd);
      for (int64_t h = 0; h < KV; ++h) rope(&k_[i * kv_dim_ + h * hd], cs, sn, hd);
      std::memcpy(&L.k_cache[pos * kv_dim_], &k_[i * kv_dim_], sizeof(float) * kv_dim_);
      std::memcpy(&L.v_cache[pos * kv_dim_], &v_[i * kv_dim_], sizeof(float) * kv_dim_);
    }
    // Causal attention: position length_ + i sees keys 0 .. length_ + i.
    if (n == 1) {
      const int64_t S = length_ + 1;
      for (int64_t h = 0; h < H; ++h) {
        const float* q = &q_[h * hd];
        const int64_t kvh = h / G;
        float max = -INFINITY;
        for (int64_t t = 0; t < S; ++t) {
          att_[t] = dot(&L.k_cache[t * kv_dim_ + kvh * hd], q, hd) * scale;
          max = std::max(max, att_[t]);
        }
        float sum = 0;
        for (int64_t t = 0; t < S; ++t) sum += (att_[t] = std::exp(att_[t] - max));
        float* o = &out_[h * hd];
        std::fill(o, o + hd, 0.0f);
        for (int64_t t = 0; t < S; ++t) {
          const float p = att_[t] / sum;
          const float* v = &L.v_cache[t * kv_dim_ + kvh * hd];
          for (int64_t j = 0; j < hd; ++j) o[j] += p * v[j];
        }
      }
    } else {
      // Several positions: per head, scores (n, S) = Q_h K_h^T and out_h = P V_h through sgemm,
      // reading q, the cache and out in place through their row strides.
      const int64_t S = length_ + n;
      grow(scores_, n * S);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / G;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(S), static_cast<int>(hd),
                    scale, &q_[h * hd], static_cast<int>(C), &L.k_cache[kvh * hd], static_cast<int>(kv_dim_), 0.0f,
                    scores_.data(), static_cast<int>(S));
        for (int64_t i = 0; i < n; ++i) {
          float* row = &scores_[i * S];
          const int64_t seen = length_ + i + 1;
          float max = -INFINITY;
          for (int64_t t = 0; t < seen; ++t) max = std::max(max, row[t]);
          float sum = 0;
          for (int64_t t = 0; t < seen; ++t) sum += (row[t] = std::exp(row[t] - max));
          for (int64_t t = 0; t < seen; ++t) row[t] /= sum;
          std::fill(row + seen, row + S, 0.0f);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(hd), static_cast<int>(S), 1.0f,
                    scores_.data(), static_cast<int>(S), &L.v_cache[kvh * hd], static_cast<int>(kv_dim_), 0.0f, &out_[h * hd],
                    static_cast<int>(C));
      }
    }
    linear(out_.data(), L.wo.p, nullptr, xb_.data(), n, C, C);
    for (int64_t j = 0; j < n * C; ++j) x_[j] += xb_[j];
    rmsnorm(x_.data(), L.ffn_norm.p, xb_.data(), n, C, c_.norm_eps);
    linear(xb_.data(), L.w1.p, nullptr, hb_.data(), n, C, F);
    linear(xb_.data(), L.w3.p, nullptr, hb2_.data(), n, C, F);
    for (int64_t j = 0; j < n * F; ++j) {
      const float a = hb_[j];
      hb_[j] = a / (1.0f + std::exp(-a)) * hb2_[j];
    }
    linear(hb_.data(), L.w2.p, nullptr, xb_.data(), n, F, C);
    for (int64_t j = 0; j < n * C; ++j) x_[j] += xb_[j];
  }
  length_ += n;
  // Only the last position's logits are needed.
  rmsnorm(&x_[(n - 1) * C], norm_.p, xb_.data(), 1, C, c_.norm_eps);
  linear(xb_.data(), head_.p, nullptr, logits_.data(), 1, C, c_.vocab_size);
  return logits_;
}

}  // namespace lineage::model
