// A teacher reached through an OpenAI-compatible API (vLLM, llama.cpp's llama-server, Ollama,
// hosted APIs, `lineage serve`). What it can give is probed at start and stated:
//   text          sequence-level KD: completions of the prompts (/v1/completions)
//   top_logprobs  top-k KD: the prompt scored with echo + logprobs (at most 20 alternatives, as
//                 OpenAI), giving per position the top k and the log-probability of the real next token
// Tokens: when the server names its tokenizer and it is the student's (a Lineage server reports
// its digest in /v1/models), prompts go as token ids and answers come back as ids
// (return_tokens_as_token_ids, as vLLM names it): positions and ids match exactly. Otherwise
// everything goes through text (see map_through_text).
// Every answer is written to a journal (SQLite) as it arrives, keyed by the request; a harvest that
// is interrupted and run again asks the server only for what it has not answered yet. Requests run
// `concurrency` at a time, time out, and are retried with exponential backoff on connection errors,
// 429 and 5xx, waiting at least what a Retry-After header asks.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lineage/teacher/teacher.h"

namespace httplib {
class Client;
}

namespace lineage::teacher {

struct HttpTeacherOptions {
  std::string api_key;         // "" : LINEAGE_API_KEY when set
  std::string model;           // model id; "" : the first /v1/models lists
  int concurrency = 8;
  double timeout_s = 300;
  int max_retries = 8;
  double backoff_s = 0.5;      // first retry delay, doubled each time (capped at 30 s)
  // A server's Retry-After is honoured up to this many seconds; a longer one (a day, from a broken
  // or hostile server) fails the request naming the server instead of stalling the run.
  double max_retry_after_s = 300;
  double retry_budget_s = 1800;  // seconds one request may spend waiting to retry, in all
  std::string journal;         // SQLite file for the answers; "" : none (nothing resumes)
  std::shared_ptr<text::Tokenizer> tokenizer;  // the student's: what the teacher's answers are mapped onto
  bool force_text = false;     // map through text even when ids would do
  // A JSON object merged into every generation request, as the OpenAI SDKs' extra_body: a
  // server's own sampling parameters, e.g. {"ignore_eos": true} (vLLM, `lineage serve`).
  std::string extra_body;
  bool quiet = false;
};

struct HttpCapabilities {
  bool completions = false;    // text generation
  bool prompt_logprobs = false;  // echo + logprobs
  int max_top_logprobs = 0;
  bool token_ids = false;      // prompts and answers as the student's token ids
  std::string describe() const;
};

class HttpTeacher : public Teacher {
 public:
  HttpTeacher(const std::string& url, const HttpTeacherOptions& options);
  ~HttpTeacher() override;
  const TeacherInfo& info() const override { return info_; }
  const text::Tokenizer& tokenizer() const override { return *options_.tokenizer; }
  Abilities abilities() const override;
  torch::Tensor logits(const torch::Tensor& tokens) override;
  // Needs request.next (the answer covers every position through the last next token) and
  // request.tail_samples == 0: an API gives no draws from its tail.
  TopK top_k(const torch::Tensor& tokens, const TopKRequest& request) override;
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const model::GenerateOptions& options) override;
  // Many completions at once, `concurrency` in flight.
  std::vector<std::vector<int32_t>> generate_many(const std::vector<std::vector<int32_t>>& prompts,
                                                  const std::vector<model::GenerateOptions>& options) override;
  const HttpCapabilities& capabilities() const { return caps_; }
  int64_t requests_sent() const;

 private:
  struct Impl;
  // One row's answer (from the journal when it has it) as the journal stores it.
  std::string score_row(const std::vector<int32_t>& row, int64_t k, httplib::Client& client);
  std::unique_ptr<Impl> impl_;
  HttpTeacherOptions options_;
  TeacherInfo info_;
  HttpCapabilities caps_;
};

// One scored text as an API returns it: tokens with their byte offsets in the text, the
// log-probability of each (NaN for the first), and the top alternatives (token text, logprob).
struct ApiScoredText {
  std::vector<std::string> tokens;
  std::vector<int64_t> offsets;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<std::string, float>>> top;
};

// Maps a teacher's scoring of `text` onto the student's tokens `ids` (whose decoding is `text`),
// k entries per student position t (predicting ids[t + 1]), for t < ids.size() - 1:
//   - a student position is matched with the teacher token that starts at the same byte offset;
//   - each teacher alternative's text becomes the student token that starts it (the longest student
//     piece it begins with), the probabilities of alternatives that land on one id summed;
//   - the next token's log-probability is the teacher's when both split there alike, else what the
//     mapped alternatives give it (when none does, the position keeps only its hard label);
//   - a student position with no teacher token starting there keeps only its hard label (the next
//     token with probability 1), so the KD loss reduces to cross-entropy there.
// Returns ids (T, k) int64, logprobs (T, k) float (padding -1e4), target_logprobs (T).
TopK map_through_text(const ApiScoredText& scored, const std::vector<int32_t>& ids, const text::Tokenizer& student,
                      int64_t k);

// The student's tokens for `text` (a teacher's completion) after the tokens `before` (the prompt it
// was given as text), such that decode(before + result) == decode(before) + text exactly: the two
// encoded together when that keeps `before`'s tokens (the seam split as the student splits), else
// `text` alone, else `text` as it follows a newline (SentencePiece puts a space in front of a fresh
// text). Nothing when no split writes the text exactly.
std::optional<std::vector<int32_t>> continuation_tokens(const text::Tokenizer& tok, const std::vector<int32_t>& before,
                                                        const std::string& text);

}  // namespace lineage::teacher
