// text: tokenizers checked against references — llama2.c's encode (ids dumped from run.c), 
// libsentencepiece on a model it trained, hand-worked merges — and format round trips.
#include "lineage/text/tokenizer.h"

#include <fstream>

#include "lineage/core/error.h"
#include "lineage/text/tokenizer_formats.h"
#include "test_util.h"

namespace lineage::text {
namespace {

using testing::TempDir;

std::string shakespeare(size_t bytes) {
  std::ifstream in(testing::shared_dir() / "data/text/tinyshakespeare.txt", std::ios::binary);
  std::string s(bytes, '\0');
  in.read(s.data(), static_cast<std::streamsize>(bytes));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

TEST(Llama2cTokenizer, EncodesExactlyAsRunC) {
  LINEAGE_REQUIRE_SHARED();
  auto tok = load_tokenizer_file((testing::stories_dir() / "tok512.bin").string());
  auto refs = testing::load_llama2c_reference();
  ASSERT_GE(refs.size(), 7u);
  for (const auto& r : refs) EXPECT_EQ(tok->encode(r.prompt, true), r.ids) << "prompt: " << r.prompt;
}

TEST(Llama2cTokenizer, DecodeInvertsEncode) {
  LINEAGE_REQUIRE_SHARED();
  auto tok = load_tokenizer_file((testing::stories_dir() / "tok512.bin").string());
  std::string text = shakespeare(20000);
  auto ids = tok->encode(text, true);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(tok->decode(tok->encode("  two leading spaces", false)), "  two leading spaces");
  EXPECT_EQ(tok->decode(tok->encode("naïve 日本 🙂", false)), "naïve 日本 🙂");  // byte fallback
}

TEST(Llama2cTokenizer, WriteReadRoundTrip) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  auto v = read_llama2c_tokenizer((testing::stories_dir() / "tok512.bin").string());
  write_llama2c_tokenizer(v, (tmp / "tok.bin").string());
  EXPECT_EQ(testing::slurp(tmp / "tok.bin"), testing::slurp(testing::stories_dir() / "tok512.bin"));
}

// A hand-made SentencePiece-style vocabulary, small enough to work the merges out by hand.
Vocab toy_spm() {
  Vocab v;
  v.source = "toy";
  v.tokens = {"<unk>", "<s>", "</s>", "<0x21>", "\xE2\x96\x81", "a", "b", "c", "ab", "bc", "\xE2\x96\x81" "a", "abc"};
  v.scores = {0, 0, 0, 0, -1, -1, -1, -1, -2, -3, -5, -4};
  v.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl, TokenType::kByte};
  v.types.resize(v.tokens.size(), TokenType::kNormal);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  return v;
}

TEST(SpmTokenizer, MergesByScoreWithByteFallback) {
  auto tok = make_tokenizer(toy_spm());
  // "abc" -> ▁ a b c: best pair score is ab (-2) over bc (-3) and ▁a (-5); then ab+c = abc (-4).
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int32_t>{4, 11}));
  // "bc a": ▁ b c ▁ a -> bc (-3), ▁a (-5) ; "!" has a byte token, "d" falls back to <unk>.
  EXPECT_EQ(tok->encode("bc a!d", true), (std::vector<int32_t>{1, 4, 9, 10, 3, 0}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{1, 4, 11, 10, 3}), "abc a!");
}

TEST(SpmTokenizer, LeftmostPairWinsTies) {
  Vocab v = toy_spm();
  v.scores[9] = -2;  // bc now ties with ab
  auto tok = make_tokenizer(v);
  EXPECT_EQ(tok->encode("abc", false), (std::vector<int32_t>{4, 11}));   // ab first, then abc
  EXPECT_EQ(tok->encode("bcab", false), (std::vector<int32_t>{4, 9, 8}));  // bc is left of ab
}

// A hand-made byte-level BPE vocabulary with a GPT-2 byte map (space is "Ġ").
Vocab toy_bpe(const std::string& pre) {
  Vocab v;
  v.model = VocabModel::kBpe;
  v.source = "toy-bpe";
  v.pre = pre;
  // Every byte as a token, in GPT-2's byte-to-unicode order, then merges.
  std::vector<std::string> bytes(256);
  {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      int cp = printable ? b : next++;
      std::string s;
      if (cp < 0x80) s += char(cp);
      else { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
      bytes[b] = s;
    }
  }
  v.tokens = bytes;
  v.merges = {"Ġ t", "h e", "Ġt he", "1 2", "12 3"};
  for (std::string t : {"Ġt", "he", "Ġthe", "12", "123"}) v.tokens.push_back(t);
  v.tokens.push_back("<|endoftext|>");
  v.scores.assign(v.tokens.size(), 0.0f);
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  v.types.back() = TokenType::kControl;
  v.eos_id = v.size() - 1;
  v.add_bos = false;
  v.add_space_prefix = false;
  return v;
}

