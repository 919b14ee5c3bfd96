// The text rules of a Hugging Face tokenizer.json — its normalizer, pre-tokenizer and decoder — as
// typed steps, applied as the `tokenizers` library defines them (docs of tokenizers.normalizers,
// .pre_tokenizers, .decoders). Supported, and anything else refused by name when read:
//   normalizers     NFC, NFD, NFKC, NFKD (ICU), Lowercase, Strip, Replace, Prepend, Sequence
//   pre-tokenizers  ByteLevel, Split (all five delimiter behaviours, invert), Digits, Metaspace, Sequence
//   decoders        ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence
// Text is bytes: a run that is not well-formed UTF-8 passes through the normalizers unchanged and
// is a piece of its own for the pre-tokenizers (the library only ever sees valid strings). Decoders
// keep bytes as they are where the library would write U+FFFD, so text streams token by token.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lineage::text {

struct Pattern {  // {"String": s} or {"Regex": r}
  std::string text;
  bool regex = false;
};

struct Normalizer {
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kStrip, kReplace, kPrepend };
  Kind kind = Kind::kNfc;
  bool left = false, right = false;  // Strip: strip_left, strip_right (Unicode White_Space)
  Pattern pattern;                   // Replace
  std::string content;               // Replace: the replacement; Prepend: what to put first
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizer {
  enum class Kind { kByteLevel, kSplit, kDigits, kMetaspace };
  Kind kind = Kind::kByteLevel;
  bool add_prefix_space = false, use_regex = true;  // ByteLevel
  Pattern pattern;                                  // Split
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool individual_digits = false;                   // Digits
  std::string replacement = "\xE2\x96\x81";         // Metaspace
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;
};

struct Decoder {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind = Kind::kByteLevel;
  Pattern pattern;                            // Replace
  std::string content;                        // Replace: the replacement; Strip: the character
  int start = 0, stop = 0;                    // Strip: how many at most at each end
  std::string replacement = "\xE2\x96\x81";   // Metaspace
  PrependScheme prepend = PrependScheme::kAlways;
};

struct TextRules {
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<Decoder> decoders;
  bool empty() const { return normalizers.empty() && pre_tokenizers.empty() && decoders.empty(); }
  bool has_byte_level() const;  // a ByteLevel pre-tokenizer maps bytes to GPT-2's printable code points
};

// The text after every normalizer, in order.
std::string normalize(const std::vector<Normalizer>& steps, std::string_view text);

// The pieces the model sees, after every pre-tokenizer in order (empty pieces dropped). `at_start`:
// the text begins the input (Metaspace's "first" scheme prepends only there).
std::vector<std::string> pre_tokenize(const std::vector<PreTokenizer>& steps, std::string_view text, bool at_start = true);

// The decoders over a sequence of token strings, as the library's decode_chain; `first`: these are
// the first tokens of the text (Metaspace and a Strip after Fuse act there only). Streaming calls
// it with one token at a time.
std::string decode_tokens(const std::vector<Decoder>& steps, std::vector<std::string> tokens, bool first);

// GPT-2's byte <-> printable code point map, as UTF-8 (ByteLevel).
const std::string& byte_to_text(unsigned char b);
// The byte a code point stands for, or -1 when it is not one of the 256.
int text_to_byte(uint32_t cp);

}  // namespace lineage::text
