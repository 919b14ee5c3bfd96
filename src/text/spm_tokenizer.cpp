// SentencePiece-style BPE: start from the UTF-8 characters of the text (spaces shown as U+2581,
// one prepended), repeatedly merge the adjacent pair whose concatenation is the vocabulary piece
// with the highest score (leftmost on ties), then spell pieces missing from the vocabulary as
// <0xNN> byte tokens. The same result as llama2.c's run.c encode and SentencePiece's BPE model;
// a priority queue keeps it O(n log n) instead of run.c's O(n^2) rescans.
#include <array>
#include <limits>
#include <queue>
#include <unordered_map>

#include "lineage/core/error.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/utf8.h"

namespace lineage::text {

namespace {

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(Vocab v) : vocab_(std::move(v)) {
    vocab_.validate();
    for (int32_t id = 0; id < vocab_.size(); ++id) {
      piece_to_id_.emplace(vocab_.tokens[id], id);
      int b = utf8::parse_byte_piece(vocab_.tokens[id]);
      if (b >= 0 && vocab_.types[id] == TokenType::kByte) byte_ids_[b] = id;
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
    if (text.empty()) return out;
    const TextRules& rules = vocab_.rules;
    if (!rules.normalizers.empty() || !rules.pre_tokenizers.empty()) {  // tokenizer.json's own rules
      for (const auto& piece : pre_tokenize(rules.pre_tokenizers, normalize(rules.normalizers, text), true))
        encode_piece(piece, out);
      return out;
    }
    encode_piece((vocab_.add_space_prefix ? utf8::kSpace : "") + utf8::replace_all(text, " ", utf8::kSpace), out);
    return out;
  }

  const Vocab& vocab() const override { return vocab_; }

 private:
  // The merges over one normalized piece (spaces already U+2581), then byte fallback.
  void encode_piece(const std::string& norm, std::vector<int32_t>& out) const {
    if (norm.empty()) return;

    struct Symbol {
      int prev, next;
      size_t start, len;
    };
    std::vector<Symbol> sym;
    for (size_t i = 0; i < norm.size();) {
      size_t n = std::min(utf8::seq_len(static_cast<unsigned char>(norm[i])), norm.size() - i);
      int idx = static_cast<int>(sym.size());
      sym.push_back({idx - 1, idx + 1, i, n});
      i += n;
    }
    sym.back().next = -1;

    struct Bigram {
      float score;
      int left, right;
      size_t len;
    };
    auto worse = [](const Bigram& a, const Bigram& b) {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
    auto try_pair = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      size_t len = sym[left].len + sym[right].len;
      auto it = piece_to_id_.find(std::string_view(norm).substr(sym[left].start, len));
      if (it == piece_to_id_.end()) return;
      float score = vocab_.scores[it->second];
      if (score == -std::numeric_limits<float>::infinity()) return;
      auto type = vocab_.types[it->second];
      if (type != TokenType::kNormal && type != TokenType::kUserDefined) return;
      queue.push({score, left, right, len});
    };
    for (size_t i = 1; i < sym.size(); ++i) try_pair(static_cast<int>(i) - 1, static_cast<int>(i));

    while (!queue.empty()) {
      Bigram b = queue.top();
      queue.pop();
      Symbol& l = sym[b.left];
      Symbol& r = sym[b.right];
      if (l.len == 0 || r.len == 0 || l.next != b.right || l.len + r.len != b.len) continue;  // stale
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = b.left;
      try_pair(l.prev, b.left);
      try_pair(b.left, l.next);
    }

    for (int i = 0; i >= 0 && i < static_cast<int>(sym.size()); i = sym[i].next) {
      std::string_view piece = std::string_view(norm).substr(sym[i].start, sym[i].len);
      auto it = piece_to_id_.find(piece);
      if (it != piece_to_id_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (unsigned char c : piece) {
        if (byte_ids_[c] >= 0) out.push_back(byte_ids_[c]);
        else if (vocab_.unk_id >= 0) out.push_back(vocab_.unk_id);
        else fail("tokenizer '{}' cannot spell byte 0x{:02X}: no byte token and no unknown token", vocab_.source, c);
      }
    }
  }

  Vocab vocab_;
  std::unordered_map<std::string_view, int32_t> piece_to_id_;  // views into vocab_.tokens
  std::array<int32_t, 256> byte_ids_ = make_byte_ids();
  static std::array<int32_t, 256> make_byte_ids() {
    std::array<int32_t, 256> a;
    a.fill(-1);
    return a;
  }
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(Vocab vocab) {
  return std::make_unique<SpmTokenizer>(std::move(vocab));
}

}  // namespace lineage::text
