// Hugging Face tokenizer.json text rules applied (see text_rules.h): normalizers through ICU,
// pre-tokenizer splits through PCRE2, decoders over token strings.
#include "lineage/text/text_rules.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "lineage/core/error.h"
#include "lineage/text/utf8.h"
#include "pcre_regex.h"

namespace lineage::text {

namespace {

// GPT-2's reversible map from bytes to printable code points (printable Latin-1 maps to itself).
struct ByteMap {
  std::string to_text[256];
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteMap() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? b : next++;
      to_text[b] = utf8::encode(cp);
      to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// Compiled patterns, shared: the same few expressions serve every call.
const Regex& regex_for(const std::string& pattern) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::unique_ptr<Regex>> cache;
  std::lock_guard lock(mu);
  auto& slot = cache[pattern];
  if (!slot) slot = std::make_unique<Regex>(pattern, "text rules");
  return *slot;
}

// Matches of a String or Regex pattern as [begin, end) byte ranges (a String matches literally).
std::vector<std::pair<size_t, size_t>> find_matches(const Pattern& p, std::string_view text) {
  if (p.regex) return regex_for(p.text).find_all(text);
  std::vector<std::pair<size_t, size_t>> out;
  if (p.text.empty()) return out;
  for (size_t at = text.find(p.text); at != std::string_view::npos; at = text.find(p.text, at + p.text.size()))
    out.emplace_back(at, at + p.text.size());
  return out;
}

// Runs of well-formed UTF-8 and the single bytes between them, in order; `valid` says which.
struct Run {
  std::string_view text;
  bool valid;
};
std::vector<Run> utf8_runs(std::string_view s) {
  std::vector<Run> runs;
  size_t start = 0, i = 0;
  while (i < s.size()) {
    size_t n = utf8::valid_seq_len(s, i);
    if (n > 0) {
      i += n;
      continue;
    }
    if (i > start) runs.push_back({s.substr(start, i - start), true});
    runs.push_back({s.substr(i, 1), false});
    start = ++i;
  }
  if (start < s.size()) runs.push_back({s.substr(start), true});
  return runs;
}

// Applies `f` to each well-formed run of `s`, keeping the other bytes as they are.
template <typename F>
std::string per_valid_run(std::string_view s, F f) {
  std::string out;
  for (const Run& r : utf8_runs(s)) out += r.valid ? f(r.text) : std::string(r.text);
  return out;
}

std::string icu_normalize(Normalizer::Kind kind, std::string_view s) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = kind == Normalizer::Kind::kNfc    ? icu::Normalizer2::getNFCInstance(err)
                              : kind == Normalizer::Kind::kNfd  ? icu::Normalizer2::getNFDInstance(err)
                              : kind == Normalizer::Kind::kNfkc ? icu::Normalizer2::getNFKCInstance(err)
                                                                : icu::Normalizer2::getNFKDInstance(err);
  if (U_FAILURE(err)) fail("ICU normalizer unavailable: {}", u_errorName(err));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  icu::UnicodeString out = n->normalize(u, err);
  if (U_FAILURE(err)) fail("ICU normalization failed: {}", u_errorName(err));
  std::string r;
  out.toUTF8String(r);
  return r;
}

std::string lowercase(std::string_view s) {  // full Unicode lowercase mapping, no locale (Rust's to_lowercase)
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  u.toLower(icu::Locale::getRoot());
  std::string r;
  u.toUTF8String(r);
  return r;
}

bool is_white_space(std::string_view s, size_t i, size_t& len) {  // the code point at i, if well-formed
  len = utf8::valid_seq_len(s, i);
  if (len == 0) return false;
  size_t j = i;
  return u_isUWhiteSpace(static_cast<UChar32>(utf8::decode(s, j)));
}

std::string strip(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size(), len = 0;
  if (left)
    while (b < e && is_white_space(s, b, len)) b += len;
  if (right) {
    while (e > b) {
      size_t start = e - 1;  // back to the lead byte of the last code point
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && e - start < 4) --start;
      if (!is_white_space(s, start, len) || start + len != e) break;
      e = start;
    }
  }
  return std::string(s.substr(b, e - b));
}

std::string replace(std::string_view s, const Pattern& p, const std::string& content) {
  std::string out;
  size_t last = 0;
  for (auto [b, e] : find_matches(p, s)) {
    out.append(s.substr(last, b - last));
    out += content;
    last = e;
  }
  out.append(s.substr(last));
  return out;
}

