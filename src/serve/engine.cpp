// Continuous batching over one model. See src/serve/engine.h.
#include "serve/engine.h"

#include <algorithm>

#include "lineage/core/error.h"
#include "lineage/io/model_file.h"
#include "lineage/model/cpu_decoder.h"
#include "lineage/model/llama.h"
#include "lineage/model/speculative.h"
#include "lineage/text/vocab_digest.h"
#include "lineage/protect/antidistill.h"
#include "lineage/protect/watermark.h"

namespace lineage::serve {

struct Engine::GenJob {
  GenRequest req;
  std::promise<GenResult> promise;
  GenResult result;
  int remaining = 0;
  bool failed = false;
};

struct Engine::ScoreJob {
  ScoreRequest req;
  std::promise<std::vector<TokenOut>> promise;
};

struct Engine::Seq {
  std::shared_ptr<GenJob> job;
  int choice = 0;
  std::unique_ptr<model::IncrementalDecoder> decoder;  // the model's cache for this sequence
  int64_t capacity = 0;
  std::unique_ptr<model::Sampler> sampler;
  torch::Tensor logits;  // (V) float32 CPU: the next token's scores (watermarked when on)
  std::vector<int32_t> context;  // prompt and generated ids: what the watermark is keyed on
  std::vector<protect::ProxyAdjuster::Stream> streams;  // one per adjuster: the proxies' caches
  std::unique_ptr<model::IncrementalDecoder> draft;     // speculative decoding: the draft's cache
  std::vector<double> residual;  // after a rejected draft token: the next token is drawn from this
  bool done = false;
};

Engine::Engine(const std::string& model_path, const std::string& tokenizer_path, torch::Device device, torch::Dtype dtype,
               int max_batch, int max_queue)
    : max_batch_(std::max(1, max_batch)), max_queue_(std::max(1, max_queue)) {
  model_ = std::make_unique<teacher::LocalTeacher>(model_path, device, dtype, tokenizer_path);
  batch_ = std::make_unique<model::CpuDecoderBatch>();
  context_ = (*model_->model())->config().max_seq_len;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::cancel_all() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cancel_ = true;
  }
  cv_.notify_all();
}

size_t Engine::waiting() const {
  std::lock_guard lock(mu_);
  return gen_queue_.size() + score_queue_.size();
}

template <typename Job, typename Request>
auto Engine::enqueue(std::deque<std::unique_ptr<Job>>& queue, Request request) {
  auto job = std::make_unique<Job>();
  job->req = std::move(request);
  auto f = job->promise.get_future();
  {
    std::lock_guard lock(mu_);
    if (stopping_) throw Overloaded("the server is shutting down");
    if (static_cast<int>(gen_queue_.size() + score_queue_.size()) >= max_queue_)
      throw Overloaded(fmt::format("{} requests are already waiting", max_queue_));
    queue.push_back(std::move(job));
  }
  cv_.notify_one();
  return f;
}

std::future<GenResult> Engine::generate(GenRequest request) { return enqueue(gen_queue_, std::move(request)); }

std::future<std::vector<TokenOut>> Engine::score(ScoreRequest request) { return enqueue(score_queue_, std::move(request)); }

TokenOut Engine::token_out(const torch::Tensor& logp_row, int32_t id, int top) const {
  TokenOut t;
  t.id = id;
  t.logprob = logp_row[id].item<float>();
  if (top > 0) {
    auto [v, i] = logp_row.topk(std::min<int64_t>(top, logp_row.size(0)));
    auto va = v.accessor<float, 1>();
    auto ia = i.accessor<int64_t, 1>();
    for (int64_t j = 0; j < v.size(0); ++j) t.top.emplace_back(static_cast<int32_t>(ia[j]), va[j]);
  }
  return t;
}

