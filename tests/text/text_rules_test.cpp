// tokenizer.json text rules checked against what Lineage did not write: the Unicode Consortium's
// NormalizationTest.txt and UnicodeData.txt (Debian's unicode-data), and the examples the Hugging
// Face `tokenizers` documentation gives for each step; then whole tokenizer.json files that use
// them (a Qwen2-style NFC + Split + ByteLevel file, Digits, Metaspace) and the names refused.
#include "lineage/text/text_rules.h"

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lineage/core/error.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/tokenizer_formats.h"
#include "lineage/text/utf8.h"
#include "test_util.h"

namespace lineage::text {
namespace {

using nlohmann::json;
using testing::TempDir;
using Pieces = std::vector<std::string>;

std::string from_hex_list(const std::string& field) {  // "0044 0307" -> UTF-8
  std::istringstream in(field);
  std::string out, hex;
  while (in >> hex) out += utf8::encode(static_cast<uint32_t>(std::stoul(hex, nullptr, 16)));
  return out;
}

Normalizer norm(Normalizer::Kind k) {
  Normalizer n;
  n.kind = k;
  return n;
}

// Unicode's conformance test for the four normalization forms: every line, every column.
TEST(Normalizers, PassUnicodesNormalizationTest) {
  const char* file = "/usr/share/unicode/NormalizationTest.txt.bz2";
  if (!std::filesystem::exists(file)) GTEST_SKIP() << file << " is missing (Debian package unicode-data, scripts/setup.sh)";
  std::unique_ptr<FILE, int (*)(FILE*)> in(popen((std::string("bzcat ") + file).c_str(), "r"), pclose);
  ASSERT_TRUE(in);
  using K = Normalizer::Kind;
  auto nfc = [](const std::string& s) { return normalize({norm(K::kNfc)}, s); };
  auto nfd = [](const std::string& s) { return normalize({norm(K::kNfd)}, s); };
  auto nfkc = [](const std::string& s) { return normalize({norm(K::kNfkc)}, s); };
  auto nfkd = [](const std::string& s) { return normalize({norm(K::kNfkd)}, s); };
  char buf[4096];
  int lines = 0, failures = 0;
  while (fgets(buf, sizeof buf, in.get())) {
    std::string line(buf);
    if (line.empty() || line[0] == '#' || line[0] == '@') continue;
    std::vector<std::string> c;
    std::istringstream fields(line);
    std::string f;
    for (int i = 0; i < 5 && std::getline(fields, f, ';'); ++i) c.push_back(from_hex_list(f));
    if (c.size() < 5) continue;
    ++lines;
    bool ok = nfc(c[0]) == c[1] && nfc(c[1]) == c[1] && nfc(c[2]) == c[1] && nfc(c[3]) == c[3] && nfc(c[4]) == c[3] &&
              nfd(c[0]) == c[2] && nfd(c[1]) == c[2] && nfd(c[2]) == c[2] && nfd(c[3]) == c[4] && nfd(c[4]) == c[4];
    for (const auto& x : c) ok = ok && nfkc(x) == c[3] && nfkd(x) == c[4];
    if (!ok && ++failures <= 5) ADD_FAILURE() << "NormalizationTest line: " << line;
  }
  EXPECT_GT(lines, 19000);
  EXPECT_EQ(failures, 0);
}

// Lowercase is the full mapping without locale (Rust's str::to_lowercase, which the library uses):
// UnicodeData.txt's simple mapping wherever SpecialCasing.txt has no unconditional entry, plus
// SpecialCasing's İ and the final-sigma rule.
TEST(Normalizers, LowercaseFollowsUnicodeData) {
  const char* file = "/usr/share/unicode/UnicodeData.txt";
  if (!std::filesystem::exists(file)) GTEST_SKIP() << file << " is missing (Debian package unicode-data)";
  std::ifstream in(file);
  std::string line;
  int checked = 0;
  const std::vector<Normalizer> lower = {norm(Normalizer::Kind::kLowercase)};
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    std::string x;
    while (std::getline(fields, x, ';')) f.push_back(x);
    if (f.size() < 14 || f[13].empty()) continue;
    uint32_t cp = std::stoul(f[0], nullptr, 16);
    if (cp == 0x130) continue;  // SpecialCasing: İ -> i + combining dot
    EXPECT_EQ(normalize(lower, utf8::encode(cp)), from_hex_list(f[13])) << "U+" << f[0];
    ++checked;
  }
  EXPECT_GT(checked, 1000);
  EXPECT_EQ(normalize(lower, "\xC4\xB0"), "i\xCC\x87");                        // İ
  EXPECT_EQ(normalize(lower, "ΣΑΣ ΟΔΟΣ"), "σας οδος");                         // final sigma
}

TEST(Normalizers, StripReplacePrependAndSequence) {
  Normalizer strip = norm(Normalizer::Kind::kStrip);
  strip.left = strip.right = true;
  EXPECT_EQ(normalize({strip}, "\u3000 \t hi there \n\u00A0"), "hi there");  // Unicode White_Space both ends
  strip.left = false;
  EXPECT_EQ(normalize({strip}, "  hi  "), "  hi");
  Normalizer rep = norm(Normalizer::Kind::kReplace);
  rep.pattern = {"\\s+", true};
  rep.content = " ";
  EXPECT_EQ(normalize({rep}, "a \t\n b"), "a b");
  Normalizer pre = norm(Normalizer::Kind::kPrepend);
  pre.content = "\xE2\x96\x81";
  Normalizer spaces = norm(Normalizer::Kind::kReplace);
  spaces.pattern = {" ", false};
  spaces.content = "\xE2\x96\x81";
  EXPECT_EQ(normalize({pre, spaces}, "Hey friend"), "▁Hey▁friend");  // Llama 2's normalizer
  EXPECT_EQ(normalize({pre, spaces}, ""), "");                        // Prepend leaves empty text empty
  // Bytes that are not UTF-8 pass through untouched, around normalized text.
  EXPECT_EQ(normalize({norm(Normalizer::Kind::kNfc)}, std::string("e\xCC\x81\xFF" "e\xCC\x81")),
            std::string("\xC3\xA9\xFF\xC3\xA9"));
}

PreTokenizer split(const std::string& pattern, bool regex, SplitBehavior b, bool invert = false) {
  PreTokenizer p;
  p.kind = PreTokenizer::Kind::kSplit;
  p.pattern = {pattern, regex};
  p.behavior = b;
  p.invert = invert;
  return p;
}

// The library's documented example for SplitDelimiterBehavior, splitting on '-'.
TEST(PreTokenizers, SplitBehavioursAsDocumented) {
  const std::string s = "the-final--countdown";
  EXPECT_EQ(pre_tokenize({split("-", false, SplitBehavior::kRemoved)}, s), (Pieces{"the", "final", "countdown"}));
  EXPECT_EQ(pre_tokenize({split("-", false, SplitBehavior::kIsolated)}, s),
            (Pieces{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pre_tokenize({split("-", false, SplitBehavior::kMergedWithPrevious)}, s),
            (Pieces{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pre_tokenize({split("-", false, SplitBehavior::kMergedWithNext)}, s),
            (Pieces{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pre_tokenize({split("-", false, SplitBehavior::kContiguous)}, s),
            (Pieces{"the", "-", "final", "--", "countdown"}));
  // The same through a regular expression, and inverted: the pattern names what is kept.
  EXPECT_EQ(pre_tokenize({split("-", true, SplitBehavior::kContiguous)}, s), (Pieces{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pre_tokenize({split("\\w+", true, SplitBehavior::kRemoved, true)}, "Hello, how are you?"),
            (Pieces{"Hello", "how", "are", "you"}));
}

TEST(PreTokenizers, DigitsMetaspaceAndByteLevelAsDocumented) {
  PreTokenizer digits;
  digits.kind = PreTokenizer::Kind::kDigits;
  EXPECT_EQ(pre_tokenize({digits}, "Call 123 please"), (Pieces{"Call ", "123", " please"}));
  digits.individual_digits = true;
  EXPECT_EQ(pre_tokenize({digits}, "Call 123 please"), (Pieces{"Call ", "1", "2", "3", " please"}));

  PreTokenizer meta;
  meta.kind = PreTokenizer::Kind::kMetaspace;
  EXPECT_EQ(pre_tokenize({meta}, "Hey friend!"), (Pieces{"▁Hey", "▁friend!"}));
  meta.split = false;
  EXPECT_EQ(pre_tokenize({meta}, "Hey friend!"), (Pieces{"▁Hey▁friend!"}));
  meta.prepend = PrependScheme::kFirst;
  EXPECT_EQ(pre_tokenize({meta}, "Hey friend!", /*at_start=*/false), (Pieces{"Hey▁friend!"}));
  meta.prepend = PrependScheme::kNever;
  EXPECT_EQ(pre_tokenize({meta}, "Hey friend!"), (Pieces{"Hey▁friend!"}));

  PreTokenizer bl;
  bl.kind = PreTokenizer::Kind::kByteLevel;
  bl.add_prefix_space = true;
  EXPECT_EQ(pre_tokenize({bl}, "Hello my friend, how is your day going?"),
            (Pieces{"ĠHello", "Ġmy", "Ġfriend", ",", "Ġhow", "Ġis", "Ġyour", "Ġday", "Ġgoing", "?"}));
  bl.add_prefix_space = false;
  bl.use_regex = false;
  EXPECT_EQ(pre_tokenize({bl}, "a b\n"), (Pieces{"aĠbĊ"}));
  // A byte that is not UTF-8 is its own piece, mapped like any other byte.
  EXPECT_EQ(pre_tokenize({split("\\s+", true, SplitBehavior::kRemoved), bl}, std::string("ab\xFF" "c d")),
            (Pieces{"ab", byte_to_text(0xFF), "c", "d"}));
}

Decoder dec(Decoder::Kind k) {
  Decoder d;
  d.kind = k;
  return d;
}

TEST(Decoders, ChainsAsTheLibraryDecodes) {
  // Llama 2's decoder: Replace ▁ -> ' ', ByteFallback, Fuse, Strip one leading space.
  Decoder rep = dec(Decoder::Kind::kReplace);
  rep.pattern = {"▁", false};
  rep.content = " ";
  Decoder strip = dec(Decoder::Kind::kStrip);
  strip.content = " ";
  strip.start = 1;
  const std::vector<Decoder> llama2 = {rep, dec(Decoder::Kind::kByteFallback), dec(Decoder::Kind::kFuse), strip};
  EXPECT_EQ(decode_tokens(llama2, {"▁Hey", "▁friend", "<0x21>", "▁", "<0xE2>", "<0x98>", "<0x83>"}, true), "Hey friend! ☃");
  EXPECT_EQ(decode_tokens(llama2, {"▁friend"}, false), " friend");  // streamed after the first token: space kept
  // Strip without Fuse acts on every token.
  EXPECT_EQ(decode_tokens({strip}, {" a", " b"}, true), "ab");
  Decoder meta = dec(Decoder::Kind::kMetaspace);
  EXPECT_EQ(decode_tokens({meta}, {"▁Hey", "▁friend"}, true), "Hey friend");
  meta.prepend = PrependScheme::kNever;
  EXPECT_EQ(decode_tokens({meta}, {"▁Hey", "▁friend"}, true), " Hey friend");
  EXPECT_EQ(decode_tokens({dec(Decoder::Kind::kByteLevel)}, {"ĠHello", "Ġworld", "Ċ"}, true), " Hello world\n");
}

// A byte-level vocabulary as tokenizer.json: every byte, then `extra` tokens made by `merges`.
json byte_level_json(const std::vector<std::string>& extra, const std::vector<std::string>& merges) {
  json vocab = json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) vocab[byte_to_text(static_cast<unsigned char>(b))] = id++;
  for (const auto& t : extra) vocab[t] = id++;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
          {"added_tokens", json::array({{{"id", id}, {"content", "<|endoftext|>"}, {"special", true}}})},
          {"decoder", {{"type", "ByteLevel"}}}};
}

std::unique_ptr<Tokenizer> load_json(const TempDir& tmp, const json& j, const std::string& name) {
  std::filesystem::create_directories(tmp / name);
  testing::spit(tmp / name / "tokenizer.json", j.dump());
  return load_tokenizer_file((tmp / name / "tokenizer.json").string());
}

// Qwen2's tokenizer.json declares NFC: "é" typed as e + U+0301 must give the token of "é".
TEST(HfTokenizerJson, Qwen2StyleNfcNormalizerApplies) {
  TempDir tmp;
  const std::string e_acute = byte_to_text(0xC3) + byte_to_text(0xA9);  // é, byte-mapped
  json j = byte_level_json({e_acute}, {byte_to_text(0xC3) + " " + byte_to_text(0xA9)});
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", pre_tokenizer_patterns("qwen2")[0]}}},
                           {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  auto nfc = load_json(tmp, j, "nfc");
  const std::string composed = "\xC3\xA9", decomposed = "e\xCC\x81";
  EXPECT_EQ(nfc->encode(decomposed, false), nfc->encode(composed, false));
  EXPECT_EQ(nfc->encode(composed, false), (std::vector<int32_t>{256}));
  EXPECT_EQ(nfc->decode(nfc->encode("caf" + decomposed + "<|endoftext|>!", false)), "caf" + composed + "!");
  j["normalizer"] = nullptr;  // without it the two spellings are different text
  auto plain = load_json(tmp, j, "plain");
  EXPECT_NE(plain->encode(decomposed, false), plain->encode(composed, false));
  // Written back, the rules survive.
  write_hf_tokenizer(nfc->vocab(), (tmp / "again").string());
  auto again = load_tokenizer_file((tmp / "again" / "tokenizer.json").string());
  EXPECT_EQ(again->encode(decomposed, false), (std::vector<int32_t>{256}));
}

TEST(HfTokenizerJson, DigitsAndStringSplitsApply) {
  TempDir tmp;
  json j = byte_level_json({"12", "123"}, {"1 2", "12 3"});
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Digits"}, {"individual_digits", true}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  auto tok = load_json(tmp, j, "digits");
  EXPECT_EQ(tok->encode("123", false), (std::vector<int32_t>{'1', '2', '3'}));  // merges never see two digits
  j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Split"}, {"pattern", {{"String", "|"}}}, {"behavior", "Removed"}};
  auto bar = load_json(tmp, j, "bar");
  EXPECT_EQ(bar->encode("12|3", false), (std::vector<int32_t>{256, '3'}));
}

TEST(HfTokenizerJson, RefusesStepsItDoesNotApplyByName) {
  TempDir tmp;
  json j = byte_level_json({}, {});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}};
  for (auto [key, step] : std::vector<std::pair<std::string, std::string>>{
           {"normalizer", "BertNormalizer"}, {"pre_tokenizer", "Whitespace"}, {"decoder", "WordPiece"}}) {
    json bad = j;
    bad[key] = {{"type", step}};
    std::string err = testing::error_of([&] { load_json(tmp, bad, step); });
    EXPECT_NE(err.find("'" + step + "' is not supported"), std::string::npos) << err;
    EXPECT_NE(err.find("tokenizer.json"), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace lineage::text