std::string apply_normalizer(const Normalizer& n, std::string_view s) {
  switch (n.kind) {
    case Normalizer::Kind::kNfc:
    case Normalizer::Kind::kNfd:
    case Normalizer::Kind::kNfkc:
    case Normalizer::Kind::kNfkd: return per_valid_run(s, [&](std::string_view r) { return icu_normalize(n.kind, r); });
    case Normalizer::Kind::kLowercase: return per_valid_run(s, lowercase);
    case Normalizer::Kind::kStrip: return strip(s, n.left, n.right);
    case Normalizer::Kind::kReplace:
      return n.pattern.regex ? per_valid_run(s, [&](std::string_view r) { return replace(r, n.pattern, n.content); })
                             : replace(s, n.pattern, n.content);
    case Normalizer::Kind::kPrepend: return s.empty() ? std::string() : n.content + std::string(s);
  }
  return std::string(s);
}

// A piece during pre-tokenization: its text, whether it starts the input (Metaspace "first"), and
// whether it is a byte that is not UTF-8 (no pattern runs on it).
struct Piece {
  std::string text;
  bool at_origin = false;
  bool opaque = false;
};

// The library's SplitDelimiterBehavior over matched / unmatched segments of one piece.
std::vector<Piece> split_piece(const Piece& p, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior how,
                               bool invert) {
  struct Seg {
    size_t b, e;
    bool match;
  };
  std::vector<Seg> segs;
  size_t last = 0;
  for (auto [b, e] : matches) {
    if (b > last) segs.push_back({last, b, false});
    segs.push_back({b, e, true});
    last = e;
  }
  if (last < p.text.size()) segs.push_back({last, p.text.size(), false});
  if (invert)
    for (auto& s : segs) s.match = !s.match;
  std::vector<Seg> out;
  bool previous_match = false;
  switch (how) {
    case SplitBehavior::kRemoved:
      for (const auto& s : segs)
        if (!s.match) out.push_back(s);
      break;
    case SplitBehavior::kIsolated: out = segs; break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& s : segs) {
        if (s.match && !previous_match && !out.empty()) out.back().e = s.e;
        else out.push_back(s);
        previous_match = s.match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->match && !previous_match && !out.empty()) out.back().b = it->b;
        else out.push_back(*it);
        previous_match = it->match;
      }
      std::reverse(out.begin(), out.end());
      break;
    case SplitBehavior::kContiguous:
      for (const auto& s : segs) {
        if (s.match && previous_match && !out.empty()) out.back().e = s.e;
        else out.push_back(s);
        previous_match = s.match;
      }
      break;
  }
  std::vector<Piece> pieces;
  for (const auto& s : out)
    if (s.e > s.b) pieces.push_back({p.text.substr(s.b, s.e - s.b), p.at_origin && s.b == 0, false});
  return pieces;
}

const std::string kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

std::vector<Piece> apply_pre_tokenizer(const PreTokenizer& t, const Piece& p) {
  using K = PreTokenizer::Kind;
  if (p.opaque) {  // a byte that is not UTF-8: only ByteLevel's mapping reaches it
    if (t.kind != K::kByteLevel) return {p};
    return {{byte_to_text(static_cast<unsigned char>(p.text[0])), p.at_origin, true}};
  }
  switch (t.kind) {
    case K::kSplit: return split_piece(p, find_matches(t.pattern, p.text), t.behavior, t.invert);
    case K::kDigits:
      return split_piece(p, find_matches({"\\p{N}", true}, p.text),
                         t.individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
    case K::kMetaspace: {
      Piece q{utf8::replace_all(p.text, " ", t.replacement), p.at_origin, false};
      bool starts = q.text.compare(0, t.replacement.size(), t.replacement) == 0;
      if (!starts && (t.prepend == PrependScheme::kAlways || (t.prepend == PrependScheme::kFirst && p.at_origin)))
        q.text = t.replacement + q.text;
      if (!t.split) return {q};
      return split_piece(q, find_matches({t.replacement, false}, q.text), SplitBehavior::kMergedWithNext, false);
    }
    case K::kByteLevel: {
      Piece q = p;
      if (t.add_prefix_space && q.text.rfind(' ', 0) != 0) q.text = " " + q.text;
      std::vector<Piece> parts = t.use_regex ? split_piece(q, find_matches({kGpt2Pattern, true}, q.text),
                                                           SplitBehavior::kIsolated, false)
                                             : std::vector<Piece>{q};
      for (auto& part : parts) {
        std::string mapped;
        for (unsigned char c : part.text) mapped += byte_to_text(c);
        part.text = std::move(mapped);  // later steps see GPT-2's code points, as the library's do
      }
      return parts;
    }
  }
  return {p};
}

// Token strings of the form <0xNN>: the byte, else -1.
int byte_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1; };
  int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Strips up to `n` leading (or trailing) copies of the character `c` from `t`.
