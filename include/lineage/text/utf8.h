// Small UTF-8 helpers: sequence lengths and validity, used by the tokenizers and by the server
// (which cuts streamed text only at character boundaries).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lineage::text::utf8 {

// Length of the sequence starting with byte `c` (1 for invalid lead bytes, so text always advances).
inline size_t seq_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// Length of the well-formed UTF-8 sequence at s[i], or 0 when the bytes there are not one.
inline size_t valid_seq_len(std::string_view s, size_t i) {
  unsigned char c = s[i];
  size_t n = seq_len(c);
  if (n == 1) return c < 0x80 ? 1 : 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  return n;
}

inline std::string encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// The code point at s[i] (advancing i past it); a lead byte's bits alone where the sequence is cut.
inline uint32_t decode(std::string_view s, size_t& i) {
  unsigned char c = s[i];
  size_t n = seq_len(c) < s.size() - i ? seq_len(c) : s.size() - i;
  uint32_t cp = (n == 1) ? c : (n == 2) ? (c & 0x1F) : (n == 3) ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

inline const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, from.size(), from) == 0) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

// "<0x41>" -> 0x41; -1 when `piece` is not a byte token.
inline int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(piece[3]), lo = hex(piece[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

}  // namespace lineage::text::utf8
