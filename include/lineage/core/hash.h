// Content hashes for provenance and cache headers: SHA-256 (libsodium) of bytes, files and tensors,
// written as lowercase hex. Files are hashed in streamed chunks so a large model needs no copy.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace lineage {

using Digest = std::array<uint8_t, 32>;

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  void update(const void* bytes, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  Digest finish();

 private:
  alignas(64) unsigned char state_[256];  // crypto_hash_sha256_state (opaque; size checked in .cpp)
};

Digest sha256(std::string_view bytes);
Digest sha256_file(const std::filesystem::path& path);  // a folder: its files in name order
std::string hex(const Digest& d);
// Parses 64 hex digits; fails naming `what`.
Digest parse_hex_digest(std::string_view s, std::string_view what);

}  // namespace lineage