void strip_chars(std::string& t, const std::string& c, int start, int stop) {
  if (c.empty()) return;
  for (int k = 0; k < start && t.compare(0, c.size(), c) == 0; ++k) t.erase(0, c.size());
  for (int k = 0; k < stop && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0; ++k)
    t.erase(t.size() - c.size());
}

void apply_decoder(const Decoder& d, std::vector<std::string>& tokens, bool first, bool fused) {
  using K = Decoder::Kind;
  switch (d.kind) {
    case K::kByteLevel:
      for (auto& t : tokens) {  // every character mapped back to its byte, or the token as it is
        std::string bytes;
        bool all = true;
        for (size_t i = 0; i < t.size() && all;) {
          int b = text_to_byte(utf8::decode(t, i));
          if (b < 0) all = false;
          else bytes += static_cast<char>(b);
        }
        if (all) t = std::move(bytes);
      }
      break;
    case K::kReplace:
      for (auto& t : tokens) t = replace(t, d.pattern, d.content);
      break;
    case K::kByteFallback:
      for (auto& t : tokens)
        if (int b = byte_token(t); b >= 0) t = std::string(1, static_cast<char>(b));
      break;
    case K::kFuse: {
      std::string all;
      for (const auto& t : tokens) all += t;
      tokens = {all};
      break;
    }
    case K::kStrip:
      // After Fuse the text is one token: its start is the text's start.
      if (fused) {
        if (first && !tokens.empty()) strip_chars(tokens[0], d.content, d.start, 0);
      } else {
        for (auto& t : tokens) strip_chars(t, d.content, d.start, d.stop);
      }
      break;
    case K::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = utf8::replace_all(tokens[i], d.replacement, " ");
        if (i == 0 && first && d.prepend != PrependScheme::kNever && tokens[i].rfind(' ', 0) == 0) tokens[i].erase(0, 1);
      }
      break;
  }
}

}  // namespace

bool TextRules::has_byte_level() const {
  for (const auto& p : pre_tokenizers)
    if (p.kind == PreTokenizer::Kind::kByteLevel) return true;
  return false;
}

const std::string& byte_to_text(unsigned char b) { return byte_map().to_text[b]; }

int text_to_byte(uint32_t cp) {
  const auto& m = byte_map().to_byte;
  auto it = m.find(cp);
  return it == m.end() ? -1 : it->second;
}

std::string normalize(const std::vector<Normalizer>& steps, std::string_view text) {
  std::string s(text);
  for (const auto& n : steps) s = apply_normalizer(n, s);
  return s;
}

std::vector<std::string> pre_tokenize(const std::vector<PreTokenizer>& steps, std::string_view text, bool at_start) {
  std::vector<Piece> pieces;
  bool origin = at_start;
  for (const Run& r : utf8_runs(text)) {
    pieces.push_back({std::string(r.text), origin, !r.valid});
    origin = false;
  }
  for (const auto& step : steps) {
    std::vector<Piece> next;
    for (const auto& p : pieces)
      for (auto& q : apply_pre_tokenizer(step, p)) next.push_back(std::move(q));
    pieces.swap(next);
  }
  std::vector<std::string> out;
  for (auto& p : pieces)
    if (!p.text.empty()) out.push_back(std::move(p.text));
  return out;
}

std::string decode_tokens(const std::vector<Decoder>& steps, std::vector<std::string> tokens, bool first) {
  bool fused = false;
  for (const auto& d : steps) {
    apply_decoder(d, tokens, first, fused);
    fused = fused || d.kind == Decoder::Kind::kFuse;
  }
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

}  // namespace lineage::text