void Engine::loop() {
  torch::NoGradGuard no_grad;
  std::vector<std::unique_ptr<Seq>> active;
  while (true) {
    std::vector<std::unique_ptr<ScoreJob>> scores;
    std::vector<std::unique_ptr<GenJob>> admitted;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !gen_queue_.empty() || !score_queue_.empty() || !active.empty(); });
      if (cancel_) {  // a drain ran out of time: everything still here fails
        auto cancelled = std::make_exception_ptr(Overloaded("the server is shutting down"));
        for (auto& j : gen_queue_) j->promise.set_exception(cancelled);
        for (auto& j : score_queue_) j->promise.set_exception(cancelled);
        gen_queue_.clear();
        score_queue_.clear();
        for (auto& s : active)
          if (!s->job->failed) {
            s->job->failed = true;
            s->job->promise.set_exception(cancelled);
          }
        active.clear();
        active_ = 0;
      }
      if (stopping_ && gen_queue_.empty() && score_queue_.empty() && active.empty()) break;
      while (!score_queue_.empty()) {
        scores.push_back(std::move(score_queue_.front()));
        score_queue_.pop_front();
      }
      int slots = max_batch_ - static_cast<int>(active.size());
      while (!gen_queue_.empty() && (slots >= gen_queue_.front()->req.n || (active.empty() && admitted.empty()))) {
        slots -= gen_queue_.front()->req.n;
        admitted.push_back(std::move(gen_queue_.front()));
        gen_queue_.pop_front();
      }
    }
    if (!scores.empty()) run_scores(scores);
    for (auto& job : admitted) admit(std::move(job), active);
    if (!active.empty()) step(active);
    active_ = static_cast<int>(active.size());
  }
}

void Engine::run_scores(std::vector<std::unique_ptr<ScoreJob>>& jobs) {
  auto& m = (*model_->model());
  const int64_t V = m->config().vocab_size;
  // Groups small enough that the (B, L, V) log-probabilities stay under ~512 MiB.
  size_t i = 0;
  while (i < jobs.size()) {
    size_t j = i;
    int64_t L = 0;
    while (j < jobs.size()) {
      int64_t l = std::max<int64_t>(L, jobs[j]->req.tokens.size());
      if (j > i && static_cast<int64_t>(j - i + 1) * l * V > (int64_t{1} << 27)) break;
      L = l;
      ++j;
    }
    try {
      const int64_t B = static_cast<int64_t>(j - i);
      auto tok = torch::zeros({B, L}, torch::kLong);
      auto tk = tok.accessor<int64_t, 2>();
      int top = 0;
      for (size_t b = i; b < j; ++b) {
        auto& t = jobs[b]->req.tokens;
        for (size_t p = 0; p < t.size(); ++p) tk[b - i][p] = t[p];
        top = std::max(top, jobs[b]->req.top_logprobs);
      }
      auto logits = m->forward(tok.to(m->device())).to(torch::kFloat32);  // (B, L, V)
      if (!adjusters_.empty()) {
        // λ·Δ after every prefix (temperature 1: these are the scores OpenAI's API reports).
        auto nudge = torch::zeros({B, L, V}, torch::kFloat32);
        for (auto& a : adjusters_)
          for (size_t b = i; b < j; ++b) {
            auto& t = jobs[b]->req.tokens;
            if (t.empty()) continue;
            nudge[b - i].narrow(0, 0, static_cast<int64_t>(t.size())) += a->params().lambda * a->prompt_deltas(t);
          }
        logits = logits + nudge.to(logits.device());
      }
      if (watermark_) {
        // The green lists of every position, as one (B, L, V) bias added on the device.
        auto bias = torch::zeros({B, L, V}, torch::kFloat32);
        const float d = static_cast<float>(watermark_->params().delta);
        for (size_t b = i; b < j; ++b) {
          auto& t = jobs[b]->req.tokens;
          for (size_t p = 0; p + 1 < t.size(); ++p) {
            auto mask = watermark_->green_mask(std::span<const int32_t>(t.data(), p + 1), V);
            float* row = bias[b - i][p].data_ptr<float>();
            for (int64_t v = 0; v < V; ++v) row[v] = mask[v] ? d : 0.0f;
          }
        }
        logits = logits + bias.to(logits.device());
      }
      auto logp = torch::log_softmax(logits, -1);
      // Only what is sent back leaves the device: the real tokens' log-probabilities and the top.
      auto chosen = logp.gather(-1, tok.to(logp.device()).roll(-1, 1).unsqueeze(-1)).squeeze(-1).to(torch::kCPU).contiguous();
      auto ca = chosen.accessor<float, 2>();
      torch::Tensor tv, ti;
      if (top > 0) {
        std::tie(tv, ti) = logp.topk(std::min<int64_t>(top, V), -1);
        tv = tv.to(torch::kCPU).contiguous();
        ti = ti.to(torch::kCPU).contiguous();
      }
      for (size_t b = i; b < j; ++b) {
        auto& req = jobs[b]->req;
        std::vector<TokenOut> out;
        const int kk = std::min<int>(req.top_logprobs, top);
        for (size_t p = 1; p < req.tokens.size(); ++p) {
          TokenOut t;
          t.id = req.tokens[p];
          t.logprob = ca[b - i][p - 1];
          if (kk > 0) {
            auto va = tv.accessor<float, 3>();
            auto ia = ti.accessor<int64_t, 3>();
            for (int k = 0; k < kk; ++k) t.top.emplace_back(static_cast<int32_t>(ia[b - i][p - 1][k]), va[b - i][p - 1][k]);
          }
          out.push_back(std::move(t));
        }
        jobs[b]->promise.set_value(std::move(out));
      }
    } catch (...) {
      for (size_t b = i; b < j; ++b) jobs[b]->promise.set_exception(std::current_exception());
    }
    i = j;
  }
}

