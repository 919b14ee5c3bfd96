// Tokenizer base behaviour, the factory over Vocab models, and format detection for files.
#include "lineage/text/tokenizer.h"

#include <span>

#include <filesystem>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/text/tokenizer_formats.h"
#include "lineage/text/utf8.h"

namespace lineage::text {

std::unique_ptr<Tokenizer> make_spm_tokenizer(Vocab vocab);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(Vocab vocab);
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path);

namespace fs = std::filesystem;

std::string Tokenizer::decode_piece(int32_t prev, int32_t id) const {
  // SentencePiece-style vocabularies (SpmTokenizer and the libsentencepiece wrapper); byte-level
  // BPE overrides it.
  const Vocab& v = vocab();
  if (id < 0 || id >= v.size()) fail("token id {} is outside the vocabulary of {}", id, v.size());
  auto type = v.types[id];
  if (type == TokenType::kControl || type == TokenType::kUnused) return "";
  if (!v.rules.decoders.empty()) return decode_tokens(v.rules.decoders, {v.tokens[id]}, prev < 0 || prev == v.bos_id);
  if (type == TokenType::kByte) {
    int b = utf8::parse_byte_piece(v.tokens[id]);
    if (b >= 0) return std::string(1, static_cast<char>(b));
  }
  std::string text = utf8::replace_all(v.tokens[id], utf8::kSpace, " ");
  // The space SentencePiece prepends is not part of the text: drop it at the start and after BOS.
  if (v.add_space_prefix && (prev < 0 || prev == v.bos_id) && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

std::string Tokenizer::decode(const int32_t* ids_data, size_t n) const {
  std::span<const int32_t> ids(ids_data, n);
  const Vocab& v = vocab();
  if (!v.rules.decoders.empty()) {  // the whole chain at once, as the library decodes (special tokens skipped)
    std::vector<std::string> tokens;
    for (int32_t id : ids) {
      if (id < 0 || id >= v.size()) fail("token id {} is outside the vocabulary of {}", id, v.size());
      if (v.types[id] != TokenType::kControl && v.types[id] != TokenType::kUnused) tokens.push_back(v.tokens[id]);
    }
    return decode_tokens(v.rules.decoders, std::move(tokens), true);
  }
  std::string out;
  int32_t prev = -1;
  for (int32_t id : ids) {
    out += decode_piece(prev, id);
    prev = id;
  }
  return out;
}

std::string Tokenizer::describe() const {
  const Vocab& v = vocab();
  const char* kind = v.model == VocabModel::kSpm ? "SentencePiece-style BPE" : "byte-level BPE";
  std::string pre = v.model == VocabModel::kBpe ? fmt::format(", pre-tokenizer {}", v.pre) : "";
  static const char* kNames[] = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "Replace", "Prepend"};
  std::string norms;
  for (const auto& n : v.rules.normalizers)
    if (n.kind != Normalizer::Kind::kReplace && n.kind != Normalizer::Kind::kPrepend)
      norms += (norms.empty() ? ", normalizer " : "+") + std::string(kNames[static_cast<int>(n.kind)]);
  return fmt::format("{}, {} tokens{}{} ({})", kind, v.size(), pre, norms, v.source);
}

std::unique_ptr<Tokenizer> make_tokenizer(Vocab vocab) {
  if (vocab.model == VocabModel::kBpe) return make_bpe_tokenizer(std::move(vocab));
  return make_spm_tokenizer(std::move(vocab));
}

std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path_str) {
  fs::path path(path_str);
  if (!fs::exists(path)) fail("tokenizer '{}' does not exist", path_str);
  if (fs::is_directory(path)) {
    if (fs::exists(path / "tokenizer.json")) return load_tokenizer_file((path / "tokenizer.json").string());
    if (fs::exists(path / "tokenizer.model")) return load_tokenizer_file((path / "tokenizer.model").string());
    fail("folder '{}' holds no tokenizer.json or tokenizer.model", path_str);
  }
  // Sniff the content: JSON starts with '{'; a SentencePiece model is a protobuf whose first field
  // (pieces, tag 0x0A); llama2.c starts with a small positive int32.
  std::string head;
  {
    MappedFile f(path);
    if (f.size() < 4) fail("'{}' is too small ({} bytes) to be a tokenizer", path_str, f.size());
    head.assign(reinterpret_cast<const char*>(f.data()), std::min<size_t>(f.size(), 16));
  }
  size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && head[first] == '{')
    return make_tokenizer(read_hf_tokenizer(path_str));
  if (path.extension() == ".model" || static_cast<unsigned char>(head[0]) == 0x0A)
    return make_sentencepiece_tokenizer(path_str);
  int32_t max_len;
  std::memcpy(&max_len, head.data(), 4);
  if (max_len > 0 && max_len <= 4096) return make_tokenizer(read_llama2c_tokenizer(path_str));
  fail("'{}' is not a tokenizer Lineage reads: expected tokenizer.json, a SentencePiece .model or a llama2.c tokenizer.bin",
       path_str);
}

}  // namespace lineage::text
