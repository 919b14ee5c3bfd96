// Matrix-vector decoding on the CPU (see cpu_decoder.h).
#include "lineage/model/cpu_decoder.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "lineage/core/error.h"
#include "lineage/core/threads.h"

namespace lineage::model {

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16, exp = (h >> 10) & 0x1f,
                 mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    uint32_t m = mant;
    do {
      ++e;
      m <<= 1;
    } while ((m & 0x400) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((m & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

bool exact_half(float x, uint16_t& h) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  const uint32_t sign = (b >> 16) & 0x8000, exp = (b >> 23) & 0xff, mant = b & 0x7fffff;
  if (exp == 0) {  // zero, or a float32 subnormal (far below binary16's range)
    h = static_cast<uint16_t>(sign);
    return mant == 0;
  }
  if (exp == 0xff) return false;  // inf, nan
  const int e = static_cast<int>(exp) - 127;
  if (e >= -14 && e <= 15) {  // a normal binary16: the low 13 mantissa bits must be zero
    h = static_cast<uint16_t>(sign | (static_cast<uint32_t>(e + 15) << 10) | (mant >> 13));
    return (mant & 0x1fff) == 0;
  }
  if (e >= -24 && e < -14) {  // a binary16 subnormal m * 2^-24: m = significand >> (-1 - e)
    const uint32_t full = mant | 0x800000;
    const int shift = -1 - e;
    h = static_cast<uint16_t>(sign | (full >> shift));
    return (full & ((1u << shift) - 1)) == 0;
  }
  return false;
}

namespace {

// One row of a matrix-vector product: dot(w, x) over n floats. Compiled for AVX-512, AVX2 and
// plain x86-64, chosen when the program starts (GCC target_clones): the build stays portable.
__attribute__((target_clones("avx512f", "avx2", "default"))) float dot(const float* w,
                                                                       const float* x, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += w[i] * x[i];
  return s;
}

// dot(w, x) over n with w in binary16 rows: the portable kernels' one-row product over a
// binary16-valued matrix (half the bytes of a float32 row read per token, which is what a one-row
// product waits on). Kernels for AVX2 + F16C and plain x86-64, chosen once from the CPU's
// features. (With AVX-512 the decoder reads packed panels instead: matvec_panels below.)
__attribute__((target("avx2,f16c,fma"))) float dot_half_avx2(const uint16_t* w, const float* x,
                                                             int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))),
                         _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 8))),
        _mm256_loadu_ps(x + i + 8), a1);
  }
  __m256 a = _mm256_add_ps(a0, a1);
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  float s = _mm_cvtss_f32(r);
  for (; i < n; ++i) s += _cvtsh_ss(w[i]) * x[i];
  return s;
}

float dot_half_plain(const uint16_t* w, const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += half_to_float(w[i]) * x[i];
  return s;
}

using DotHalf = float (*)(const uint16_t*, const float*, int64_t);
DotHalf pick_dot_half() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
      __builtin_cpu_supports("fma"))
    return dot_half_avx2;
  return dot_half_plain;
}
const DotHalf dot_half = pick_dot_half();

// e^x in plain float arithmetic that vectorises (std::exp is a library call per element): x = n ln2
// + r, e^r by Cephes' expf polynomial (S. Moshier), 2^n through the exponent bits. Within 2 ulp
// of e^x; inputs are clamped to [-87.3, 88.7], so e^x for x below that gives ~1e-38, not 0.
inline float exp_poly(float x) {
  x = std::min(std::max(x, -87.3f), 88.7f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// softmax in place over row[0, n): the attention weights of one query. Vectorised for AVX-512,
// AVX2 and plain x86-64: at prefill these exponentials (one per query and key), not the products,
// took most of the time while they were std::exp calls.
__attribute__((target_clones("avx512f", "avx2", "default"))) void softmax_inplace(float* row,
                                                                                  int64_t n) {
  float max = -INFINITY;
#pragma omp simd reduction(max : max)
  for (int64_t t = 0; t < n; ++t) max = std::max(max, row[t]);
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < n; ++t) {
    row[t] = exp_poly(row[t] - max);
    sum += row[t];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) row[t] *= inv;
}

// a = silu(a) * b over n (SwiGLU's gate), vectorised as softmax_inplace.
__attribute__((target_clones("avx512f", "avx2", "default"))) void swiglu_inplace(float* a,
                                                                                 const float* b,
                                                                                 int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) a[j] = a[j] / (1.0f + exp_poly(-a[j])) * b[j];
}