void Engine::admit(std::unique_ptr<GenJob> owned, std::vector<std::unique_ptr<Seq>>& active) {
  std::shared_ptr<GenJob> job(std::move(owned));
  auto& req = job->req;
  job->result.choices.resize(req.n);
  job->result.finish_reasons.assign(req.n, "length");
  if (req.max_tokens <= 0) {
    job->promise.set_value(std::move(job->result));
    return;
  }
  try {
    auto& m = (*model_->model());
    const int64_t P = static_cast<int64_t>(req.prompt.size());
    if (P == 0) fail("the prompt is empty");
    if (P > context_) fail("the prompt has {} tokens, more than the context length {}", P, context_);
    const int64_t capacity = std::min<int64_t>(context_, P + req.max_tokens - 1);
    model::IncrementalDecoder decoder(m, capacity);
    auto prefill = decoder.feed(req.prompt, false);
    auto last = torch::from_blob(prefill.data(), {static_cast<int64_t>(prefill.size())}, torch::kFloat32).clone();
    std::vector<protect::ProxyAdjuster::Stream> streams(adjusters_.size());
    for (size_t a = 0; a < adjusters_.size(); ++a) {
      adjusters_[a]->count_request();
      adjusters_[a]->advance(streams[a], req.prompt, capacity);
      adjusters_[a]->apply(streams[a], {last.data_ptr<float>(), static_cast<size_t>(last.numel())},
                           req.sampling.temperature);
    }
    if (watermark_) watermark_->bias(req.prompt, {last.data_ptr<float>(), static_cast<size_t>(last.numel())});
    job->remaining = req.n;
    for (int c = 0; c < req.n; ++c) {
      auto s = std::make_unique<Seq>();
      s->job = job;
      s->choice = c;
      s->capacity = capacity;
      auto clone = [](model::KVCache c) {
        for (auto& t : c.k) t = t.clone();
        for (auto& t : c.v) t = t.clone();
        return c;
      };
      if (c + 1 < req.n) {
        s->decoder = std::make_unique<model::IncrementalDecoder>(decoder.copy());
        for (auto& st : streams) {
          auto copy = st;
          copy.plus = clone(st.plus);
          copy.minus = clone(st.minus);
          s->streams.push_back(std::move(copy));
        }
      } else {
        s->decoder = std::make_unique<model::IncrementalDecoder>(std::move(decoder));
        s->streams = std::move(streams);
      }
      auto opts = req.sampling;
      opts.seed = req.sampling.seed + static_cast<uint64_t>(c);
      s->sampler = std::make_unique<model::Sampler>(opts);
      s->logits = last;
      s->context = req.prompt;
      active.push_back(std::move(s));
    }
  } catch (...) {
    job->promise.set_exception(std::current_exception());
  }
}

