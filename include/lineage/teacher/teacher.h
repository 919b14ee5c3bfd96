// A teacher is whatever tells the student what to say. One interface, three sources:
//   LocalTeacher   any model file Lineage reads, run in-process: full logits, generation, scoring
//   TeacherCache   precomputed top-k log-probabilities on disk (teacher/cache.h)
//   HTTP teacher   an OpenAI-compatible endpoint: text and top_logprobs (the serving issue)
// The trainer asks for the strongest signal a source offers: full logits, else top-k.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

// What a sparse teacher signal should hold.
struct TopKRequest {
  int64_t k = 20;
  torch::Tensor next;        // (B, T) the tokens that actually follow: their log-probabilities too
  int64_t tail_samples = 0;  // tokens drawn from the teacher's distribution outside the top k and
                             // `next` (Random-Sampling KD, Anshumann et al. 2025): with the exact
                             // head they make an unbiased estimate of the whole distribution
  uint64_t seed = 0;         // for the draws
};

// Top-k next-token distribution per position.
struct TopK {
  torch::Tensor ids;              // (B, T, K) int64
  torch::Tensor logprobs;         // (B, T, K) float32, log-probabilities at temperature 1, descending
  torch::Tensor target_logprobs;  // (B, T) float32 log-probability of the `next` token, when asked
  torch::Tensor tail_ids;         // (B, T, M) int64 tail draws, when asked
};

// The request answered from full log-probabilities logp (B, T, V) (any device; draws on the CPU).
TopK top_k_of(const torch::Tensor& logp, const TopKRequest& request);

class Teacher {
 public:
  virtual ~Teacher() = default;
  virtual const TeacherInfo& info() const = 0;
  virtual const text::Tokenizer& tokenizer() const = 0;
  virtual bool has_logits() const = 0;
  // tokens (B, T) int64 -> logits (B, T, V) float32 on the tokens' device. Only when has_logits().
  virtual torch::Tensor logits(const torch::Tensor& tokens) = 0;
  // tokens (B, T) -> the k most likely next tokens at every position, and what else the request
  // asks for (a source that cannot give it fails naming what it lacks).
  virtual TopK top_k(const torch::Tensor& tokens, const TopKRequest& request) = 0;
  // A completion of `prompt` (ids, prompt excluded).
  virtual std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) = 0;
};

// A model run in this process. The model is frozen (no gradients) and kept in `dtype` on `device`.
class LocalTeacher : public Teacher {
 public:
  LocalTeacher(const std::string& path, torch::Device device, torch::Dtype dtype = torch::kFloat32);
  const TeacherInfo& info() const override { return info_; }
  const text::Tokenizer& tokenizer() const override { return *tokenizer_; }
  bool has_logits() const override { return true; }
  torch::Tensor logits(const torch::Tensor& tokens) override;
  TopK top_k(const torch::Tensor& tokens, const TopKRequest& request) override;
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) override;
  model::Llama& model() { return model_; }
  const std::map<std::string, torch::Tensor>& weights() const { return weights_; }

 private:
  TeacherInfo info_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  model::Llama model_{nullptr};
  std::map<std::string, torch::Tensor> weights_;  // float32 CPU copy, for initialising students from it
};

bool is_url(const std::string& source);  // http:// or https://

// Opens the teacher `source` names: a model path (any format read_model reads). An http(s) URL
// is an HttpTeacher (teacher/http_teacher.h), which needs the student's tokenizer: open it there.
std::unique_ptr<Teacher> open_teacher(const std::string& source, torch::Device device,
                                      torch::Dtype dtype = torch::kFloat32);

}  // namespace lineage::teacher
