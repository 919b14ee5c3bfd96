// SHA-256 over libsodium's crypto_hash_sha256.
#include "lineage/core/hash.h"

#include <sodium.h>

#include <algorithm>
#include <fstream>
#include <vector>

#include "lineage/core/error.h"

namespace lineage {

static_assert(sizeof(crypto_hash_sha256_state) <= 256, "Sha256::state_ too small");

Sha256::Sha256() {
  if (sodium_init() < 0) fail("libsodium failed to initialise");
  crypto_hash_sha256_init(reinterpret_cast<crypto_hash_sha256_state*>(state_));
}

void Sha256::update(const void* bytes, size_t n) {
  crypto_hash_sha256_update(reinterpret_cast<crypto_hash_sha256_state*>(state_),
                            static_cast<const unsigned char*>(bytes), n);
}

Digest Sha256::finish() {
  Digest d;
  crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_), d.data());
  return d;
}

Digest sha256(std::string_view bytes) {
  Sha256 h;
  h.update(bytes);
  return h.finish();
}

static void hash_file_into(Sha256& h, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}' to hash it", path.string());
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) fail("error while reading '{}' to hash it", path.string());
}

Digest sha256_file(const std::filesystem::path& path) {
  Sha256 h;
  if (std::filesystem::is_directory(path)) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::recursive_directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      // The relative name is part of the content: renaming a shard changes the folder's hash.
      h.update(std::filesystem::relative(f, path).generic_string());
      h.update("\0", 1);
      hash_file_into(h, f);
    }
  } else {
    hash_file_into(h, path);
  }
  return h.finish();
}

std::string hex(const Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t b : d) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

Digest parse_hex_digest(std::string_view s, std::string_view what) {
  if (s.size() != 64) fail("{}: expected 64 hex digits, found {} characters", what, s.size());
  Digest d;
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail("{}: '{}' is not a hex digit", what, c);
  };
  for (size_t i = 0; i < 32; ++i) d[i] = static_cast<uint8_t>(nibble(s[2 * i]) << 4 | nibble(s[2 * i + 1]));
  return d;
}

}  // namespace lineage
