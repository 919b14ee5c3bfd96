// The in-process teacher: a model file loaded once, frozen, queried batch by batch.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
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

std::string Abilities::describe() const {
  std::vector<std::string> can;
  if (logits) can.push_back("full logits");
  if (top_k) can.push_back(fmt::format("top-{}{}", max_top_k, by_row ? " by row" : ""));
  if (next_logprob) can.push_back("next-token log-probability");
  if (tail_draws) can.push_back("tail draws");
  if (generation) can.push_back("generation");
  if (weights) can.push_back("weights");
  return can.empty() ? std::string("nothing") : fmt::format("{}", fmt::join(can, ", "));
}

std::vector<std::vector<int32_t>> Teacher::generate_many(const std::vector<std::vector<int32_t>>& prompts,
                                                         const std::vector<model::GenerateOptions>& options) {
  if (options.size() != prompts.size()) fail("{} prompts but {} generation options", prompts.size(), options.size());
  std::vector<std::vector<int32_t>> out;
  out.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) out.push_back(generate(prompts[i], options[i]));
  return out;
}

LocalTeacher::LocalTeacher(const std::string& path, torch::Device device, torch::Dtype dtype,
                           const std::string& tokenizer_path) {
  io::ModelFile mf = io::read_model(path, tokenizer_path);
  if (!mf.tokenizer)
    fail("model '{}' carries no tokenizer and none is beside it: give one beside it or pass --tokenizer", path);
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

Abilities LocalTeacher::abilities() const {
  Abilities a;
  a.logits = a.top_k = a.next_logprob = a.tail_draws = a.generation = a.weights = true;
  a.max_top_k = info_.vocab_size;
  return a;
}

torch::Tensor LocalTeacher::logits(const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  return model_->forward(tokens.to(model_->device())).to(tokens.device(), torch::kFloat32);
}

TopK LocalTeacher::top_k(const torch::Tensor& tokens, const TopKRequest& request) {
  if (request.k < 1 || request.k > info_.vocab_size)
    fail("top-k {} is out of range for a teacher vocabulary of {}", request.k, info_.vocab_size);
  if (request.next.defined() && request.next.sizes() != tokens.sizes())
    fail("next tokens ({}) must have the shape of the tokens ({})", fmt::join(request.next.sizes(), ", "),
         fmt::join(tokens.sizes(), ", "));
  const int64_t B = tokens.size(0), T = tokens.size(1), V = info_.vocab_size;
  int64_t chunk = chunk_rows_ < 0 ? model::logit_chunk_rows(B * T, V) : chunk_rows_;
  if (chunk <= 0 || chunk >= B * T) return top_k_of(torch::log_softmax(logits(tokens), -1), request);
  // A large vocabulary: the logits of `chunk` positions at a time, from the hidden states.
  torch::NoGradGuard no_grad;
  auto h = model_->hidden(tokens.to(model_->device()));
  h = h.reshape({B * T, h.size(-1)});  // (B*T, C)
  auto head = model_->head_weight();   // (V, C)
  at::Generator gen = at::detail::createCPUGenerator(request.seed);
  std::vector<TopK> parts;
  for (int64_t b = 0; b < B * T; b += chunk) {
    const int64_t n = std::min(chunk, B * T - b);
    auto logp = torch::log_softmax(torch::matmul(h.narrow(0, b, n), head.t()).to(torch::kFloat32), -1)
                    .to(tokens.device()).unsqueeze(0);  // (1, n, V)
    TopKRequest part = request;
    if (request.next.defined()) part.next = request.next.reshape({1, -1}).narrow(1, b, n);
    parts.push_back(top_k_of(logp, part, &gen));
  }
  auto join = [&](auto field, int64_t last) {
    std::vector<torch::Tensor> ts;
    for (auto& p : parts) ts.push_back((p.*field).squeeze(0));
    auto all = torch::cat(ts, 0);
    return last > 0 ? all.reshape({B, T, last}) : all.reshape({B, T});
  };
  TopK out;
  out.ids = join(&TopK::ids, request.k);
  out.logprobs = join(&TopK::logprobs, request.k);
  if (request.next.defined()) out.target_logprobs = join(&TopK::target_logprobs, 0);
  if (request.tail_samples > 0) out.tail_ids = join(&TopK::tail_ids, request.tail_samples);
  return out;
}

TopK top_k_of(const torch::Tensor& logp, const TopKRequest& r, at::Generator* draws) {
  const int64_t V = logp.size(-1);
  if (r.tail_samples < 0) fail("tail samples must be >= 0, got {}", r.tail_samples);
  auto [values, ids] = logp.topk(r.k, -1, /*largest=*/true, /*sorted=*/true);
  TopK out{ids, values, {}, {}};
  torch::Tensor next;
  if (r.next.defined()) {
    next = r.next.to(logp.device(), torch::kLong).unsqueeze(-1);
    out.target_logprobs = logp.gather(-1, next).squeeze(-1);
  }
  if (r.tail_samples > 0) {
    // Draw from the teacher's distribution with the top k (and the next token) taken out. A row
    // with nothing left draws anything: its weight, the remaining mass, is 0.
    auto q = logp.detach().to(torch::kCPU, torch::kFloat32).exp().reshape({-1, V});
    q.scatter_(-1, ids.to(torch::kCPU).reshape({-1, r.k}), 0.0);
    if (next.defined()) q.scatter_(-1, next.to(torch::kCPU).reshape({-1, 1}), 0.0);
    q = torch::where(q.sum(-1, true) > 0, q, torch::ones_like(q));
    at::Generator own;
    if (!draws) own = at::detail::createCPUGenerator(r.seed);
    auto drawn = torch::multinomial(q, r.tail_samples, /*replacement=*/true, draws ? *draws : own);
    auto shape = ids.sizes().vec();
    shape.back() = r.tail_samples;
    out.tail_ids = drawn.reshape(shape).to(logp.device());
  }
  return out;
}

std::vector<int32_t> LocalTeacher::generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) {
  torch::NoGradGuard no_grad;
  return model::generate(model_, prompt, options);
}

bool is_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }


}  // namespace lineage::teacher
