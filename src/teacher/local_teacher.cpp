// The in-process teacher: a model file loaded once, frozen, queried batch by batch.
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/hash.h"
#include "lineage/io/model_file.h"
#include "lineage/model/config.h"
#include "lineage/teacher/teacher.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::teacher {

nlohmann::json TeacherInfo::to_json() const {
  nlohmann::json j = {{"source", source},         {"name", name},
                      {"sha256", sha256},         {"tokenizer_sha256", tokenizer_sha256},
                      {"vocab_size", vocab_size}, {"parameters", parameters}};
  j["license"] = license.empty() ? nlohmann::json(nullptr) : nlohmann::json(license);
  return j;
}

LocalTeacher::LocalTeacher(const std::string& path, torch::Device device, torch::Dtype dtype) {
  io::ModelFile mf = io::read_model(path);
  if (!mf.tokenizer) fail("teacher '{}' carries no tokenizer (a student learns the teacher's tokens: give one beside it)", path);
  tokenizer_ = mf.tokenizer;
  model_ = io::make_model(mf, device, dtype);
  model_->eval();
  for (auto& p : model_->parameters()) p.set_requires_grad(false);
  weights_ = std::move(mf.weights);
  info_.source = path;
  info_.name = mf.name;
  info_.license = mf.license;
  info_.sha256 = hex(sha256_file(path));
  info_.tokenizer_sha256 = hex(text::vocab_digest(tokenizer_->vocab()));
  info_.vocab_size = mf.config.vocab_size;
  info_.parameters = mf.config.num_parameters();
}

torch::Tensor LocalTeacher::logits(const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  return model_->forward(tokens.to(model_->device())).to(tokens.device(), torch::kFloat32);
}

TopK LocalTeacher::top_k(const torch::Tensor& tokens, int64_t k) {
  if (k < 1 || k > info_.vocab_size) fail("top-k {} is out of range for a teacher vocabulary of {}", k, info_.vocab_size);
  auto logp = torch::log_softmax(logits(tokens), -1);
  auto [values, ids] = logp.topk(k, -1, /*largest=*/true, /*sorted=*/true);
  return {ids, values};
}

std::vector<int32_t> LocalTeacher::generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) {
  torch::NoGradGuard no_grad;
  return model::generate(model_, prompt, options);
}

std::unique_ptr<Teacher> open_teacher(const std::string& source, torch::Device device, torch::Dtype dtype) {
  if (source.empty()) fail("no teacher given (--teacher PATH)");
  if (source.rfind("http://", 0) == 0 || source.rfind("https://", 0) == 0)
    fail("teacher '{}': HTTP teachers are not available in this build yet; give a model path", source);
  return std::make_unique<LocalTeacher>(source, device, dtype);
}

}  // namespace lineage::teacher