// y (n, N) = x (n, K) . B on CPUs with AVX-512, B given as W (N, K) row-major (W^T: a linear
// layer's y = x . W^T, or scores = Q . K^T), as W (K, N) row-major (attention's P . V), or already
// packed in binary16 panels (a binary16-valued weight, packed once per model). The usual blocking
// of Goto and van de Geijn (BLIS, OpenBLAS): B in panels of 32 columns by at most kKc rows of K
// (one L1's worth), a 6 x 32 tile of y summed in twelve 512-bit registers, one broadcast of x per
// row and two loads of the panel per step of K. Written here rather than left to sgemm because
// OpenBLAS runs the kernels its build or OPENBLAS_CORETYPE picks (Haswell's AVX2 ones on a machine
// that forces it, at half the width), wakes its own threads for products this small, and packs
// the weights again on every call.
constexpr int64_t kNr = 32, kMr = 6, kKc = 256;

struct GemmArgs {
  const float* x;
  int64_t ldx;
  const float* w;
  int64_t ldw;
  bool w_is_kn;  // W (K, N) rather than (N, K)
  float alpha;   // y = alpha * x . B (folded into the packed panel)
  float* y;
  int64_t ldy, n, k, cols;  // y (n, cols), x (n, k)
  // B prepacked in binary16 panels (CpuDecoderWeight::panels; alpha 1): w, ldw, w_is_kn unused.
  const uint16_t* panels = nullptr;
};

#pragma GCC push_options
#pragma GCC target("avx512f,f16c,fma")
// (GCC 12's AVX-512 conversion and reduction intrinsics start from an undefined register, which
// its uninitialised-value warnings flag.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 16 values of a panel row: float32, or binary16 widened.
__attribute__((always_inline)) inline __m512 panel_load(const float* p) {
  return _mm512_load_ps(p);
}
__attribute__((always_inline)) inline __m512 panel_load(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
}

// y tile (rows x 32, columns past the masks untouched) = (accumulate ? y : 0) + a (rows, kc) .
// panel.
template <int Rows, class P>
__attribute__((always_inline)) inline void tile_avx512(const float* a, int64_t lda, const P* panel,
                                                       int64_t kc, float* y, int64_t ldy,
                                                       __mmask16 m0, __mmask16 m1,
                                                       bool accumulate) {
  __m512 c0[Rows], c1[Rows];
  for (int r = 0; r < Rows; ++r) {
    c0[r] = accumulate ? _mm512_maskz_loadu_ps(m0, y + r * ldy) : _mm512_setzero_ps();
    c1[r] = accumulate ? _mm512_maskz_loadu_ps(m1, y + r * ldy + 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = panel_load(panel + k * kNr), b1 = panel_load(panel + k * kNr + 16);
    for (int r = 0; r < Rows; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    _mm512_mask_storeu_ps(y + r * ldy, m0, c0[r]);
    _mm512_mask_storeu_ps(y + r * ldy + 16, m1, c1[r]);
  }
}

// The two 16-lane masks of a panel's first `cols` (1..32) columns.
std::pair<__mmask16, __mmask16> column_masks(int64_t cols) {
  const auto bits = [](int64_t c) {
    return static_cast<__mmask16>(c >= 16 ? 0xffff : c <= 0 ? 0 : (1u << c) - 1);
  };
  return {bits(cols), bits(cols - 16)};
}

// Every row of x against one panel (kc, 32): tiles of 6 rows, then the remainder.
template <class P>
void panel_rows(const float* a, int64_t lda, const P* panel, int64_t kc, float* y, int64_t ldy,
                int64_t n, int64_t cols, bool acc) {
  const auto [m0, m1] = column_masks(cols);
  using Tile = void (*)(const float*, int64_t, const P*, int64_t, float*, int64_t, __mmask16,
                        __mmask16, bool);
  static constexpr Tile remainder[kMr] = {nullptr,           tile_avx512<1, P>, tile_avx512<2, P>,
                                          tile_avx512<3, P>, tile_avx512<4, P>, tile_avx512<5, P>};
  int64_t i = 0;
  for (; i + kMr <= n; i += kMr)
    tile_avx512<kMr>(a + i * lda, lda, panel, kc, y + i * ldy, ldy, m0, m1, acc);
  if (i < n) remainder[n - i](a + i * lda, lda, panel, kc, y + i * ldy, ldy, m0, m1, acc);
}

// Columns [o0, o0 + cols) and rows [k0, k0 + kc) of B into panel (kc, 32) times alpha, zeros past
// cols.
void pack_panel(const GemmArgs& g, int64_t o0, int64_t cols, int64_t k0, int64_t kc, float* panel) {
  if (g.w_is_kn) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* row = g.w + (k0 + k) * g.ldw + o0;
      float* dst = panel + k * kNr;
      for (int64_t j = 0; j < cols; ++j) dst[j] = g.alpha * row[j];
      for (int64_t j = cols; j < kNr; ++j) dst[j] = 0.0f;
    }
    return;
  }
  for (int64_t j = 0; j < cols; ++j) {
    const float* row = g.w + (o0 + j) * g.ldw + k0;
    for (int64_t k = 0; k < kc; ++k) panel[k * kNr + j] = g.alpha * row[k];
  }
  for (int64_t j = cols; j < kNr; ++j)
    for (int64_t k = 0; k < kc; ++k) panel[k * kNr + j] = 0.0f;
}

