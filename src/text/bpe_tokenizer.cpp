// Byte-level BPE as GPT-2 introduced it (Radford et al. 2019) and Llama 3 and Qwen2 use it: split
// out special tokens, split the rest with the pre-tokenizer's regular expressions (PCRE2, Unicode
// properties), map each byte to a printable code point, then apply merges by rank within each
// piece (lowest rank first, leftmost on ties).
#include <algorithm>
#include <limits>
#include <memory>
#include <queue>
#include <unordered_map>

#include "lineage/core/error.h"
#include "lineage/text/text_rules.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/utf8.h"
#include "pcre_regex.h"

namespace lineage::text {

namespace {

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(Vocab v) : vocab_(std::move(v)) {
    vocab_.validate();
    for (int32_t id = 0; id < vocab_.size(); ++id) {
      token_to_id_.emplace(vocab_.tokens[id], id);
      auto t = vocab_.types[id];
      if (t == TokenType::kControl || t == TokenType::kUserDefined) specials_.push_back(id);
    }
    // Longest special token first, so "<|a|b|>" wins over "<|a".
    std::sort(specials_.begin(), specials_.end(), [&](int32_t a, int32_t b) {
      return vocab_.tokens[a].size() > vocab_.tokens[b].size();
    });
    for (size_t r = 0; r < vocab_.merges.size(); ++r) {
      const std::string& m = vocab_.merges[r];
      size_t sp = m.find(' ', 1);
      if (sp == std::string::npos)
        fail("tokenizer '{}': merge {} '{}' is not two tokens separated by a space", vocab_.source, r, m);
      merge_rank_.emplace(m, static_cast<int>(r));
    }
    uses_rules_ = !vocab_.rules.normalizers.empty() || !vocab_.rules.pre_tokenizers.empty();
    auto patterns = vocab_.pre_regex.empty() ? pre_tokenizer_patterns(vocab_.pre) : vocab_.pre_regex;
    if (!uses_rules_)
      for (const auto& p : patterns) regexes_.push_back(std::make_unique<Regex>(p, vocab_.source));
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
    size_t i = 0, plain = 0;
    while (i < text.size()) {
      int32_t special = -1;
      for (int32_t id : specials_) {
        const std::string& t = vocab_.tokens[id];
        if (!t.empty() && text.compare(i, t.size(), t) == 0) {
          special = id;
          break;
        }
      }
      if (special < 0) {
        ++i;
        continue;
      }
      encode_plain(text.substr(plain, i - plain), plain == 0, out);
      out.push_back(special);
      i += vocab_.tokens[special].size();
      plain = i;
    }
    encode_plain(text.substr(plain), plain == 0, out);
    return out;
  }

  std::string decode_piece(int32_t prev, int32_t id) const override {
    if (!vocab_.rules.decoders.empty()) return Tokenizer::decode_piece(prev, id);  // tokenizer.json's decoders
    if (id < 0 || id >= vocab_.size()) fail("token id {} is outside the vocabulary of {}", id, vocab_.size());
    auto type = vocab_.types[id];
    if (type == TokenType::kControl || type == TokenType::kUnused) return "";
    const std::string& t = vocab_.tokens[id];
    if (type == TokenType::kUserDefined) return t;
    std::string out;
    for (size_t i = 0; i < t.size();) {
      uint32_t cp = utf8::decode(t, i);
      int b = text_to_byte(cp);
      if (b >= 0) out += static_cast<char>(b);
      else out += utf8::encode(cp);
    }
    return out;
  }

  const Vocab& vocab() const override { return vocab_; }

 private:
  // Text between special tokens; `at_start`: it begins the input.
  void encode_plain(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    if (uses_rules_) {  // tokenizer.json's normalizers and pre-tokenizers (ByteLevel maps the bytes)
      for (const auto& piece : pre_tokenize(vocab_.rules.pre_tokenizers, normalize(vocab_.rules.normalizers, text), at_start))
        bpe(piece, out);
      return;
    }
    // The expressions run on well-formed UTF-8 only; each byte outside it is a piece by itself.
    std::vector<std::string_view> pieces;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      size_t n = utf8::valid_seq_len(text, i);
      if (n > 0) {
        i += n;
        continue;
      }
      if (i > start) split_all(text.substr(start, i - start), pieces);
      pieces.push_back(text.substr(i, 1));
      start = ++i;
    }
    if (start < text.size()) split_all(text.substr(start), pieces);
    for (auto piece : pieces) {
      std::string mapped;
      for (unsigned char c : piece) mapped += byte_to_text(c);
      bpe(mapped, out);
    }
  }

