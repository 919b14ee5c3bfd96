// The vocabulary every tokenizer format is read into and written from: tokens, scores, types,
// merges and special ids — the same fields GGUF stores under tokenizer.ggml.*. Converting a
// tokenizer between formats is reading one into a Vocab and writing the Vocab out.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lineage/text/text_rules.h"

namespace lineage::text {

// Token types, numbered as GGUF's tokenizer.ggml.token_type (and llama.cpp) number them.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class VocabModel {
  kSpm,  // SentencePiece-style BPE: merge by piece score, U+2581 for spaces, <0xNN> byte fallback
  kBpe,  // byte-level BPE (GPT-2): regex pre-tokenizer, bytes mapped to printable code points, merge ranks
};

struct Vocab {
  VocabModel model = VocabModel::kSpm;
  std::vector<std::string> tokens;   // kSpm: pieces with U+2581 for space; kBpe: byte-to-unicode text
  std::vector<float> scores;         // kSpm: higher merges first; -inf: never a merge result
  std::vector<TokenType> types;
  std::vector<std::string> merges;   // kBpe: "left right", highest priority first
  std::string pre = "default";       // kBpe pre-tokenizer, llama.cpp's tokenizer.ggml.pre names: gpt-2, llama-bpe, qwen2
  std::vector<std::string> pre_regex;  // explicit split patterns, applied in order; overrides `pre`
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = true;               // prepend BOS when encoding a prompt
  bool add_space_prefix = true;      // kSpm: prepend U+2581 to the text, as SentencePiece does
  bool ignore_merges = false;        // kBpe: a pre-token that is itself a token is taken whole before any
                                     // merge (HF tokenizers' BPE `ignore_merges`; Llama 3 sets it, and
                                     // llama.cpp for the llama-bpe pre-tokenizer)
  TextRules rules;                   // tokenizer.json's normalizer, pre-tokenizer and decoder; when set they
                                     // replace add_space_prefix / pre / pre_regex in encoding and decoding
                                     // (GGUF has no place for them: a GGUF export keeps the legacy fields)
  std::string source;                // where it came from, for messages and `lineage info`

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  // Fails (naming `source`) when sizes disagree or special ids are out of range.
  void validate() const;
};

// The split patterns a named BPE pre-tokenizer uses (GPT-2, Llama 3, Qwen2).
std::vector<std::string> pre_tokenizer_patterns(const std::string& name);

}  // namespace lineage::text