TEST(BpeTokenizer, MergesByRankWithinPreTokens) {
  auto tok = make_tokenizer(toy_bpe("gpt-2"));
  const int32_t he = 257, Gthe = 258;
  // "the the": pre-tokens "the", " the"; "the" -> t he ; " the" -> Ġt he -> Ġthe.
  EXPECT_EQ(tok->encode("the the", false), (std::vector<int32_t>{'t', he, Gthe}));
  // Special tokens are split out before the regex and map to their id.
  auto ids = tok->encode("he<|endoftext|>he", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{he, 261, he}));
  EXPECT_EQ(tok->decode(ids), "hehe");  // control tokens decode to nothing
}

TEST(BpeTokenizer, PreTokenizerPatternsDiffer) {
  // GPT-2 keeps a run of digits together; Llama 3 splits them in groups of three; Qwen2 one by one.
  auto gpt2 = make_tokenizer(toy_bpe("gpt-2"));
  auto llama3 = make_tokenizer(toy_bpe("llama-bpe"));
  auto qwen2 = make_tokenizer(toy_bpe("qwen2"));
  const int32_t t12 = 259, t123 = 260;
  EXPECT_EQ(gpt2->encode("1231", false), (std::vector<int32_t>{t123, '1'}));
  EXPECT_EQ(llama3->encode("1231", false), (std::vector<int32_t>{t123, '1'}));
  EXPECT_EQ(llama3->encode("123123", false), (std::vector<int32_t>{t123, t123}));
  EXPECT_EQ(qwen2->encode("12", false), (std::vector<int32_t>{'1', '2'}));
  EXPECT_EQ(gpt2->encode("12", false), (std::vector<int32_t>{t12}));
}

TEST(BpeTokenizer, AnyBytesRoundTrip) {
  auto tok = make_tokenizer(toy_bpe("llama-bpe"));
  std::string s = "Héllo\tworld \n\n 🙂 ";
  s += std::string("\x00\x01\xff", 3);
  EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
}

TEST(HfTokenizerJson, ByteLevelRoundTrip) {
  TempDir tmp;
  Vocab v = toy_bpe("llama-bpe");
  write_hf_tokenizer(v, tmp.path.string());
  Vocab back = read_hf_tokenizer((tmp / "tokenizer.json").string());
  EXPECT_EQ(back.model, VocabModel::kBpe);
  EXPECT_EQ(back.pre, "llama-bpe");
  EXPECT_EQ(back.tokens, v.tokens);
  EXPECT_EQ(back.merges, v.merges);
  EXPECT_EQ(back.eos_id, v.eos_id);
  auto a = make_tokenizer(v), b = make_tokenizer(back);
  for (std::string s : {"the theory 12345", "x<|endoftext|>y"}) EXPECT_EQ(a->encode(s, false), b->encode(s, false));
}

TEST(HfTokenizerJson, SentencePieceStyleRoundTripEncodesTheSame) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  auto v = read_llama2c_tokenizer((testing::stories_dir() / "tok512.bin").string());
  write_hf_tokenizer(v, tmp.path.string());
  auto back = load_tokenizer_file(tmp.path.string());  // a folder with tokenizer.json
  EXPECT_EQ(back->vocab().model, VocabModel::kSpm);
  EXPECT_EQ(back->bos_id(), 1);
  EXPECT_EQ(back->eos_id(), 2);
  auto orig = make_tokenizer(v);
  std::string text = shakespeare(30000);
  EXPECT_EQ(back->encode(text, true), orig->encode(text, true));
  EXPECT_EQ(back->decode(back->encode(text, true)), text);
}

TEST(HfTokenizerJson, RejectsUnigramWithAClearMessage) {
  TempDir tmp;
  testing::spit(tmp / "tokenizer.json", R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})");
  try {
    load_tokenizer_file((tmp / "tokenizer.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos) << e.what();
  }
}

TEST(SentencePieceModel, LibraryAndVocabAlgorithmAgree) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  std::string corpus = shakespeare(200000);
  testing::spit(tmp / "corpus.txt", corpus);
  train_sentencepiece("--input=" + (tmp / "corpus.txt").string() + " --model_prefix=" + (tmp / "sp").string() +
                      " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=1.0"
                      " --normalization_rule_name=identity --remove_extra_whitespaces=false --minloglevel=2");
  auto sp = load_tokenizer_file((tmp / "sp.model").string());
  EXPECT_EQ(sp->vocab_size(), 400);
  EXPECT_NE(sp->describe().find("SentencePiece model"), std::string::npos);
  // The same vocabulary through Lineage's own SentencePiece-style BPE gives the library's ids
  // (trained with the identity normaliser: a Vocab carries no normalisation rules, as in GGUF).
  auto ours = make_tokenizer(sp->vocab());
  std::istringstream lines(shakespeare(40000));
  std::string line;
  int checked = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    EXPECT_EQ(ours->encode(line, true), sp->encode(line, true)) << line;
    EXPECT_EQ(sp->decode(sp->encode(line, false)), line);
    ++checked;
  }
  EXPECT_GT(checked, 500);
}

TEST(TokenizerFiles, ErrorsNameTheFile) {
  TempDir tmp;
  testing::spit(tmp / "tok.bin", std::string("\x10\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00" "ab", 14));
  try {
    load_tokenizer_file((tmp / "tok.bin").string());
    FAIL();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("tok.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  }
  EXPECT_THROW(load_tokenizer_file((tmp / "missing.json").string()), Error);
}

}  // namespace
}  // namespace lineage::text
