// Training data: files of examples tokenized into fixed-length rows for the trainer.
//
//   JSONL, one object per line:
//     {"prompt": "...", "completion": "..."}   loss on the completion only (a prompt alone is a
//                                              prompt for sequence-level KD / on-policy modes)
//     {"text": "..."}                          loss on every token
//     {"messages": [{"role", "content"}...]}   chat; loss on the assistant turns
//   anything else: plain UTF-8 text; documents are blocks separated by blank lines (cut at line
//   ends beyond 64 KiB)
//
// Each example is assigned to the validation split by a hash of (split seed, file, example index)
// — deterministic, and independent of the context length and of the other files. Examples are
// packed end to end (BOS ... EOS) into rows of seq_len + 1 tokens that overlap by one, as GPT-style
// pre-training does; without packing each example gets its own row, padded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lineage/core/hash.h"
#include "lineage/distill/options.h"
#include "lineage/text/tokenizer.h"

namespace lineage::distill {

// Rows of tokens and the positions whose prediction counts.
struct TokenRows {
  int64_t seq_len = 0;
  std::vector<int32_t> tokens;  // (rows, seq_len + 1)
  std::vector<uint8_t> mask;    // (rows, seq_len + 1): 1 where predicting this token counts; [r][0] = 0
  int64_t rows() const { return seq_len ? static_cast<int64_t>(tokens.size()) / (seq_len + 1) : 0; }
  int64_t target_tokens() const;  // positions with mask 1
  Digest digest() const;  // of seq_len, tokens and mask: ties a teacher cache to these rows
};

struct DataFile {
  std::string path;
  std::string sha256;
  std::string format;  // "jsonl prompt/completion", "jsonl text", "jsonl messages", "text"
  int64_t examples = 0;
  int64_t bytes = 0;
};

struct Prompt {
  std::vector<int32_t> tokens;      // BOS + prompt
  std::vector<int32_t> completion;  // the reference completion (may be empty)
};

struct Dataset {
  TokenRows train, valid;
  std::vector<Prompt> train_prompts, valid_prompts;  // from prompt/completion and chat examples
  std::vector<DataFile> files;
  int64_t train_examples = 0, valid_examples = 0;
};

// Reads and tokenizes every file. Fails naming the file (and line) on a malformed line, a missing
// field, an empty file, or a split that leaves no training rows.
Dataset load_dataset(const std::vector<std::string>& paths, const text::Tokenizer& tokenizer,
                     const DataOptions& options);

// Packs tokenized examples (ids and target masks of equal length) into rows, as load_dataset does.
TokenRows pack_examples(const std::vector<std::vector<int32_t>>& ids, const std::vector<std::vector<uint8_t>>& masks,
                        int64_t seq_len, bool pack, int32_t pad_id);

// How the trainer walks the rows: a fresh permutation per epoch from (seed, epoch), and a position
// in it — saved in checkpoints so a resumed run sees exactly the batches it would have seen.
struct DataCursor {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;
  // The next `n` row indices out of `rows`, advancing (and starting a new epoch as needed).
  std::vector<int64_t> next(int64_t n, int64_t rows);
};

// The chat rendering used for {"messages"} data: "<|role|>\n" + content + "\n" per turn, the
// assistant turns being the completions. (Models with their own template get it from the text module.)
std::string render_chat_turn(const std::string& role, const std::string& content);

}  // namespace lineage::distill