// Panels [p0, p1) (32 columns each) of y.
void gemm_panels(const GemmArgs& g, int64_t p0, int64_t p1) {
  alignas(64) thread_local float panel[kNr * kKc];
  if (g.k <= 0) {
    for (int64_t i = 0; i < g.n; ++i)
      std::fill(g.y + i * g.ldy + p0 * kNr, g.y + i * g.ldy + std::min(p1 * kNr, g.cols), 0.0f);
    return;
  }
  for (int64_t k0 = 0; k0 < g.k; k0 += kKc) {
    const int64_t kc = std::min(kKc, g.k - k0);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t o0 = p * kNr, cols = std::min(kNr, g.cols - o0);
      if (g.panels) {
        panel_rows(g.x + k0, g.ldx, g.panels + (p * g.k + k0) * kNr, kc, g.y + o0, g.ldy, g.n, cols,
                   k0 > 0);
      } else {
        pack_panel(g, o0, cols, k0, kc, panel);
        panel_rows(g.x + k0, g.ldx, panel, kc, g.y + o0, g.ldy, g.n, cols, k0 > 0);
      }
    }
  }
}

// Panels [p0, p1) of y = W x for one position, W in binary16 panels of `in` rows: each panel read
// once front to back, one sequential stream (what the hardware prefetcher serves best; measured
// here, four row-major binary16 rows read side by side streamed at 18 GB/s, one row at a time at
// 38), and no horizontal sums. Two sets of sums over even and odd steps of K halve the FMA chains.
void matvec_panels(const uint16_t* panels, const float* x, float* y, int64_t in, int64_t out,
                   int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const uint16_t* w = panels + p * in * kNr;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(),
           b1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 2 <= in; k += 2) {
      const __m512 x0 = _mm512_set1_ps(x[k]), x1 = _mm512_set1_ps(x[k + 1]);
      a0 = _mm512_fmadd_ps(panel_load(w + k * kNr), x0, a0);
      a1 = _mm512_fmadd_ps(panel_load(w + k * kNr + 16), x0, a1);
      b0 = _mm512_fmadd_ps(panel_load(w + (k + 1) * kNr), x1, b0);
      b1 = _mm512_fmadd_ps(panel_load(w + (k + 1) * kNr + 16), x1, b1);
    }
    if (k < in) {
      const __m512 x0 = _mm512_set1_ps(x[k]);
      a0 = _mm512_fmadd_ps(panel_load(w + k * kNr), x0, a0);
      a1 = _mm512_fmadd_ps(panel_load(w + k * kNr + 16), x0, a1);
    }
    const auto [m0, m1] = column_masks(std::min(kNr, out - p * kNr));
    _mm512_mask_storeu_ps(y + p * kNr, m0, _mm512_add_ps(a0, b0));
    _mm512_mask_storeu_ps(y + p * kNr + 16, m1, _mm512_add_ps(a1, b1));
  }
}
#pragma GCC diagnostic pop
#pragma GCC pop_options