void Engine::step(std::vector<std::unique_ptr<Seq>>& active) {
  std::vector<Seq*> forward, speculative;
  std::vector<int32_t> next_ids;
  const bool speculating = draft_ && static_cast<int>(active.size()) <= draft_max_batch_;
  for (auto& s : active) {
    auto& job = *s->job;
    if (job.failed) {
      s->done = true;
      continue;
    }
    try {
      auto& req = job.req;
      int32_t id;
      if (!s->residual.empty()) {  // a draft token was rejected here: norm(max(0, p − q)) (speculate)
        id = s->sampler->draw(s->residual);
        s->residual.clear();
      } else {
        id = s->sampler->sample({s->logits.data_ptr<float>(), static_cast<size_t>(s->logits.numel())});
      }
      auto& out = job.result.choices[s->choice];
      if (std::find(req.stop_ids.begin(), req.stop_ids.end(), id) != req.stop_ids.end()) {
        job.result.finish_reasons[s->choice] = "stop";
        s->done = true;
        continue;
      }
      out.push_back(token_out(torch::log_softmax(s->logits, -1), id, req.top_logprobs));
      if (req.on_token && !req.on_token(s->choice, out.back())) {
        job.result.finish_reasons[s->choice] = "stop";
        s->done = true;
      } else if (static_cast<int>(out.size()) >= req.max_tokens || s->decoder->length() >= s->capacity) {
        s->done = true;  // "length"
      } else {
        s->context.push_back(id);
        if (speculating) {
          speculative.push_back(s.get());
        } else {
          forward.push_back(s.get());
          next_ids.push_back(id);
        }
      }
    } catch (...) {
      job.failed = true;
      job.promise.set_exception(std::current_exception());
      s->done = true;
    }
  }
  if (!forward.empty()) {
    std::vector<model::IncrementalDecoder*> decoders;
    for (auto* s : forward) decoders.push_back(s->decoder.get());
    try {
      auto logits = model::IncrementalDecoder::step(decoders, next_ids, *batch_);
      for (size_t a = 0; a < adjusters_.size(); ++a) {
        std::vector<protect::ProxyAdjuster::Stream*> streams;
        for (auto* s : forward) streams.push_back(&s->streams[a]);
        adjusters_[a]->step(streams, next_ids);
      }
      for (size_t i = 0; i < forward.size(); ++i) {
        auto& s = *forward[i];
        s.logits = logits[i].contiguous();
        for (size_t a = 0; a < adjusters_.size(); ++a)
          adjusters_[a]->apply(s.streams[a], {s.logits.data_ptr<float>(), static_cast<size_t>(s.logits.numel())},
                               s.job->req.sampling.temperature);
        if (watermark_) watermark_->bias(s.context, {s.logits.data_ptr<float>(), static_cast<size_t>(s.logits.numel())});
      }
    } catch (...) {
      for (auto* s : forward) {
        if (!s->job->failed) s->job->promise.set_exception(std::current_exception());
        s->job->failed = true;
        s->done = true;
      }
    }
  }
  for (auto* s : speculative) {
    try {
      speculate(*s);
    } catch (...) {
      if (!s->job->failed) s->job->promise.set_exception(std::current_exception());
      s->job->failed = true;
      s->done = true;
    }
  }
  // Finished sequences leave; a job answers when its last choice is done.
  std::vector<std::unique_ptr<Seq>> still;
  for (auto& s : active) {
    if (!s->done) {
      still.push_back(std::move(s));
      continue;
    }
    auto& job = *s->job;
    if (!job.failed && --job.remaining == 0) job.promise.set_value(std::move(job.result));
  }
  active = std::move(still);
}

void Engine::set_draft(const std::string& path, int tokens, int max_batch) {
  if (tokens < 1) fail("--draft-tokens must be >= 1, got {}", tokens);
  if (max_batch < 1) fail("--draft-max-batch must be >= 1, got {}", max_batch);
  auto file = io::read_model(path);
  const auto& tok = tokenizer();
  if (file.config.vocab_size != tok.vocab_size() ||
      (file.tokenizer && text::vocab_digest(file.tokenizer->vocab()) != text::vocab_digest(tok.vocab())))
    fail("draft '{}' does not use the served model's tokenizer ({} tokens against {}): a draft must split text as the "
         "model does",
         path, file.config.vocab_size, tok.vocab_size());
  auto& m = (*model_->model());
  draft_ = io::make_model(file, m->device(), m->dtype());
  draft_tokens_ = tokens;
  draft_max_batch_ = max_batch;
}

