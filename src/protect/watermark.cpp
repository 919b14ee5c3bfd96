// Keyed green lists (Kirchenbauer et al. 2023). See include/lineage/protect/watermark.h.
#include "lineage/protect/watermark.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>

#include "lineage/core/error.h"
#include "protect/key_file.h"

namespace lineage::protect {

namespace {

void init_sodium() {
  if (sodium_init() < 0) fail("libsodium could not be initialised");
}

constexpr std::string_view kSubkeyContext = "lineage watermark green list v1";

}  // namespace

WatermarkKey WatermarkKey::random() {
  init_sodium();
  WatermarkKey k;
  randombytes_buf(k.bytes_.data(), k.bytes_.size());
  return k;
}

WatermarkKey WatermarkKey::read(const std::filesystem::path& path) {
  init_sodium();
  WatermarkKey k;
  auto bytes = read_private_hex(path, k.bytes_.size(), "watermark key");
  std::copy(bytes.begin(), bytes.end(), k.bytes_.begin());
  sodium_memzero(bytes.data(), bytes.size());
  return k;
}

void WatermarkKey::write(const std::filesystem::path& path) const { write_private_hex(path, bytes_.data(), bytes_.size()); }

std::string WatermarkKey::fingerprint() const {
  init_sodium();
  unsigned char h[8];
  crypto_generichash(h, sizeof h, bytes_.data(), bytes_.size(), nullptr, 0);
  char out[17];
  sodium_bin2hex(out, sizeof out, h, sizeof h);
  return out;
}

void validate(const WatermarkParams& p) {
  if (!(p.gamma > 0 && p.gamma < 1)) fail("watermark gamma must be in (0, 1), got {}", p.gamma);
  if (!(p.delta >= 0 && std::isfinite(p.delta))) fail("watermark delta must be >= 0, got {}", p.delta);
  if (p.context < 1 || p.context > 8) fail("watermark context h must be in 1..8 tokens, got {}", p.context);
}

Watermark::Watermark(const WatermarkKey& key, const WatermarkParams& params) : params_(params) {
  init_sodium();
  validate(params_);
  static_assert(crypto_shorthash_KEYBYTES == 16 && crypto_shorthash_BYTES == 8);
  crypto_generichash(subkey_.data(), subkey_.size(), reinterpret_cast<const unsigned char*>(kSubkeyContext.data()),
                     kSubkeyContext.size(), key.bytes().data(), key.bytes().size());
  threshold_ = static_cast<uint64_t>(std::ldexp(params_.gamma, 64));
  fingerprint_ = key.fingerprint();
}

uint64_t Watermark::prf(std::span<const int32_t> window, int32_t token) const {
  // Input: the h context ids then the token, each as 4 little-endian bytes.
  unsigned char in[4 * 9];
  size_t n = 0;
  auto put = [&](int32_t v) {
    auto u = static_cast<uint32_t>(v);
    for (int b = 0; b < 4; ++b) in[n++] = static_cast<unsigned char>(u >> (8 * b));
  };
  for (int32_t id : window) put(id);
  put(token);
  unsigned char out[8];
  crypto_shorthash(out, in, n, subkey_.data());
  uint64_t v = 0;
  for (int b = 7; b >= 0; --b) v = (v << 8) | out[b];
  return v;
}

bool Watermark::is_green(std::span<const int32_t> context, int32_t token) const {
  const size_t h = static_cast<size_t>(params_.context);
  if (context.size() < h) return false;
  return prf(context.subspan(context.size() - h), token) < threshold_;
}

std::vector<uint8_t> Watermark::green_mask(std::span<const int32_t> context, int64_t vocab_size) const {
  std::vector<uint8_t> mask(static_cast<size_t>(vocab_size), 0);
  const size_t h = static_cast<size_t>(params_.context);
  if (context.size() < h) return mask;
  auto window = context.subspan(context.size() - h);
  for (int64_t t = 0; t < vocab_size; ++t) mask[t] = prf(window, static_cast<int32_t>(t)) < threshold_;
  return mask;
}

void Watermark::bias(std::span<const int32_t> context, std::span<float> logits) const {
  const size_t h = static_cast<size_t>(params_.context);
  if (context.size() < h || params_.delta == 0) return;
  auto window = context.subspan(context.size() - h);
  const float d = static_cast<float>(params_.delta);
  for (size_t t = 0; t < logits.size(); ++t)
    if (prf(window, static_cast<int32_t>(t)) < threshold_) logits[t] += d;
}

double normal_upper_tail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

double green_z(int64_t green, int64_t n, double gamma) {
  if (n <= 0) return 0;
  return (static_cast<double>(green) - gamma * n) / std::sqrt(n * gamma * (1 - gamma));
}

std::string GreenCounter::window_key(std::span<const int32_t> context, int32_t token) const {
  const size_t h = static_cast<size_t>(wm_.params().context);
  std::string k(4 * (h + 1), '\0');
  std::memcpy(k.data(), context.data() + context.size() - h, 4 * h);
  std::memcpy(k.data() + 4 * h, &token, 4);
  return k;
}

void GreenCounter::add_one(std::span<const int32_t> context, int32_t token) {
  if (context.size() < static_cast<size_t>(wm_.params().context)) return;
  auto key = window_key(context, token);
  if (excluded_windows_.count(key)) {
    ++excluded_;
    return;
  }
  if (!seen_.insert(std::move(key)).second) {
    ++repeated_;
    return;
  }
  ++scored_;
  green_ += wm_.is_green(context, token);
}

void GreenCounter::add(std::span<const int32_t> ids, size_t from) {
  for (size_t i = std::max<size_t>(from, wm_.params().context); i < ids.size(); ++i)
    add_one(ids.subspan(0, i), ids[i]);
}

void GreenCounter::exclude(std::span<const int32_t> ids) {
  const size_t h = static_cast<size_t>(wm_.params().context);
  for (size_t i = h; i < ids.size(); ++i) excluded_windows_.insert(window_key(ids.subspan(0, i), ids[i]));
}

double GreenCounter::z() const { return green_z(green_, scored_, wm_.params().gamma); }
double GreenCounter::p_value() const { return scored_ > 0 ? normal_upper_tail(z()) : 1.0; }

}  // namespace lineage::protect
