// The keyed green-list watermark of Kirchenbauer et al. (2023), "A Watermark for Large Language
// Models": before each token is sampled, a keyed pseudo-random function of the key and the previous
// h tokens marks a fraction γ of the vocabulary green, and δ is added to the green logits. A reader
// with the key counts green tokens; text written without the key is green with probability γ per
// token, so the count gives a z-score and a p-value.
//
// Here the green test is per (context, token): green iff SipHash-2-4 (libsodium's crypto_shorthash)
// of the h context ids and the token id, under a 128-bit subkey derived from the secret, falls below
// γ·2⁶⁴. Every distinct (context, token) window is then an independent Bernoulli(γ) draw for anyone
// without the key, which is what the detector's z-test assumes; a token is scored once per window.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

namespace lineage::protect {

// A 32-byte secret, stored as 64 hex digits in a file only its owner may read (like an ssh key):
// reading a file that the group or others can read fails. Never logged, never sent.
class WatermarkKey {
 public:
  static WatermarkKey read(const std::filesystem::path& path);
  static WatermarkKey random();
  // Writes the key to `path` (mode 0600, atomically); fails if `path` exists.
  void write(const std::filesystem::path& path) const;
  // A short public fingerprint (first 8 bytes of BLAKE2b of the key), safe to log.
  std::string fingerprint() const;
  const std::array<uint8_t, 32>& bytes() const { return bytes_; }

 private:
  std::array<uint8_t, 32> bytes_{};
};

struct WatermarkParams {
  double gamma = 0.25;  // green share of the vocabulary (the authors' recommended setting)
  double delta = 2.0;   // logit bias on green tokens
  int context = 1;      // h: previous tokens that seed the green list (the paper's "LeftHash", h=1)
};

void validate(const WatermarkParams& p);

class Watermark {
 public:
  Watermark(const WatermarkKey& key, const WatermarkParams& params);

  const WatermarkParams& params() const { return params_; }
  std::string fingerprint() const { return fingerprint_; }

  // Is `token` green after `context` (its last h ids are used; fewer than h: not scorable)?
  bool is_green(std::span<const int32_t> context, int32_t token) const;
  // Adds δ to the green entries of `logits` (V) for the next token after `context`. Contexts
  // shorter than h are left alone (there is nothing to seed the list with).
  void bias(std::span<const int32_t> context, std::span<float> logits) const;
  // The green mask (V) of one context: 1 where green.
  std::vector<uint8_t> green_mask(std::span<const int32_t> context, int64_t vocab_size) const;

 private:
  uint64_t prf(std::span<const int32_t> window, int32_t token) const;
  WatermarkParams params_;
  std::array<uint8_t, 16> subkey_{};  // crypto_shorthash key derived from the secret
  uint64_t threshold_ = 0;             // green iff prf < threshold
  std::string fingerprint_;
};

// Counts green tokens over one or many token sequences, each (context, token) window once.
// `exclude` windows (e.g. those in our own watermarked prompts) are never scored.
class GreenCounter {
 public:
  explicit GreenCounter(const Watermark& wm) : wm_(wm) {}
  // Scores tokens [from, ids.size()) of `ids`; ids before `from` serve only as context.
  void add(std::span<const int32_t> ids, size_t from = 0);
  // Scores one token after the given context (its last h ids).
  void add_one(std::span<const int32_t> context, int32_t token);
  // Marks the windows of `ids` as never to be scored.
  void exclude(std::span<const int32_t> ids);

  int64_t scored() const { return scored_; }
  int64_t green() const { return green_; }
  int64_t repeated() const { return repeated_; }
  int64_t excluded() const { return excluded_; }
  double z() const;
  double p_value() const;

 private:
  std::string window_key(std::span<const int32_t> context, int32_t token) const;
  const Watermark& wm_;
  std::unordered_set<std::string> seen_, excluded_windows_;
  int64_t scored_ = 0, green_ = 0, repeated_ = 0, excluded_ = 0;
};

// One-sided test of "green share > γ" from counts: z = (g − γn) / √(nγ(1−γ)).
double green_z(int64_t green, int64_t n, double gamma);
// The exact upper tail of the standard normal, 0.5·erfc(z/√2) (accurate far into the tail).
double normal_upper_tail(double z);

}  // namespace lineage::protect