const bool cpu_has_avx512 = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("fma");
}();
std::atomic<bool> portable_only{false};
bool use_avx512() { return cpu_has_avx512 && !portable_only.load(std::memory_order_relaxed); }

int64_t panel_count(int64_t cols) { return (cols + kNr - 1) / kNr; }

// The whole of y with the kernel above, panels to libgomp's team (lineage::parallel_for) in runs
// of at least ~1M multiply-adds (fewer, and waking a thread costs more than it saves).
void gemm_threads(const GemmArgs& g) {
  const int64_t grain =
      std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, g.n * g.k * kNr));
  parallel_for(0, panel_count(g.cols), grain,
               [&](int64_t p0, int64_t p1) { gemm_panels(g, p0, p1); });
}

// The whole of y on this thread: the kernel above, or sgemm (on one thread) without AVX-512.
void gemm_here(const GemmArgs& g) {
  if (g.n <= 0 || g.cols <= 0) return;
  if (use_avx512()) return gemm_panels(g, 0, panel_count(g.cols));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, g.w_is_kn ? CblasNoTrans : CblasTrans,
              static_cast<int>(g.n), static_cast<int>(g.cols), static_cast<int>(g.k), g.alpha, g.x,
              static_cast<int>(g.ldx), g.w, static_cast<int>(g.ldw), 0.0f, g.y,
              static_cast<int>(g.ldy));
}

// y (n, out) = x (n, in) . W^T, W (out, in) row-major; plus bias when given. One position is a
// matrix-vector product (over the binary16 copy when the weight has one), split over threads
// only when large; several go through matmul_nt.
constexpr int64_t kMatvecGrain = int64_t{1} << 18;
void linear(const float* x, const CpuDecoderWeight& w, const float* bias, float* y, int64_t n,
            int64_t in, int64_t out) {
  // Work goes to libgomp's team in runs of at least kMatvecGrain multiply-adds for one position
  // and ~1M for several: smaller products finish before a woken thread would start.
  if (w.panels) {  // binary16 panels (AVX-512)
    if (n == 1) {
      const int64_t grain = std::max<int64_t>(1, kMatvecGrain / std::max<int64_t>(1, in * kNr));
      parallel_for(0, panel_count(out), grain,
                   [&](int64_t p0, int64_t p1) { matvec_panels(w.panels, x, y, in, out, p0, p1); });
    } else {
      gemm_threads({x, in, nullptr, 0, false, 1.0f, y, out, n, in, out, w.panels});
    }
  } else if (n == 1) {
    const int64_t grain = std::max<int64_t>(16, kMatvecGrain / std::max<int64_t>(in, 1));
    parallel_for(0, out, grain, [&](int64_t o0, int64_t o1) {
      if (w.h)
        for (int64_t o = o0; o < o1; ++o) y[o] = dot_half(w.h + o * in, x, in);
      else
        for (int64_t o = o0; o < o1; ++o) y[o] = dot(w.p + o * in, x, in);
    });
  } else {
    matmul_nt(x, w.p, y, n, in, out);
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

// One position's attention over S cached positions: for each of H query heads (q, H × hd), scores
// against its KV head's keys, softmax, the weighted sum of the values into out (H × hd); `att`
// holds S scores.
void attend_one(const float* q, const float* k_cache, const float* v_cache, int64_t S, int64_t kv_dim, int64_t H,
                int64_t G, int64_t hd, float scale, float* att, float* out) {
  for (int64_t h = 0; h < H; ++h) {
    const int64_t kvh = h / G;
    for (int64_t t = 0; t < S; ++t) att[t] = dot(&k_cache[t * kv_dim + kvh * hd], q + h * hd, hd) * scale;
    softmax_inplace(att, S);
    float* o = out + h * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t t = 0; t < S; ++t) {
      const float p = att[t];
      const float* v = &v_cache[t * kv_dim + kvh * hd];
      for (int64_t j = 0; j < hd; ++j) o[j] += p * v[j];
    }
  }
}

}  // namespace

