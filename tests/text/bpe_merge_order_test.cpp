// Two defences of the tokenizers against hostile input (issue 32):
//  - byte-level BPE merges through a heap (O(n log n) per pre-token) must give exactly what the
//    plain rule gives — lowest rank first, leftmost on ties, rescanning every pair after each merge
//    — which the test implements directly and compares on random vocabularies and words, long
//    runs of one letter among them;
//  - a SentencePiece .model whose normalizer charsmap is forged is refused before libsentencepiece
//    reads it, and every mutant of a real charsmap is either refused or encodes without a crash.
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <random>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/text/text_rules.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/tokenizer_formats.h"
#include "test_util.h"

namespace lineage::text {
namespace {

using testing::TempDir;

// Byte tokens (GPT-2's map leaves a-z as themselves) and `n_merges` random merges over "abcd".
Vocab random_bpe(std::mt19937& rng, int n_merges) {
  Vocab v;
  v.model = VocabModel::kBpe;
  v.source = "random-bpe";
  v.pre = "gpt2";
  for (int b = 0; b < 256; ++b) v.tokens.push_back(byte_to_text(static_cast<unsigned char>(b)));
  std::vector<std::string> made{"a", "b", "c", "d"};
  std::set<std::string> have(v.tokens.begin(), v.tokens.end());
  while (static_cast<int>(v.merges.size()) < n_merges) {
    const std::string& l = made[rng() % made.size()];
    const std::string& r = made[rng() % made.size()];
    if (l.size() + r.size() > 12 || have.count(l + r)) continue;
    v.merges.push_back(l + " " + r);
    v.tokens.push_back(l + r);
    have.insert(l + r);
    made.push_back(l + r);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  v.add_bos = false;
  v.add_space_prefix = false;
  return v;
}

// The rule as stated: merge the lowest-ranked adjacent pair, leftmost on ties, until none is left.
std::vector<std::string> reference_bpe(const Vocab& v, const std::string& word) {
  std::map<std::string, int> rank;
  for (size_t r = 0; r < v.merges.size(); ++r) rank.emplace(v.merges[r], static_cast<int>(r));
  std::vector<std::string> sym;
  for (char c : word) sym.emplace_back(1, c);
  for (;;) {
    int best = std::numeric_limits<int>::max();
    size_t at = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = rank.find(sym[i] + " " + sym[i + 1]);
      if (it != rank.end() && it->second < best) best = it->second, at = i;
    }
    if (best == std::numeric_limits<int>::max()) return sym;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + static_cast<long>(at) + 1);
  }
}

TEST(BpeMerges, HeapOrderGivesWhatRescanningGives) {
  std::mt19937 rng(7);
  int words = 0;
  for (int vocab_seed = 0; vocab_seed < 20; ++vocab_seed) {
    Vocab v = random_bpe(rng, 10 + static_cast<int>(rng() % 60));
    auto tok = make_tokenizer(v);
    std::map<std::string, int32_t> id;
    for (int32_t i = 0; i < v.size(); ++i) id.emplace(v.tokens[i], i);
    for (int w = 0; w < 50; ++w, ++words) {
      std::string word;
      const size_t n = 1 + rng() % (w % 5 == 0 ? 400 : 24);
      const bool run = w % 7 == 0;  // one letter repeated: the shape of the 100,000 'x' prompt
      for (size_t i = 0; i < n; ++i) word += static_cast<char>('a' + (run ? 0 : rng() % 4));
      std::vector<int32_t> want;
      for (const auto& s : reference_bpe(v, word)) want.push_back(id.at(s));
      ASSERT_EQ(tok->encode(word, false), want) << "vocabulary " << vocab_seed << ", word " << word;
    }
  }
  EXPECT_EQ(words, 1000);
}

// --- SentencePiece models with forged charsmaps --------------------------------------------

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) out += static_cast<char>((v & 0x7F) | 0x80), v >>= 7;
  out += static_cast<char>(v);
}
uint64_t get_varint(const std::string& s, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    auto b = static_cast<unsigned char>(s.at(at++));
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return v;
  }
}

