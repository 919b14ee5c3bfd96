// The serving engine: one model, one scheduler thread, many requests. Generation is batched the
// way llama.cpp's server batches its slots (continuous batching): every sequence keeps its own KV
// cache, a new request is prefilled as soon as a slot is free, and each step decodes one token for
// every running sequence in one batched pass (Llama::decode_slots). Scoring requests (prompt
// log-probabilities, `echo`) that wait together run as one right-padded forward pass.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "lineage/model/sampler.h"
#include "lineage/teacher/teacher.h"

#include "lineage/protect/antidistill.h"

namespace lineage::protect {
class Watermark;
}
namespace lineage::model {
class CpuDecoderBatch;
}

namespace lineage::serve {

// One token as the API reports it: its log-probability under the model (temperature 1, as
// OpenAI and vLLM report them) and, when asked, the most likely alternatives at that position.
struct TokenOut {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // descending
};

struct GenRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  model::SamplingOptions sampling;
  int n = 1;                       // choices; choice i samples with seed + i
  std::vector<int32_t> stop_ids;   // end of generation (not emitted)
  int top_logprobs = 0;            // alternatives per token
  // Sees every token of every choice as it is chosen; returning false ends that choice ("stop").
  std::function<bool(int choice, const TokenOut&)> on_token;
};

struct GenResult {
  std::vector<std::vector<TokenOut>> choices;
  std::vector<std::string> finish_reasons;  // "stop" or "length"
};

// Log-probability of every token of `tokens` after the first, given those before it.
struct ScoreRequest {
  std::vector<int32_t> tokens;
  int top_logprobs = 0;
};

class Engine {
 public:
  Engine(const std::string& model_path, const std::string& tokenizer_path, torch::Device device, torch::Dtype dtype,
         int max_batch, int max_queue);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  teacher::LocalTeacher& model() { return *model_; }
  const text::Tokenizer& tokenizer() const { return model_->tokenizer(); }
  // From now on every distribution the engine samples from or reports (generated tokens, their
  // log-probabilities and alternatives, echoed prompt scores) carries the watermark's bias.
  // Set before the first request.
  void set_watermark(std::shared_ptr<const protect::Watermark> watermark) { watermark_ = std::move(watermark); }
  // Antidistillation sampling and fingerprints (protect/antidistill.h): every distribution the
  // engine samples from or reports gets λ·Δ of each adjuster (before the watermark's bias). The
  // proxies run batched beside the model, once per step. Set before the first request.
  void set_adjusters(std::vector<std::shared_ptr<protect::ProxyAdjuster>> adjusters) { adjusters_ = std::move(adjusters); }
  // Speculative decoding (model/speculative.h): while at most `max_batch` sequences run, each step
  // lets `draft` (a model with this tokenizer) propose up to `tokens` tokens per sequence, checked in
  // one forward pass of the model; above it, the usual batched step (a draft's gain per sequence is
  // worth less than batching many). Output follows the model's distribution either way. Set before
  // the first request.
  void set_draft(const std::string& path, int tokens, int max_batch);
  bool has_draft() const { return static_cast<bool>(draft_); }
  int64_t draft_tokens_proposed() const { return drafted_.load(); }
  int64_t draft_tokens_accepted() const { return accepted_.load(); }
  int64_t context_length() const { return context_; }

  // Queue a request; the future holds the answer or the error. Fails (Overloaded) when max_queue
  // requests already wait.
  std::future<GenResult> generate(GenRequest request);
  std::future<std::vector<TokenOut>> score(ScoreRequest request);
  size_t waiting() const;
  int active() const { return active_.load(); }  // sequences being decoded now
  int max_batch() const { return max_batch_; }
  // Finishes what is queued and running, then stops the scheduler.
  void shutdown();
  // Fails every queued and running request with Overloaded("the server is shutting down") at the
  // next step (the end of a drain that ran out of time); new requests are refused from now on.
  void cancel_all();

  struct Overloaded : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

 private:
  struct GenJob;
  struct ScoreJob;
  struct Seq;
  template <typename Job, typename Request>
  auto enqueue(std::deque<std::unique_ptr<Job>>& queue, Request request);
  void loop();
  void run_scores(std::vector<std::unique_ptr<ScoreJob>>& jobs);
  void admit(std::unique_ptr<GenJob> job, std::vector<std::unique_ptr<Seq>>& active);
  void step(std::vector<std::unique_ptr<Seq>>& active);
  TokenOut token_out(const torch::Tensor& logp_row, int32_t id, int top) const;
  void speculate(Seq& s);
  // The next-token scores of `row` (V) after `context`: the adjusters' nudges, then the watermark.
  void adjust(std::vector<protect::ProxyAdjuster::Stream>* streams, std::span<const int32_t> context,
              torch::Tensor& row, double temperature, int64_t capacity);

  std::unique_ptr<teacher::LocalTeacher> model_;
  std::unique_ptr<model::CpuDecoderBatch> batch_;  // the batched step's buffers (CPU decoders)
  int64_t context_ = 0;
  int max_batch_, max_queue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<GenJob>> gen_queue_;
  std::deque<std::unique_ptr<ScoreJob>> score_queue_;
  bool stopping_ = false;
  std::atomic<int> active_{0};
  std::atomic<bool> cancel_{false};
  std::shared_ptr<const protect::Watermark> watermark_;
  std::vector<std::shared_ptr<protect::ProxyAdjuster>> adjusters_;
  model::Llama draft_{nullptr};
  int draft_tokens_ = 0, draft_max_batch_ = 1;
  std::atomic<int64_t> drafted_{0}, accepted_{0};
  std::thread thread_;
};

}  // namespace lineage::serve