void matmul_nt(const float* x, const float* w, float* y, int64_t n, int64_t in, int64_t out) {
  if (n <= 0 || out <= 0) return;
  if (!use_avx512()) {  // sgemm with OpenBLAS's own threads
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(out),
                static_cast<int>(in), 1.0f, x, static_cast<int>(in), w, static_cast<int>(in), 0.0f,
                y, static_cast<int>(out));
    return;
  }
  gemm_threads({x, in, w, in, false, 1.0f, y, out, n, in, out});
}

void prefer_portable_cpu_kernels(bool on) { portable_only.store(on); }

void set_cpu_threads(int threads) {
  if (threads <= 0) return;
  openblas_set_num_threads(threads);
  torch::set_num_threads(threads);
  set_parallel_threads(threads);
}

std::shared_ptr<const CpuDecoderWeights> CpuDecoderWeights::of(const Llama& model) {
  const auto w = model->weights();
  std::vector<std::pair<const void*, int64_t>> key;
  key.reserve(w.size() + 1);
  for (const auto& [name, t] : w)
    key.emplace_back(t.data_ptr(), static_cast<int64_t>(t._version()));
  const auto head = model->head_weight();
  key.emplace_back(head.data_ptr(), static_cast<int64_t>(head._version()));
  std::lock_guard<std::mutex> lock(model->derived_mutex());
  if (auto kept = std::static_pointer_cast<const CpuDecoderWeights>(model->derived());
      kept && kept->key == key && kept->packed == use_avx512())
    return kept;

  // A matrix whose every value is a binary16 number (a model read from a 16-bit file, as the
  // embedded teacher and most GGUF and HF checkpoints are) also gets a binary16 copy for one-row
  // products: the same values, half the bytes to read per token. Others stay float32 only. A
  // trained float32 model is told apart by its first values (exact_half) before the whole
  // matrix is converted and compared.
  const bool packed = use_avx512();
  auto pin = [packed](const torch::Tensor& t, bool matrix) {
    CpuDecoderWeight out;
    out.t = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();  // no copy when already so
    out.p = out.t.data_ptr<float>();
    if (!matrix) return out;
    const int64_t probe = std::min<int64_t>(out.t.numel(), 256);
    uint16_t bits;
    for (int64_t i = 0; i < probe; ++i)
      if (!exact_half(out.p[i], bits)) return out;
    torch::Tensor h = out.t.to(torch::kHalf);
    if (!torch::equal(h.to(torch::kFloat32), out.t)) return out;
    if (!packed) {
      out.half = h.contiguous();
      out.h = reinterpret_cast<const uint16_t*>(out.half.data_ptr<at::Half>());
      return out;
    }
    // Panel q holds rows [32q, 32q + 32) as (in, 32), zeros past the last row.
    const int64_t rows = out.t.size(0), in = out.t.size(1), count = panel_count(rows);
    out.half = torch::zeros({count * in * kNr}, torch::kHalf);
    const auto* src = reinterpret_cast<const uint16_t*>(h.data_ptr<at::Half>());
    auto* dst = reinterpret_cast<uint16_t*>(out.half.data_ptr<at::Half>());
    for (int64_t o = 0; o < rows; ++o) {
      uint16_t* col = dst + (o / kNr) * in * kNr + o % kNr;
      for (int64_t k = 0; k < in; ++k) col[k * kNr] = src[o * in + k];
    }
    out.panels = dst;
    return out;
  };
  auto get = [&](const std::string& name, bool matrix = false) {
    auto it = w.find(name);
    if (it == w.end()) fail("CpuDecoder: the model has no weight '{}'", name);
    return pin(it->second, matrix);
  };
  auto made = std::make_shared<CpuDecoderWeights>();
  made->key = std::move(key);
  made->packed = packed;
  made->embedding = get("tok_embeddings.weight");
  made->norm = get("norm.weight");
  made->head = pin(head, true);
  const auto& c = model->config();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Layer L;
    L.attention_norm = get(p + "attention_norm.weight");
    L.ffn_norm = get(p + "ffn_norm.weight");
    L.wq = get(p + "attention.wq.weight", true);
    L.wk = get(p + "attention.wk.weight", true);
    L.wv = get(p + "attention.wv.weight", true);
    L.wo = get(p + "attention.wo.weight", true);
    if (c.qkv_bias) {
      L.bq = get(p + "attention.wq.bias");
      L.bk = get(p + "attention.wk.bias");
      L.bv = get(p + "attention.wv.bias");
    }
    L.w1 = get(p + "feed_forward.w1.weight", true);
    L.w2 = get(p + "feed_forward.w2.weight", true);
    L.w3 = get(p + "feed_forward.w3.weight", true);
    made->layers.push_back(std::move(L));
  }
  model->derived() = made;
  return made;
}