// The model with the normalizer's precompiled_charsmap (ModelProto 3 → NormalizerSpec 2) replaced.
std::string with_charsmap(const std::string& model, const std::string& charsmap, std::string* original = nullptr) {
  auto fields = [](const std::string& msg, auto&& each) {
    for (size_t at = 0; at < msg.size();) {
      size_t start = at;
      uint64_t key = get_varint(msg, at);
      std::string payload;
      switch (key & 7) {
        case 0: get_varint(msg, at); break;
        case 1: at += 8; break;
        case 5: at += 4; break;
        case 2: {
          uint64_t n = get_varint(msg, at);
          payload = msg.substr(at, n);
          at += n;
          break;
        }
        default: throw std::runtime_error("unexpected wire type");
      }
      each(key, msg.substr(start, at - start), payload);
    }
  };
  std::string out;
  fields(model, [&](uint64_t key, const std::string& raw, const std::string& payload) {
    if (key >> 3 != 3) {
      out += raw;
      return;
    }
    std::string spec;
    fields(payload, [&](uint64_t k, const std::string& r, const std::string& p) {
      if (k >> 3 != 2) {
        spec += r;
        return;
      }
      if (original) *original = p;
      put_varint(spec, k);
      put_varint(spec, charsmap.size());
      spec += charsmap;
    });
    put_varint(out, key);
    put_varint(out, spec.size());
    out += spec;
  });
  return out;
}

TEST(SentencePieceModel, ForgedCharsmapIsRefusedBeforeTheLibraryReadsIt) {
  TempDir tmp;
  std::string corpus;
  std::mt19937 rng(3);
  const char* words[] = {"the", "Ｆｕｌｌ", "width", "ｶﾀｶﾅ", "café", "①", "naïve", "ﬁne", "tokens", "and", "x"};
  for (int i = 0; i < 3000; ++i) corpus += std::string(words[rng() % 11]) + (i % 12 == 11 ? "\n" : " ");
  testing::spit(tmp / "corpus.txt", corpus);
  // The default normalization rule (nmt_nfkc) stores a real charsmap in the model.
  train_sentencepiece("--input=" + (tmp / "corpus.txt").string() + " --model_prefix=" + (tmp / "sp").string() +
                      " --vocab_size=60 --model_type=bpe --character_coverage=1.0 --minloglevel=2");
  const std::string model = read_file(tmp / "sp.model");
  std::string charsmap;
  with_charsmap(model, "", &charsmap);
  ASSERT_GT(charsmap.size(), 1000u) << "the trained model has no charsmap to forge";
  EXPECT_NO_THROW(check_sentencepiece_model(model, "sp.model"));
  const std::string probe = "Ｆｕｌｌ width ｶﾀｶﾅ café ① ﬁne \xF0\x9F\x98\x80 x";
  const auto clean = load_tokenizer_file((tmp / "sp.model").string())->encode(probe, false);

  auto refused = [&](const std::string& forged_charsmap, const std::string& name) {
    const auto path = tmp / (name + ".model");
    testing::spit(path, with_charsmap(model, forged_charsmap));
    try {
      auto tok = load_tokenizer_file(path.string());
      tok->encode(probe, false);  // a forgery that passes must not crash the library
      return false;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("precompiled_charsmap"), std::string::npos) << what;
      EXPECT_NE(what.find(path.string()), std::string::npos) << what;
      return true;
    }
  };
  // The reproduction: a uint32 size, random units, no strings.
  int forged_refused = 0;
  for (int i = 0; i < 50; ++i) {
    std::string f(4, '\0');
    const uint32_t units = 16 + rng() % 2000;
    const uint32_t bytes = units * 4;
    std::memcpy(f.data(), &bytes, 4);
    for (uint32_t u = 0; u < units; ++u) {
      uint32_t x = static_cast<uint32_t>(rng());
      f.append(reinterpret_cast<const char*>(&x), 4);
    }
    forged_refused += refused(f, "forged");
  }
  EXPECT_EQ(forged_refused, 50);
  // Mutants of the real charsmap (8-byte overwrites, bit flips, a wrong size): refused or harmless.
  int mutants = 0, mutants_refused = 0;
  for (int i = 0; i < 150; ++i, ++mutants) {
    std::string m = charsmap;
    if (i % 3 == 0) {
      const size_t at = 4 + rng() % (m.size() - 12);
      for (int k = 0; k < 8; ++k) m[at + k] = static_cast<char>(rng());
    } else if (i % 3 == 1) {
      m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
    } else {
      const uint32_t bytes = static_cast<uint32_t>(rng() % (m.size() + 64));
      std::memcpy(m.data(), &bytes, 4);
    }
    mutants_refused += refused(m, "mutant");
  }
  std::printf("charsmap forgeries refused: %d/50; mutants of a real charsmap refused %d/%d, the rest encoded\n",
              forged_refused, mutants_refused, mutants);
  // And the real model still encodes as before.
  EXPECT_EQ(load_tokenizer_file((tmp / "sp.model").string())->encode(probe, false), clean);
}

}  // namespace
}  // namespace lineage::text
