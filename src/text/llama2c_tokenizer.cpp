// llama2.c tokenizer.bin read and write. Layout in include/lineage/text/tokenizer_formats.h.
#include <cstring>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/text/tokenizer_formats.h"
#include "lineage/text/utf8.h"

namespace lineage::text {

Vocab read_llama2c_tokenizer(const std::string& path, int32_t vocab_size) {
  MappedFile file(path);
  ByteReader r(file.data(), file.size(), path);
  Vocab v;
  v.model = VocabModel::kSpm;
  v.source = path;
  int32_t max_len = r.read<int32_t>("max_token_length");
  if (max_len <= 0 || max_len > 4096)
    fail("'{}' is not a llama2.c tokenizer: max_token_length is {}, expected 1..4096", path, max_len);
  while (vocab_size < 0 ? r.remaining() > 0 : v.size() < vocab_size) {
    auto what = fmt::format("token {}", v.size());
    float score = r.read<float>(what);
    int32_t len = r.read<int32_t>(what);
    if (len < 0 || len > max_len)
      fail("'{}': {} has length {}, expected 0..{} (max_token_length)", path, what, len, max_len);
    const uint8_t* bytes = r.take(static_cast<size_t>(len), what);
    std::string piece(reinterpret_cast<const char*>(bytes), static_cast<size_t>(len));
    v.scores.push_back(score);
    v.tokens.push_back(piece);
  }
  if (v.tokens.size() < 3) fail("'{}': a llama2.c tokenizer needs <unk>, <s>, </s>; found {} tokens", path, v.size());
  // SentencePiece's fixed ids: 0 <unk>, 1 <s>, 2 </s>.
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  v.types[0] = TokenType::kUnknown;
  v.types[1] = v.types[2] = TokenType::kControl;
  v.tokens[0] = "<unk>";
  v.tokens[1] = "<s>";
  v.tokens[2] = "</s>";
  for (int32_t id = 3; id < v.size(); ++id) {
    if (utf8::parse_byte_piece(v.tokens[id]) >= 0) v.types[id] = TokenType::kByte;
    else v.tokens[id] = utf8::replace_all(v.tokens[id], " ", utf8::kSpace);
  }
  return v;
}

void write_llama2c_tokenizer(const Vocab& vocab, const std::string& path) {
  if (vocab.model != VocabModel::kSpm)
    fail("cannot write '{}': llama2.c tokenizers are SentencePiece-style, this vocabulary is byte-level BPE", path);
  std::vector<std::string> pieces;
  int32_t max_len = 1;
  for (int32_t id = 0; id < vocab.size(); ++id) {
    std::string p = vocab.tokens[id];
    if (id == vocab.bos_id) p = "\n<s>\n";
    else if (id == vocab.eos_id) p = "\n</s>\n";
    else if (vocab.types[id] != TokenType::kByte) p = utf8::replace_all(p, utf8::kSpace, " ");
    max_len = std::max<int32_t>(max_len, static_cast<int32_t>(p.size()));
    pieces.push_back(std::move(p));
  }
  AtomicWriter w(path);
  w.write(&max_len, 4);
  for (int32_t id = 0; id < vocab.size(); ++id) {
    float score = vocab.scores[id];
    int32_t len = static_cast<int32_t>(pieces[id].size());
    w.write(&score, 4);
    w.write(&len, 4);
    w.write(pieces[id]);
  }
  w.commit();
}

}  // namespace lineage::text