CpuDecoder::CpuDecoder(const Llama& model, int64_t capacity)
    : c_(model->config()), capacity_(std::min(capacity, model->config().max_seq_len)) {
  if (capacity_ < 1) fail("CpuDecoder: capacity {} must be at least 1", capacity);
  head_dim_ = c_.head_dim();
  kv_dim_ = c_.kv_dim();
  w_ = CpuDecoderWeights::of(model);
  k_cache_.assign(static_cast<size_t>(c_.n_layers),
                  std::vector<float>(static_cast<size_t>(capacity_ * kv_dim_), 0.0f));
  v_cache_ = k_cache_;
  // The rotary tables of LlamaImpl::ensure_rope: angles in float64, stored as float32.
  cos_.resize(static_cast<size_t>(capacity_ * head_dim_));
  sin_.resize(cos_.size());
  const int64_t half = head_dim_ / 2;
  for (int64_t t = 0; t < capacity_; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle =
          static_cast<double>(t) *
          std::pow(c_.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim_));
      cos_[t * head_dim_ + i] = cos_[t * head_dim_ + i + half] =
          static_cast<float>(std::cos(angle));
      sin_[t * head_dim_ + i] = sin_[t * head_dim_ + i + half] =
          static_cast<float>(std::sin(angle));
    }
  logits_.resize(static_cast<size_t>(c_.vocab_size));
  att_.resize(static_cast<size_t>(capacity_));
}

void CpuDecoderScratch::embed(const CpuDecoderWeights& w, const ModelConfig& c, std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(tokens.size()), C = c.dim, F = c.hidden_dim, KVD = c.kv_dim();
  auto grow = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(static_cast<size_t>(size));
  };
  for (auto* b : {&x, &xb, &q, &out}) grow(*b, n * C);
  grow(k, n * KVD);
  grow(v, n * KVD);
  grow(hb, n * F);
  grow(hb2, n * F);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || id >= c.vocab_size) fail("token id {} is outside the vocabulary of {}", id, c.vocab_size);
    std::memcpy(&x[i * C], w.embedding.p + static_cast<size_t>(id) * C, sizeof(float) * C);
  }
}

void CpuDecoderScratch::project_qkv(const CpuDecoderWeights::Layer& L, const ModelConfig& c, int64_t n) {
  const int64_t C = c.dim, KVD = c.kv_dim();
  rmsnorm(x.data(), L.attention_norm.p, xb.data(), n, C, c.norm_eps);
  linear(xb.data(), L.wq, L.bq.p, q.data(), n, C, C);
  linear(xb.data(), L.wk, L.bk.p, k.data(), n, C, KVD);
  linear(xb.data(), L.wv, L.bv.p, v.data(), n, C, KVD);
}