  void split_all(std::string_view text, std::vector<std::string_view>& out) const {
    std::vector<std::string_view> pieces{text};
    for (const auto& re : regexes_) {
      std::vector<std::string_view> next;
      for (auto p : pieces) re->split(p, next);
      pieces.swap(next);
    }
    out.insert(out.end(), pieces.begin(), pieces.end());
  }

  // Merges by rank within one pre-token (already byte-mapped).
  void bpe(const std::string& word, std::vector<int32_t>& out) const {
    // A single character needs no merge; with ignore_merges (HF tokenizers, Llama 3) a pre-token
    // that is itself in the vocabulary is taken whole even where the merges would split it.
    auto whole = token_to_id_.find(word);
    const bool one_char = !word.empty() && utf8::seq_len(static_cast<unsigned char>(word[0])) >= word.size();
    if (whole != token_to_id_.end() && (one_char || vocab_.ignore_merges)) {
      out.push_back(whole->second);
      return;
    }
    // Symbols are contiguous spans of the word: the one starting at byte i is len[i] bytes long
    // (0: merged into the one before). Candidate merges wait in a heap ordered by rank, then by
    // position, as HF tokenizers orders them; an entry whose two spans have changed since it was
    // pushed is stale and skipped. Each merge costs O(log n), so a long pre-token (a prompt of
    // 100,000 'x') takes O(n log n), not the O(n^2) of rescanning every pair after each merge.
    const size_t n = word.size();
    std::vector<uint32_t> len(n, 0);
    std::vector<int64_t> prev(n, -1);
    for (size_t i = 0, last = SIZE_MAX; i < n;) {
      len[i] = static_cast<uint32_t>(std::min(utf8::seq_len(static_cast<unsigned char>(word[i])), n - i));
      if (last != SIZE_MAX) prev[i] = static_cast<int64_t>(last);
      last = i;
      i += len[i];
    }
    struct Candidate {
      int rank;
      uint32_t at, left, right;  // the left span's start, and both spans' lengths when pushed
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : at > o.at; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    std::string pair;
    auto push = [&](size_t at) {
      size_t right = at + len[at];
      if (right >= n) return;
      pair.assign(word, at, len[at]);
      pair += ' ';
      pair.append(word, right, len[right]);
      auto it = merge_rank_.find(pair);
      if (it != merge_rank_.end())
        heap.push({it->second, static_cast<uint32_t>(at), len[at], len[right]});
    };
    for (size_t i = 0; i < n; i += len[i]) push(i);
    while (!heap.empty()) {
      Candidate c = heap.top();
      heap.pop();
      if (len[c.at] != c.left || c.at + c.left >= n || len[c.at + c.left] != c.right) continue;  // stale
      const size_t right = c.at + c.left;
      len[c.at] += len[right];
      len[right] = 0;
      if (c.at + len[c.at] < n) prev[c.at + len[c.at]] = c.at;
      if (prev[c.at] >= 0) push(static_cast<size_t>(prev[c.at]));
      push(c.at);
    }
    std::vector<std::string> sym;
    for (size_t i = 0; i < n; i += len[i]) sym.push_back(word.substr(i, len[i]));
    for (const auto& s : sym) {
      auto it = token_to_id_.find(s);
      if (it != token_to_id_.end()) out.push_back(it->second);
      else if (vocab_.unk_id >= 0) out.push_back(vocab_.unk_id);
      else fail("tokenizer '{}': piece '{}' is not in the vocabulary and there is no unknown token", vocab_.source, s);
    }
  }

  Vocab vocab_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::unordered_map<std::string, int> merge_rank_;
  std::vector<int32_t> specials_;
  std::vector<std::unique_ptr<Regex>> regexes_;
  bool uses_rules_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(Vocab vocab) {
  return std::make_unique<BpeTokenizer>(std::move(vocab));
}

}  // namespace lineage::text
