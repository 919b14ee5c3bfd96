// Vocab checks and the named pre-tokenizer patterns.
#include "lineage/text/vocab.h"

#include "lineage/core/error.h"

namespace lineage::text {

void Vocab::validate() const {
  if (tokens.empty()) fail("tokenizer '{}' has no tokens", source);
  if (scores.size() != tokens.size())
    fail("tokenizer '{}': {} scores for {} tokens", source, scores.size(), tokens.size());
  if (types.size() != tokens.size())
    fail("tokenizer '{}': {} token types for {} tokens", source, types.size(), tokens.size());
  for (auto [name, id] : {std::pair{"bos", bos_id}, {"eos", eos_id}, {"unk", unk_id}, {"pad", pad_id}})
    if (id < -1 || id >= size())
      fail("tokenizer '{}': {} id {} is outside the vocabulary of {}", source, name, id, size());
  if (model == VocabModel::kBpe && merges.empty())
    fail("tokenizer '{}': byte-level BPE without merges", source);
}

std::vector<std::string> pre_tokenizer_patterns(const std::string& name) {
  // The split expressions these model families publish with their tokenizers.
  static const char* kGpt2 =
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  static const char* kLlama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  static const char* kQwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  if (name == "gpt-2" || name == "gpt2" || name == "default") return {kGpt2};
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") return {kLlama3};
  if (name == "qwen2") return {kQwen2};
  fail("unknown BPE pre-tokenizer '{}', expected gpt-2, llama-bpe or qwen2", name);
}

}  // namespace lineage::text