void CpuDecoderScratch::finish_block(const CpuDecoderWeights::Layer& L, const ModelConfig& c, int64_t n) {
  const int64_t C = c.dim, F = c.hidden_dim;
  linear(out.data(), L.wo, nullptr, xb.data(), n, C, C);
  for (int64_t j = 0; j < n * C; ++j) x[j] += xb[j];
  rmsnorm(x.data(), L.ffn_norm.p, xb.data(), n, C, c.norm_eps);
  linear(xb.data(), L.w1, nullptr, hb.data(), n, C, F);
  linear(xb.data(), L.w3, nullptr, hb2.data(), n, C, F);
  swiglu_inplace(hb.data(), hb2.data(), n * F);
  linear(hb.data(), L.w2, nullptr, xb.data(), n, F, C);
  for (int64_t j = 0; j < n * C; ++j) x[j] += xb[j];
}

std::span<const float> CpuDecoder::feed(std::span<const int32_t> tokens) { return feed_impl(tokens, false); }

std::span<const float> CpuDecoder::feed_all(std::span<const int32_t> tokens) { return feed_impl(tokens, true); }

void CpuDecoder::rewind(int64_t length) {
  if (length < 0 || length > length_) fail("CpuDecoder: cannot rewind to {} from {} positions", length, length_);
  length_ = length;  // the cache rows from `length` on are written again by the next feed
}

std::span<const float> CpuDecoder::feed_impl(std::span<const int32_t> tokens, bool all) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) fail("CpuDecoder: nothing to feed");
  if (length_ + n > capacity_)
    fail("sequence of {} positions exceeds the decoder's capacity {}", length_ + n, capacity_);
  const int64_t C = c_.dim, H = c_.n_heads, KV = c_.n_kv_heads, hd = head_dim_,
                G = H / KV;
  auto grow = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(static_cast<size_t>(size));
  };
  s_.embed(*w_, c_, tokens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t l = 0; l < c_.n_layers; ++l) {
    const CpuDecoderWeights::Layer& L = w_->layers[l];
    float* k_cache = k_cache_[l].data();
    float* v_cache = v_cache_[l].data();
    s_.project_qkv(L, c_, n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = length_ + i;
      const float* cs = &cos_[pos * hd];
      const float* sn = &sin_[pos * hd];
      for (int64_t h = 0; h < H; ++h) rope(&s_.q[i * C + h * hd], cs, sn, hd);
      for (int64_t h = 0; h < KV; ++h) rope(&s_.k[i * kv_dim_ + h * hd], cs, sn, hd);
      std::memcpy(&k_cache[pos * kv_dim_], &s_.k[i * kv_dim_], sizeof(float) * kv_dim_);
      std::memcpy(&v_cache[pos * kv_dim_], &s_.v[i * kv_dim_], sizeof(float) * kv_dim_);
    }
    // Causal attention: position length_ + i sees keys 0 .. length_ + i.
    if (n == 1) {
      attend_one(s_.q.data(), k_cache, v_cache, length_ + 1, kv_dim_, H, G, hd, scale, att_.data(), s_.out.data());
    } else {
      // Several positions: per head, scores = Q_h K_h^T and out_h = P V_h as GEMMs reading q, the
      // cache and out in place through their row strides; heads spread over libtorch's intra-op
      // threads, each with its own scores. Queries go in blocks of 64 rows, each against the
      // keys its last row sees: for a fresh prompt about half the products of the full (n, S)
      // square, all of whose upper triangle is masked.
      constexpr int64_t kBlock = 64;
      const int64_t stride = kBlock * (length_ + n);
      grow(scores_, H * stride);
      const int64_t grain =
          std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(1, n * (length_ + n) * hd));
      parallel_for(0, H, grain, [&](int64_t h0, int64_t h1) {
        for (int64_t h = h0; h < h1; ++h) {
          const int64_t kvh = h / G;
          float* scores = &scores_[h * stride];
          for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
            const int64_t rows = std::min(kBlock, n - r0), S = length_ + r0 + rows;
            gemm_here({&s_.q[r0 * C + h * hd], C, &k_cache[kvh * hd], kv_dim_, false, scale, scores,
                       S, rows, hd, S});
            for (int64_t i = 0; i < rows; ++i) {
              float* row = &scores[i * S];
              const int64_t seen = length_ + r0 + i + 1;
              softmax_inplace(row, seen);
              std::fill(row + seen, row + S, 0.0f);
            }
            gemm_here({scores, S, &v_cache[kvh * hd], kv_dim_, true, 1.0f, &s_.out[r0 * C + h * hd],
                       C, rows, S, hd});
          }
        }
      });
    }
    s_.finish_block(L, c_, n);
  }
  length_ += n;
  if (all) {  // every position's logits: a speculative verification (n, V)
    grow(all_logits_, n * c_.vocab_size);
    rmsnorm(s_.x.data(), w_->norm.p, s_.xb.data(), n, C, c_.norm_eps);
    linear(s_.xb.data(), w_->head, nullptr, all_logits_.data(), n, C, c_.vocab_size);
    return {all_logits_.data(), static_cast<size_t>(n * c_.vocab_size)};
  }
  // Only the last position's logits are needed.
  rmsnorm(&s_.x[(n - 1) * C], w_->norm.p, s_.xb.data(), 1, C, c_.norm_eps);
  linear(s_.xb.data(), w_->head, nullptr, logits_.data(), 1, C, c_.vocab_size);
  return logits_;
}

