// Fast non-cryptographic hashing for sampling decisions and sketches: splitmix64 (Steele, Lea &
// Flood 2014, as in Vigna's xoshiro family) and FNV-1a over bytes, finished with splitmix64's mixer.
// For content hashes that are recorded (provenance, caches) use core/hash.h (SHA-256).
#pragma once

#include <cstdint>
#include <string_view>

namespace lineage {

// splitmix64 of x: the generator's output for state x (state advanced by the golden gamma first).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// 64-bit FNV-1a of the bytes, mixed so that every output bit depends on every input bit.
inline uint64_t hash_bytes(std::string_view s, uint64_t seed = 0) {
  uint64_t h = 1469598103934665603ULL ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return splitmix64(h);
}

}  // namespace lineage
