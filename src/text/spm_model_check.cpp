// What a SentencePiece .model must satisfy before libsentencepiece reads it (see
// tokenizer_formats.h). The protobuf wire format is walked by hand (Debian ships no
// sentencepiece_model.pb.h): ModelProto field 3 is normalizer_spec and 5 denormalizer_spec, and in
// a NormalizerSpec field 2 is precompiled_charsmap (sentencepiece_model.proto).
//
// A darts-clone unit (Yata's double array, darts-clone 0.32) is a uint32: bits 0-7 and 31 the
// label (a leaf's has bit 31 set, so no byte matches it), bit 8 "has a leaf", bits 10-31 the offset,
// shifted left by 8 when bit 9 is set; a leaf's value is bits 0-30. A prefix search starts at
// position offset(unit[0]); for each input byte c it reads unit[pos ^ c], stops unless that unit's
// label is c, moves to pos ^ c ^ offset, and there reads the value when the unit has a leaf. Any
// byte may come next, so a reachable position must keep all 256 children it can XOR to in range.
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "lineage/core/error.h"
#include "lineage/text/tokenizer_formats.h"

namespace lineage::text {

namespace {

struct Wire {
  std::string_view bytes;
  size_t at = 0;
  const std::string& source;
  const char* where;

  bool done() const { return at >= bytes.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at >= bytes.size()) fail("SentencePiece model '{}': {} ends inside a varint at byte {}", source, where, at);
      auto b = static_cast<unsigned char>(bytes[at++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("SentencePiece model '{}': {} holds a varint longer than 10 bytes at byte {}", source, where, at);
  }
  // One field: its number, and for length-delimited ones (wire type 2) the bytes.
  std::pair<uint64_t, std::string_view> field() {
    size_t start = at;
    uint64_t key = varint(), number = key >> 3;
    std::string_view payload;
    switch (key & 7) {
      case 0: varint(); break;
      case 1: skip(8, start); break;
      case 5: skip(4, start); break;
      case 2: {
        uint64_t n = varint();
        if (n > bytes.size() - at)
          fail("SentencePiece model '{}': field {} of the {} at byte {} claims {} bytes, {} are left", source, number, where,
               start, n, bytes.size() - at);
        payload = bytes.substr(at, n);
        at += n;
        break;
      }
      default:
        fail("SentencePiece model '{}': field {} of the {} at byte {} has wire type {} (a protobuf ModelProto uses 0, 1, 2 "
             "and 5)", source, number, where, start, key & 7);
    }
    return {number, payload};
  }
  void skip(size_t n, size_t start) {
    if (n > bytes.size() - at) fail("SentencePiece model '{}': the {} ends inside the field at byte {}", source, where, start);
    at += n;
  }
};

uint32_t unit_at(std::string_view trie, size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(trie.data()) + 4 * i;
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}
uint32_t offset_of(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
bool has_leaf(uint32_t u) { return (u >> 8) & 1; }
uint32_t label_of(uint32_t u) { return u & ((1u << 31) | 0xFFu); }

void check_charsmap(std::string_view blob, const std::string& source, const char* spec) {
  if (blob.empty()) return;  // no rules: the library does not build a trie
  auto bad = [&](const std::string& what) {
    fail("SentencePiece model '{}': the {}'s precompiled_charsmap is not a valid rule set ({}); the model is refused "
         "before the library reads it", source, spec, what);
  };
  if (blob.size() <= 4) bad(fmt::format("{} bytes, fewer than a trie size and a trie", blob.size()));
  const uint32_t trie_bytes = static_cast<uint32_t>(static_cast<unsigned char>(blob[0])) |
                              static_cast<uint32_t>(static_cast<unsigned char>(blob[1])) << 8 |
                              static_cast<uint32_t>(static_cast<unsigned char>(blob[2])) << 16 |
                              static_cast<uint32_t>(static_cast<unsigned char>(blob[3])) << 24;
  if (trie_bytes > blob.size() - 4)
    bad(fmt::format("the trie claims {} bytes of {}", trie_bytes, blob.size() - 4));
  const std::string_view trie = blob.substr(4, trie_bytes), normalized = blob.substr(4 + trie_bytes);
  const size_t units = trie.size() / 4;
  if (units == 0) bad("the trie has no units");
  std::vector<size_t> todo{offset_of(unit_at(trie, 0))};
  std::unordered_set<size_t> seen{todo.back()};
  while (!todo.empty()) {
    const size_t pos = todo.back();
    todo.pop_back();
    if ((pos | 0xFF) >= units) bad(fmt::format("a node's children reach unit {} of {}", pos | 0xFF, units));
    for (uint32_t c = 0; c < 256; ++c) {
      const size_t child = pos ^ c;
      const uint32_t u = unit_at(trie, child);
      if (label_of(u) != c) continue;
      const size_t next = child ^ offset_of(u);
      if (has_leaf(u)) {
        if (next >= units) bad(fmt::format("a leaf at unit {} of {}", next, units));
        const uint32_t value = unit_at(trie, next) & 0x7FFFFFFFu;
        if (value >= normalized.size())
          bad(fmt::format("a rule's replacement starts at byte {} of {} bytes of strings", value, normalized.size()));
      }
      if (seen.insert(next).second) todo.push_back(next);
    }
  }
}

}  // namespace

void check_sentencepiece_model(std::string_view bytes, const std::string& source) {
  Wire model{bytes, 0, source, "ModelProto"};
  while (!model.done()) {
    auto [number, payload] = model.field();
    if (number != 3 && number != 5) continue;
    const char* spec = number == 3 ? "normalizer_spec" : "denormalizer_spec";
    Wire inner{payload, 0, source, spec};
    while (!inner.done()) {
      auto [n, charsmap] = inner.field();
      if (n == 2) check_charsmap(charsmap, source, spec);
    }
  }
}

}  // namespace lineage::text