std::span<const float> CpuDecoderBatch::step(std::span<CpuDecoder* const> seqs, std::span<const int32_t> tokens) {
  const int64_t n = static_cast<int64_t>(seqs.size());
  if (n == 0) fail("CpuDecoderBatch: no sequences to step");
  if (static_cast<int64_t>(tokens.size()) != n) fail("CpuDecoderBatch: {} tokens for {} sequences", tokens.size(), n);
  const CpuDecoder& first = *seqs[0];
  const ModelConfig& c = first.c_;
  const CpuDecoderWeights& w = *first.w_;
  int64_t longest = 0;
  for (const CpuDecoder* d : seqs) {
    if (d->w_ != first.w_) fail("CpuDecoderBatch: the sequences are decoders of different models");
    if (d->length_ + 1 > d->capacity_)
      fail("sequence of {} positions exceeds the decoder's capacity {}", d->length_ + 1, d->capacity_);
    longest = std::max(longest, d->length_ + 1);
  }
  const int64_t C = c.dim, H = c.n_heads, KV = c.n_kv_heads, hd = first.head_dim_,
                KVD = first.kv_dim_, G = H / KV, V = c.vocab_size;
  auto grow = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(static_cast<size_t>(size));
  };
  grow(att_, n * longest);
  grow(logits_, n * V);
  s_.embed(w, c, tokens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Attention work per sequence is its length times the heads: small sequences go to a thread
  // in runs (the grain), so that a step of short sequences does not wake the team for nothing.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, longest * H * hd));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const CpuDecoderWeights::Layer& L = w.layers[l];
    s_.project_qkv(L, c, n);
    parallel_for(0, n, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        CpuDecoder& d = *seqs[i];
        const int64_t pos = d.length_, S = pos + 1;
        const float* cs = &d.cos_[pos * hd];
        const float* sn = &d.sin_[pos * hd];
        float* q = &s_.q[i * C];
        for (int64_t h = 0; h < H; ++h) rope(q + h * hd, cs, sn, hd);
        for (int64_t h = 0; h < KV; ++h) rope(&s_.k[i * KVD + h * hd], cs, sn, hd);
        float* k_cache = d.k_cache_[l].data();
        float* v_cache = d.v_cache_[l].data();
        std::memcpy(&k_cache[pos * KVD], &s_.k[i * KVD], sizeof(float) * KVD);
        std::memcpy(&v_cache[pos * KVD], &s_.v[i * KVD], sizeof(float) * KVD);
        attend_one(q, k_cache, v_cache, S, KVD, H, G, hd, scale, &att_[i * longest], &s_.out[i * C]);
      }
    });
    s_.finish_block(L, c, n);
  }
  for (CpuDecoder* d : seqs) d->length_ += 1;
  rmsnorm(s_.x.data(), w.norm.p, s_.xb.data(), n, C, c.norm_eps);
  linear(s_.xb.data(), w.head, nullptr, logits_.data(), n, C, V);
  return {logits_.data(), static_cast<size_t>(n * V)};
}

}  // namespace lineage::model
