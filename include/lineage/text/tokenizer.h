// Tokenizers: text <-> token ids. Three algorithms behind one interface:
//   SpmTokenizer            SentencePiece-style BPE over a Vocab (llama2.c tokenizer.bin, GGUF "llama",
//                           HF tokenizer.json with byte_fallback)
//   BpeTokenizer            byte-level BPE (GPT-2, Llama 3, Qwen2: HF tokenizer.json, GGUF "gpt2")
//   SentencePieceTokenizer  a SentencePiece .model through libsentencepiece
#pragma once

#include <memory>
#if __cplusplus > 201703L
#include <span>
#endif
#include <string>
#include <string_view>
#include <vector>

#include "lineage/text/vocab.h"

namespace lineage::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`, with BOS first when add_bos and the vocabulary has one.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // The bytes token `id` adds when it follows `prev` (-1 at the start of text): lets a caller
  // stream text token by token. Control tokens (BOS, EOS) add nothing.
  virtual std::string decode_piece(int32_t prev, int32_t id) const;
  virtual std::string decode(const int32_t* ids, size_t n) const;
  std::string decode(const std::vector<int32_t>& ids) const { return decode(ids.data(), ids.size()); }
#if __cplusplus > 201703L  // the fuzz build compiles the tensor readers as C++17 (fuzz/README.md)
  std::string decode(std::span<const int32_t> ids) const { return decode(ids.data(), ids.size()); }
#endif
  virtual const Vocab& vocab() const = 0;
  virtual std::string describe() const;  // e.g. "SentencePiece BPE, 512 tokens (llama2.c tokenizer.bin)"

  int32_t vocab_size() const { return vocab().size(); }
  int32_t bos_id() const { return vocab().bos_id; }
  int32_t eos_id() const { return vocab().eos_id; }
};

// The right algorithm for a Vocab (kSpm or kBpe).
std::unique_ptr<Tokenizer> make_tokenizer(Vocab vocab);

// Loads a tokenizer file: llama2.c tokenizer.bin, HF tokenizer.json (or a folder holding one, or
// tokenizer.model), SentencePiece .model. Says which format it found; fails naming the file.
// (GGUF-embedded tokenizers are read by io::load_tokenizer, which also accepts all of these.)
std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path);

}  // namespace lineage::text
