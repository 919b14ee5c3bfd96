// A teacher is whatever tells the student what to say. One interface, three sources:
//   LocalTeacher   any model file Lineage reads, run in-process: full logits, generation, scoring
//   CachedTeacher  precomputed top-k log-probabilities on disk, answered by row (teacher/cache.h)
//   HttpTeacher    an OpenAI-compatible endpoint: text and top_logprobs (teacher/http_teacher.h)
// Each says what it can give (Abilities); teacher::open (teacher/open.h) is the one place that
// turns a path or URL into one. The trainer asks for the strongest signal a source offers: full
// logits, else top-k.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/core/hash.h"
#include "lineage/model/generate.h"
#include "lineage/model/llama.h"
#include "lineage/text/tokenizer.h"

namespace lineage::teacher {

struct TeacherInfo {
  std::string source;            // path or URL as given
  std::string name;
  std::string sha256;            // content hash of the model file (or folder)
  std::string license;           // when the model says, else ""
  std::string tokenizer_sha256;  // text::vocab_digest of its tokenizer
  int64_t vocab_size = 0;
  int64_t parameters = 0;
  nlohmann::json to_json() const;
};

// What a source can give.
struct Abilities {
  bool logits = false;        // full next-token logits (B, T, V) for any tokens
  bool top_k = false;         // the top k next tokens for any tokens (or, with by_row, for its rows)
  int64_t max_top_k = 0;      // largest k it gives
  bool next_logprob = false;  // the log-probability of the token that follows, beside the top k
  bool tail_draws = false;    // draws from outside the top k (Random-Sampling KD)
  bool generation = false;    // completions of a prompt
  bool weights = false;       // an in-process model whose weights students can start from
  bool by_row = false;        // answers top-k by row of the data it was built for (a cache)
  std::string describe() const;
};

// What a sparse teacher signal should hold.
struct TopKRequest {
  int64_t k = 20;
  torch::Tensor next;        // (B, T) the tokens that actually follow: their log-probabilities too
  int64_t tail_samples = 0;  // tokens drawn from the teacher's distribution outside the top k and
                             // `next` (Random-Sampling KD, Anshumann et al. 2025): with the exact
                             // head they make an unbiased estimate of the whole distribution
  uint64_t seed = 0;         // for the draws
  // For a source that answers by row (Abilities::by_row): the batch's rows in split `split` of the
  // data it was built for. Other sources ignore them.
  std::string split;
  std::vector<int64_t> rows;
};

// Top-k next-token distribution per position.
struct TopK {
  torch::Tensor ids;              // (B, T, K) int64
  torch::Tensor logprobs;         // (B, T, K) float32, log-probabilities at temperature 1, descending
  torch::Tensor target_logprobs;  // (B, T) float32 log-probability of the `next` token, when asked
  torch::Tensor tail_ids;         // (B, T, M) int64 tail draws, when asked
};

// The request answered from full log-probabilities logp (B, T, V) (any device; draws on the CPU).
// `draws`, when given, is the generator of the tail draws (else one seeded by request.seed): rows
// answered in chunks with one generator draw what one call over all rows draws.
TopK top_k_of(const torch::Tensor& logp, const TopKRequest& request, at::Generator* draws = nullptr);

class Teacher {
 public:
  virtual ~Teacher() = default;
  virtual const TeacherInfo& info() const = 0;
  virtual const text::Tokenizer& tokenizer() const = 0;
  virtual Abilities abilities() const = 0;
  bool has_logits() const { return abilities().logits; }
  // tokens (B, T) int64 -> logits (B, T, V) float32 on the tokens' device. Only when has_logits().
  virtual torch::Tensor logits(const torch::Tensor& tokens) = 0;
  // tokens (B, T) -> the k most likely next tokens at every position, and what else the request
  // asks for (a source that cannot give it fails naming what it lacks).
  virtual TopK top_k(const torch::Tensor& tokens, const TopKRequest& request) = 0;
  // A completion of `prompt` (ids, prompt excluded).
  virtual std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) = 0;
  // Many completions; a remote source keeps several in flight. By default one after another.
  virtual std::vector<std::vector<int32_t>> generate_many(const std::vector<std::vector<int32_t>>& prompts,
                                                          const std::vector<model::GenerateOptions>& options);
  // The in-process model and its float32 CPU weights, when Abilities::weights; else nullptr.
  virtual model::Llama* model() { return nullptr; }
  virtual const std::map<std::string, torch::Tensor>* weights() const { return nullptr; }
  // A source that answers by row checks it was built for these rows (split, their digest, context
  // length) and fails naming what differs; others accept anything.
  virtual void expect_rows(const std::string& split, const Digest& rows_digest, int64_t seq_len) const {}
};

// A model run in this process. The model is frozen (no gradients) and kept in `dtype` on `device`.
class LocalTeacher : public Teacher {
 public:
  // `tokenizer_path` ("" : the one the model carries or has beside it) overrides the model's.
  LocalTeacher(const std::string& path, torch::Device device, torch::Dtype dtype = torch::kFloat32,
               const std::string& tokenizer_path = "");
  const TeacherInfo& info() const override { return info_; }
  const text::Tokenizer& tokenizer() const override { return *tokenizer_; }
  Abilities abilities() const override;
  torch::Tensor logits(const torch::Tensor& tokens) override;
  TopK top_k(const torch::Tensor& tokens, const TopKRequest& request) override;
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) override;
  model::Llama* model() override { return &model_; }
  const std::map<std::string, torch::Tensor>* weights() const override { return &weights_; }
  // Rows of logits top_k makes at a time (-1: model::logit_chunk_rows; 0: all at once).
  void set_chunk_rows(int64_t rows) { chunk_rows_ = rows; }

 private:
  int64_t chunk_rows_ = -1;
  TeacherInfo info_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  model::Llama model_{nullptr};
  std::map<std::string, torch::Tensor> weights_;  // float32 CPU copy, for initialising students from it
};

bool is_url(const std::string& source);  // http:// or https://

}  // namespace lineage::teacher
