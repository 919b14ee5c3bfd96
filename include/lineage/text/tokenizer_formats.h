// Tokenizer file formats read into (and written from) a Vocab.
//
// llama2.c tokenizer.bin (karpathy/llama2.c tokenizer.py):
//   int32 max_token_length
//   per token, in id order: float32 score, int32 byte length, bytes (spaces as ' ', not U+2581;
//   BOS/EOS written as "\n<s>\n" / "\n</s>\n"; byte tokens as "<0xNN>")
//   The count is not stored: it is the model's vocab_size, or the tokens up to the end of file.
//
// Hugging Face tokenizer.json: a "model" of type BPE with "vocab" and "merges"; byte-level when the
// pre-tokenizer or decoder is ByteLevel, SentencePiece-style when "byte_fallback" is set (Llama 1/2).
#pragma once

#include <string>
#include <string_view>

#include "lineage/text/vocab.h"

namespace lineage::text {

// vocab_size < 0: read tokens up to the end of the file.
Vocab read_llama2c_tokenizer(const std::string& path, int32_t vocab_size = -1);
void write_llama2c_tokenizer(const Vocab& vocab, const std::string& path);

// Reads tokenizer.json; special ids and add_bos come from its post-processor, then from
// tokenizer_config.json and config.json beside it when present.
Vocab read_hf_tokenizer(const std::string& path);
// Writes tokenizer.json and tokenizer_config.json into `dir`.
void write_hf_tokenizer(const Vocab& vocab, const std::string& dir);

}  // namespace lineage::text

namespace lineage::text {

// Trains a SentencePiece model with libsentencepiece's trainer; `args` as its command line, e.g.
// "--input=corpus.txt --model_prefix=out/sp --vocab_size=1000 --model_type=bpe".
void train_sentencepiece(const std::string& args);

}  // namespace lineage::text

namespace lineage::text {

// Checks what libsentencepiece trusts in a .model (a serialized ModelProto) before it sees the
// file: every `precompiled_charsmap` of the normalizer and denormalizer specs is a uint32 trie size,
// a darts-clone double array of that many bytes, then the normalized strings. Each trie node that a
// lookup can reach must keep every child it may read (any byte value) and every leaf value inside
// the array, and every value must point into the strings; the library reads them unchecked, so a
// forged charsmap would otherwise crash the process at the first encode. Fails naming `source` and
// what is wrong; says nothing about the rest of the model (the library checks it).
void check_sentencepiece_model(std::string_view bytes, const std::string& source);

}  // namespace lineage::text
