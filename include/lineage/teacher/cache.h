// The teacher cache: the teacher's top-k next-token log-probabilities for every position of the
// training (and validation) rows, computed once and memory-mapped during training (offline KD).
//
// DIR/cache.json     what it was built from and how to read it (human-readable)
// DIR/<split>-NNNNN.bin  shards, each:
//   offset  size  field
//        0     8  magic "LNGCACHE"
//        8     4  version (2)
//       12     4  k                top tokens per position
//       16     4  vocab_size
//       20     4  id_bits          ceil(log2(vocab_size)): token ids are bit-packed
//       24     4  seq_len          positions per row
//       28     4  rows             rows in this shard
//       32     8  first_row        index of the shard's first row in its split
//       40     4  record_bytes     2k + 4 + ceil((k + m) * id_bits / 8)
//       44     4  logprob dtype    1 = IEEE half
//       48    32  teacher content hash (SHA-256 of the model file)
//       80    32  tokenizer hash (text::vocab_digest)
//      112    32  data hash (TokenRows::digest of the split)
//      144    32  payload SHA-256
//      176     4  m                tail draws per position (Random-Sampling KD, Anshumann et al. 2025)
//      180    12  reserved (0)
//      192     -  payload: rows * seq_len records, position t of a row predicting token t+1:
//                 k log-probabilities (IEEE half, descending), the tail log-mass log(1 - sum p_i)
//                 (half), the log-probability of token t+1 itself (half), then the k ids and the
//                 m tail draws packed LSB-first at id_bits each. The draws come from the
//                 teacher's distribution outside the top k and token t+1; each stands for 1/m of
//                 the mass left there, which makes the cached distribution an unbiased estimate
//                 of the teacher's whole one (top-k alone is biased: it says nothing of the tail).
// At k = 20, m = 6 a record is 80 bytes for a 2,048-token vocabulary and 100 up to 131,072.
// Shards are written whole (temp + rename); an interrupted build keeps its finished shards.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/core/file.h"
#include "lineage/core/hash.h"
#include "lineage/teacher/teacher.h"

namespace lineage::teacher {

constexpr uint64_t kCacheHeaderBytes = 192;

// Bytes per position for k tokens and m tail draws out of a vocabulary of `vocab_size`.
int64_t cache_record_bytes(int64_t k, int64_t vocab_size, int64_t tail_samples = 0);
int id_bits(int64_t vocab_size);

struct CacheSplitInput {
  std::string name;           // "train", "valid"
  const int32_t* tokens;      // (rows, seq_len + 1)
  int64_t rows;
  Digest data_digest;
};

struct CacheBuildOptions {
  int64_t k = 20;
  int64_t tail_samples = 6;
  uint64_t seed = 0;  // for the tail draws; a row's draws depend on (seed, split, row) only
  int64_t seq_len = 256;
  int64_t batch_size = 8;
  int64_t rows_per_shard = 1024;
  bool quiet = false;
  // Data-parallel builds: this process computes the shards whose running index (over all splits)
  // is `part` modulo `parts`, and writes no cache.json (a last pass with parts = 1 finds every
  // shard finished and writes it).
  int64_t part = 0, parts = 1;
};

// Runs `teacher` over every row of every split and writes the cache to `dir`. Finished shards of an
// earlier, interrupted build with the same inputs are kept.
void build_cache(Teacher& teacher, const std::vector<CacheSplitInput>& splits, const CacheBuildOptions& options,
                 const std::filesystem::path& dir);

class TeacherCache {
 public:
  // Opens and checks every shard (header fields, sizes, payload hash).
  explicit TeacherCache(const std::filesystem::path& dir);
  // Refuses a cache made by another teacher, tokenizer or for other rows, naming what differs.
  void check(const std::string& teacher_sha256, const std::string& tokenizer_sha256, const std::string& split,
             const Digest& data_digest, int64_t seq_len) const;
  // Rows of a split: ids (B, T, k) int64, logprobs (B, T, k) and target_logprobs (B, T) float32,
  // tail_ids (B, T, m) int64 when m > 0, on `device`.
  TopK rows(const std::string& split, const std::vector<int64_t>& index, torch::Device device) const;
  int64_t k() const { return k_; }
  int64_t tail_samples() const { return m_; }
  int64_t vocab_size() const { return vocab_; }
  int64_t record_bytes() const { return record_bytes_; }
  int64_t split_rows(const std::string& split) const;
  const nlohmann::json& manifest() const { return manifest_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Shard {
    std::unique_ptr<MappedFile> file;
    int64_t first_row, rows;
  };
  std::filesystem::path dir_;
  nlohmann::json manifest_;
  int64_t k_ = 0, m_ = 0, vocab_ = 0, bits_ = 0, seq_len_ = 0, record_bytes_ = 0;
  std::map<std::string, std::vector<Shard>> splits_;
  std::map<std::string, Digest> data_digests_;
  Digest teacher_digest_{}, tokenizer_digest_{};
};

// A teacher whose top-k comes from a cache, by row (TopKRequest::split and rows), and everything
// else (its name, tokenizer, logits for evaluation, generation) from the teacher the cache was made
// by. The cache must be that teacher's: same model and tokenizer hashes.
class CachedTeacher : public Teacher {
 public:
  CachedTeacher(std::unique_ptr<Teacher> model, const std::filesystem::path& dir);
  const TeacherInfo& info() const override { return model_->info(); }
  const text::Tokenizer& tokenizer() const override { return model_->tokenizer(); }
  Abilities abilities() const override;
  torch::Tensor logits(const torch::Tensor& tokens) override { return model_->logits(tokens); }
  // With request.rows: the cache's top k (all it holds), next-token log-probabilities and tail
  // draws for those rows; without: the model teacher's answer.
  TopK top_k(const torch::Tensor& tokens, const TopKRequest& request) override;
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) override {
    return model_->generate(prompt, options);
  }
  std::vector<std::vector<int32_t>> generate_many(const std::vector<std::vector<int32_t>>& prompts,
                                                  const std::vector<model::GenerateOptions>& options) override {
    return model_->generate_many(prompts, options);
  }
  model::Llama* model() override { return model_->model(); }
  const std::map<std::string, torch::Tensor>* weights() const override { return model_->weights(); }
  void expect_rows(const std::string& split, const Digest& rows_digest, int64_t seq_len) const override;
  const TeacherCache& cache() const { return cache_; }

 private:
  std::unique_ptr<Teacher> model_;
  TeacherCache cache_;
};

}  // namespace lineage::teacher
