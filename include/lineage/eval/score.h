// Scoring a model: log-likelihoods of continuations (benchmarks, as lm-evaluation-harness scores
// them), perplexity of a text with a sliding window (llama.cpp's llama-perplexity with
// --ppl-stride; the Hugging Face perplexity guide), and agreement with a teacher on that text (the
// figures llama.cpp's --kl-divergence reports: mean KL, same top token, mean and RMS change in
// the probability of the true token).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "lineage/core/progress.h"
#include "lineage/eval/tasks.h"
#include "lineage/model/llama.h"
#include "lineage/text/tokenizer.h"

namespace lineage::eval {

struct LoglikRequest {
  std::vector<int32_t> context;       // BOS first when the vocabulary has one
  std::vector<int32_t> continuation;  // the tokens scored
};

struct Loglik {
  double logprob = 0;   // sum over the continuation's tokens
  int64_t tokens = 0;   // continuation tokens scored (fewer only when it alone overflows the context)
  bool greedy = false;  // every continuation token is the model's argmax
};

// Batched (longest first, at most `max_batch_tokens` padded tokens per forward pass). A request
// longer than the model's context keeps its last max_seq_len + 1 tokens.
std::vector<Loglik> loglikelihood(model::Llama& model, const std::vector<LoglikRequest>& requests,
                                  int64_t max_batch_tokens = 8192, Progress* progress = nullptr);

// context + continuation split at the token level: encode(context + continuation) cut after the
// tokens of encode(context), so the continuation is tokenized as it would be in running text.
LoglikRequest make_request(const text::Tokenizer& tokenizer, const std::string& context,
                           const std::string& continuation);

struct TaskResult {
  std::string name, path;
  TaskKind kind = TaskKind::kMultipleChoice;
  int64_t items = 0;
  double acc = 0;              // multiple choice: highest log-likelihood; cloze: exact greedy match
  double acc_norm = -1;        // highest log-likelihood per byte of the choice (lm-eval-harness; not for cloze)
  double acc_norm_tokens = -1; // highest mean log-likelihood per token of the choice (llama.cpp's rule)
  double acc_stderr = 0;       // sqrt(acc (1 - acc) / n), as lm-evaluation-harness reports it
  double chance = 0;           // mean of 1 / choices (0 for cloze)
  // Accuracy of always answering choice i, lowest and highest over i: a model with no knowledge
  // but a fixed preference (BoolQ's "no") lands between them, not at `chance`.
  double constant_min = 0, constant_max = 0;
  double perplexity = -1;      // cloze: exp(-mean log-likelihood of the continuation), per item
  int64_t tokens_scored = 0;   // every token of every candidate the model read
  double seconds = 0;
  nlohmann::json to_json() const;
};

TaskResult score_task(model::Llama& model, const text::Tokenizer& tokenizer, const Task& task,
                      int64_t max_batch_tokens = 8192, bool quiet = false);

struct TextScore {
  int64_t tokens = 0;     // in the text
  int64_t positions = 0;  // scored
  double nll = 0;         // mean negative log-likelihood per scored token
  double perplexity = 0;
  // With a reference model (the teacher) on the same windows; -1 without.
  double reference_perplexity = -1;
  double kl = -1;              // mean KL(reference || model)
  double top1_agreement = -1;  // share of positions where both rank the same token first
  double mean_delta_p = 0;     // mean of p_model(true) - p_reference(true)
  double rms_delta_p = 0;
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Windows of `window` tokens (<= the model's context); after the first, each moves by `stride`
// and scores only the tokens no earlier window scored, so every token but the first is scored
// once with at least window - stride tokens before it (all of them in the first window).
TextScore score_text(model::Llama& model, const std::vector<int32_t>& tokens, int64_t window, int64_t stride,
                     model::Llama* reference = nullptr, int64_t batch_windows = 4, bool quiet = false);

// llama.cpp's llama-perplexity method, so figures compare with the ones its users publish:
// non-overlapping chunks of `window` tokens (a partial last chunk is dropped), each chunk's first
// token replaced by BOS when bos_id >= 0 (llama.cpp does so when the vocabulary adds BOS), and only
// the second half of each chunk scored: tokens window/2 + 1 .. window - 1. Needs 2 chunks or more.
TextScore score_chunks(model::Llama& model, const std::vector<int32_t>& tokens, int64_t window, int32_t bos_id,
                       model::Llama* reference = nullptr, int64_t batch_windows = 4, bool quiet = false);

}  // namespace lineage::eval
