// API keys for `lineage serve`. The key file holds, per key, an id, the BLAKE2b-256 hash of the
// secret (libsodium's crypto_generichash) and a token quota; the secret itself is shown once, when
// the key is made, and never stored. A presented key is hashed and compared with every stored hash
// in constant time (sodium_memcmp), so neither the comparison nor the search leaks where it differs.
//
//   {"keys": [{"id": "alice", "hash": "<64 hex>", "quota_tokens": 1000000, "rpm": 60, "tpm": 40000}]}
//
// quota_tokens counts prompt + completion tokens over the life of the key (0: unlimited); `lineage
// serve` reads what a key already used from its request log, so a restart does not reset it.
// rpm and tpm are rate limits (requests and tokens per minute; 0 or absent: none). Every number is
// a whole number in [0, 2^63): 1e19, 2.5 or -1 are refused naming the key and the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lineage::serve {

struct ApiKey {
  std::string id;
  std::string hash_hex;
  int64_t quota_tokens = 0;
  int64_t rpm = 0;  // requests per minute; 0: no limit
  int64_t tpm = 0;  // tokens (prompt + completion) per minute; 0: no limit
};

class KeyStore {
 public:
  KeyStore() = default;
  // Reads a key file; fails naming the file and the entry that is malformed.
  static KeyStore load(const std::string& path);
  // Adds a key with a fresh random secret to `path` (created when absent; written atomically) and
  // returns the secret ("lin-" + 43 base64url characters). Fails when `id` is taken.
  static std::string add_key(const std::string& path, const std::string& id, int64_t quota_tokens, int64_t rpm = 0,
                             int64_t tpm = 0);

  // The key whose hash matches `secret`, if any.
  std::optional<ApiKey> find(std::string_view secret) const;
  bool empty() const { return keys_.empty(); }
  const std::vector<ApiKey>& keys() const { return keys_; }

 private:
  std::vector<ApiKey> keys_;
  std::vector<std::vector<unsigned char>> hashes_;
};

std::string hash_key(std::string_view secret);  // hex BLAKE2b-256

}  // namespace lineage::serve