void Engine::adjust(std::vector<protect::ProxyAdjuster::Stream>* streams, std::span<const int32_t> context,
                    torch::Tensor& row, double temperature, int64_t capacity) {
  protect::adjust_logits(adjusters_, *streams, watermark_.get(), context,
                         {row.data_ptr<float>(), static_cast<size_t>(row.numel())}, temperature, capacity);
}

// One speculative round for a sequence whose last context token was just chosen (the cache holds
// the rest): the draft proposes k tokens, one forward pass of the model over [last, drafts] gives
// k + 1 distributions, drafts are kept with probability min(1, p/q), and the sequence's next
// scores are those after the last kept token — with the residual to draw from when a draft was
// rejected (Leviathan et al. 2023; model/speculative.h has the same rule for generate).
void Engine::speculate(Seq& s) {
  auto& job = *s.job;
  auto& req = job.req;
  auto& out = job.result.choices[s.choice];
  const int64_t n = static_cast<int64_t>(s.context.size());
  if (!s.draft)
    s.draft = std::make_unique<model::IncrementalDecoder>(draft_, std::min(draft_->config().max_seq_len, s.capacity));
  int64_t k = std::min<int64_t>({draft_tokens_, s.capacity - n, req.max_tokens - static_cast<int64_t>(out.size()),
                                 s.draft->capacity() - n + 1});
  std::vector<int32_t> drafts;
  std::vector<std::vector<double>> q;
  if (k > 0) {
    auto& d = *s.draft;
    d.rewind(n - 1);
    if (d.length() < n - 1)
      d.feed(std::span<const int32_t>(s.context.data() + d.length(), static_cast<size_t>(n - 1 - d.length())), false);
    auto logits = d.feed(std::span<const int32_t>(&s.context[n - 1], 1), false);
    for (int64_t i = 0; i < k; ++i) {
      q.push_back(s.sampler->distribution(logits));
      drafts.push_back(s.sampler->draw(q.back()));
      if (i + 1 < k) logits = d.feed(std::span<const int32_t>(&drafts.back(), 1), false);
    }
  }
  k = static_cast<int64_t>(drafts.size());
  std::vector<int32_t> verify{s.context[n - 1]};
  verify.insert(verify.end(), drafts.begin(), drafts.end());
  auto verified = s.decoder->feed(verify, true);  // (k + 1, V); the cache grows by k + 1
  auto rows = torch::from_blob(verified.data(), {k + 1, static_cast<int64_t>(verified.size()) / (k + 1)}, torch::kFloat32);
  std::vector<int32_t> ext(s.context);
  ext.insert(ext.end(), drafts.begin(), drafts.end());
  std::vector<torch::Tensor> row(k + 1);
  for (int64_t i = 0; i <= k; ++i) {
    row[i] = rows[i].contiguous().clone();
    adjust(&s.streams, std::span<const int32_t>(ext.data(), static_cast<size_t>(n + i)), row[i],
           req.sampling.temperature, s.capacity);
  }
  drafted_ += k;
  std::vector<std::vector<double>> p;
  for (int64_t i = 0; i < k; ++i)
    p.push_back(s.sampler->distribution({row[i].data_ptr<float>(), static_cast<size_t>(row[i].numel())}));
  auto verdict = model::judge_drafts(*s.sampler, p, q, drafts);
  const int64_t a = verdict.kept;
  accepted_ += a;
  s.residual = std::move(verdict.residual);  // the next token's draw, after a rejection
  for (int64_t i = 0; i < a; ++i) {
    const int32_t x = drafts[i];
    if (std::find(req.stop_ids.begin(), req.stop_ids.end(), x) != req.stop_ids.end()) {
      job.result.finish_reasons[s.choice] = "stop";
      s.done = true;
      return;
    }
    out.push_back(token_out(torch::log_softmax(row[i], -1), x, req.top_logprobs));
    s.context.push_back(x);
    if (req.on_token && !req.on_token(s.choice, out.back())) {
      job.result.finish_reasons[s.choice] = "stop";
      s.done = true;
      return;
    }
    if (static_cast<int>(out.size()) >= req.max_tokens) {
      s.done = true;  // "length"
      return;
    }
  }
  s.decoder->rewind(n + a);  // the context and the kept drafts; the rejected ones are overwritten
  s.logits = row[a];
}

}  // namespace lineage::serve
