// Log-likelihood scoring of continuations, sliding-window perplexity and teacher agreement
// (definitions and sources in score.h).
#include "lineage/eval/score.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "lineage/core/error.h"

namespace lineage::eval {
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

LoglikRequest make_request(const text::Tokenizer& tokenizer, const std::string& context, const std::string& continuation) {
  LoglikRequest r;
  // BOS by the tokenizer's rule; a context that is then empty starts from EOS, as lm-eval-harness
  // does for models without BOS (its prefix token is the end-of-text token).
  const bool bos = tokenizer.vocab().add_bos;
  r.context = tokenizer.encode(context, bos);
  auto whole = tokenizer.encode(context + continuation, bos);
  if (r.context.empty() && tokenizer.eos_id() >= 0) {
    r.context = {tokenizer.eos_id()};
    whole.insert(whole.begin(), tokenizer.eos_id());
  }
  if (whole.size() > r.context.size() && std::equal(r.context.begin(), r.context.end(), whole.begin())) {
    r.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(r.context.size()), whole.end());
  } else {
    // The context's last token merged with the continuation's first: score the continuation alone.
    r.continuation = tokenizer.encode(continuation, /*add_bos=*/false);
  }
  if (r.context.empty())
    fail("cannot score a continuation with an empty context: this tokenizer adds no BOS and has no EOS to start from");
  if (r.continuation.empty()) fail("continuation '{}' encodes to no tokens", continuation.substr(0, 40));
  return r;
}

std::vector<Loglik> loglikelihood(model::Llama& model, const std::vector<LoglikRequest>& requests,
                                  int64_t max_batch_tokens, Progress* progress) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t ctx = model->config().max_seq_len;
  const torch::Device device = model->device();
  // Each request as one sequence of at most ctx + 1 tokens; the last `c` of them are scored.
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t scored;
  };
  std::vector<Seq> seqs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    if (r.context.empty() || r.continuation.empty()) fail("request {}: context and continuation must not be empty", i);
    std::vector<int32_t> all(r.context);
    all.insert(all.end(), r.continuation.begin(), r.continuation.end());
    const int64_t keep = std::min<int64_t>(static_cast<int64_t>(all.size()), ctx + 1);
    seqs[i].tokens.assign(all.end() - keep, all.end());
    seqs[i].scored = std::min<int64_t>(static_cast<int64_t>(r.continuation.size()), keep - 1);
  }
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return seqs[a].tokens.size() > seqs[b].tokens.size(); });

  std::vector<Loglik> out(requests.size());
  int64_t done = 0;
  for (size_t i = 0; i < order.size();) {
    const int64_t L = static_cast<int64_t>(seqs[order[i]].tokens.size()) - 1;  // longest input in the batch
    const int64_t B = std::max<int64_t>(1, std::min<int64_t>(static_cast<int64_t>(order.size() - i), max_batch_tokens / std::max<int64_t>(L, 1)));
    auto input = torch::zeros({B, L}, torch::kLong);  // (B, L) right-padded; causal, so padding changes nothing before it
    auto* ip = input.data_ptr<int64_t>();
    int64_t tokens = 0;
    for (int64_t b = 0; b < B; ++b) {
      const auto& s = seqs[order[i + b]].tokens;
      for (size_t t = 0; t + 1 < s.size(); ++t) ip[b * L + static_cast<int64_t>(t)] = s[t];
      tokens += static_cast<int64_t>(s.size()) - 1;
    }
    auto logits = model->forward(input.to(device)).to(torch::kFloat32);  // (B, L, V)
    for (int64_t b = 0; b < B; ++b) {
      const auto& s = seqs[order[i + b]];
      const int64_t n = static_cast<int64_t>(s.tokens.size()) - 1, c = s.scored;
      auto logp = torch::log_softmax(logits[b].slice(0, n - c, n), -1);  // (c, V)
      auto target = torch::from_blob(const_cast<int32_t*>(s.tokens.data()) + (n - c + 1), {c}, torch::kInt32)
                        .to(torch::kLong)
                        .to(device);
      auto lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1);  // (c)
      Loglik& r = out[order[i + b]];
      r.logprob = lp.sum().item<double>();
      r.tokens = c;
      r.greedy = logp.argmax(-1).eq(target).all().item<bool>();
    }
    i += static_cast<size_t>(B);
    done += B;
    if (progress) progress->update(done, tokens);
  }
  return out;
}

json TaskResult::to_json() const {
  json j = {{"name", name},   {"path", path},     {"kind", task_kind_name(kind)}, {"items", items},
            {"acc", acc},     {"acc_stderr", acc_stderr}, {"chance", chance},     {"tokens_scored", tokens_scored},
            {"seconds", seconds}};
  if (acc_norm >= 0) {
    j["acc_norm"] = acc_norm;
    j["acc_norm_tokens"] = acc_norm_tokens;
    j["constant_choice_acc"] = {constant_min, constant_max};
  }
  if (perplexity >= 0) j["perplexity"] = perplexity;
  return j;
}

TaskResult score_task(model::Llama& model, const text::Tokenizer& tokenizer, const Task& task, int64_t max_batch_tokens,
                      bool quiet) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<LoglikRequest> requests;
  std::vector<int64_t> bytes;
  for (const auto& item : task.items)
    for (size_t c = 0; c < item.continuations.size(); ++c) {
      try {
        requests.push_back(make_request(tokenizer, item.context_of(c), item.continuations[c]));
      } catch (const Error& e) {
        fail("{}:{}: {}", task.path, item.line, e.what());
      }
      // Per byte of the choice itself, the delimiter not counted (lm-evaluation-harness's acc_norm).
      bytes.push_back(std::max<int64_t>(1, c < item.choice_bytes.size() ? item.choice_bytes[c]
                                                                         : static_cast<int64_t>(item.continuations[c].size())));
    }
  Progress progress(task.name, static_cast<int64_t>(requests.size()));
  progress.set_quiet(quiet);
  auto ll = loglikelihood(model, requests, max_batch_tokens, &progress);
  progress.finish();

  TaskResult r;
  r.name = task.name;
  r.path = task.path;
  r.kind = task.kind;
  r.items = static_cast<int64_t>(task.items.size());
  if (r.items == 0) fail("task '{}' has no items", task.path);
  for (size_t i = 0; i < requests.size(); ++i) r.tokens_scored += static_cast<int64_t>(requests[i].context.size() + requests[i].continuation.size());
  size_t k = 0, max_choices = 0;
  double correct = 0, correct_norm = 0, correct_norm_tokens = 0, sum_ll = 0;
  std::vector<double> gold_at;
  for (const auto& item : task.items) {
    max_choices = std::max(max_choices, item.continuations.size());
    gold_at.resize(max_choices, 0.0);
    gold_at[static_cast<size_t>(item.gold)] += 1;
  }
  for (const auto& item : task.items) {
    const size_t n = item.continuations.size();
    if (task.kind == TaskKind::kCloze) {
      correct += ll[k].greedy ? 1 : 0;
      sum_ll += ll[k].logprob;
    } else {
      // acc_norm per byte (lm-evaluation-harness), acc_norm_tokens per token (llama.cpp's
      // multiple-choice and HellaSwag scores: the mean log-probability of the ending's tokens).
      auto per_token = [&](size_t c) { return ll[k + c].logprob / double(std::max<int64_t>(1, ll[k + c].tokens)); };
      size_t best = 0, best_norm = 0, best_tokens = 0;
      for (size_t c = 1; c < n; ++c) {
        if (ll[k + c].logprob > ll[k + best].logprob) best = c;
        if (ll[k + c].logprob / double(bytes[k + c]) > ll[k + best_norm].logprob / double(bytes[k + best_norm])) best_norm = c;
        if (per_token(c) > per_token(best_tokens)) best_tokens = c;
      }
      correct += best == static_cast<size_t>(item.gold) ? 1 : 0;
      correct_norm += best_norm == static_cast<size_t>(item.gold) ? 1 : 0;
      correct_norm_tokens += best_tokens == static_cast<size_t>(item.gold) ? 1 : 0;
      r.chance += 1.0 / double(n);
    }
    k += n;
  }
  const double N = double(r.items);
  r.acc = correct / N;
  r.acc_stderr = std::sqrt(r.acc * (1 - r.acc) / N);
  if (task.kind == TaskKind::kCloze) {
    r.perplexity = std::exp(-sum_ll / N);
  } else {
    r.acc_norm = correct_norm / N;
    r.acc_norm_tokens = correct_norm_tokens / N;
    r.chance /= N;
    r.constant_min = *std::min_element(gold_at.begin(), gold_at.end()) / N;
    r.constant_max = *std::max_element(gold_at.begin(), gold_at.end()) / N;
  }
  r.seconds = seconds_since(t0);
  return r;
}

json TextScore::to_json() const {
  json j = {{"tokens", tokens}, {"positions", positions}, {"nll", nll}, {"perplexity", perplexity}, {"seconds", seconds}};
  if (reference_perplexity >= 0) {
    j["reference_perplexity"] = reference_perplexity;
    j["kl"] = kl;
    j["top1_agreement"] = top1_agreement;
    j["mean_delta_p"] = mean_delta_p;
    j["rms_delta_p"] = rms_delta_p;
  }
  return j;
}

namespace {

// A window of the text: where it starts and its first scored position (earlier ones are context).
struct Window {
  int64_t start, first;
};

// Sliding windows of `window` tokens moved by `stride` (the Hugging Face perplexity recipe): every
// token after the first is scored once, with as much context as the window allows.
std::vector<Window> plan_windows(int64_t N, int64_t window, int64_t stride) {
  std::vector<Window> windows;
  int64_t end = std::min(window, N);
  windows.push_back({0, 1});
  while (end < N) {
    const int64_t next_end = std::min(end + stride, N), start = std::max<int64_t>(0, next_end - window);
    windows.push_back({start, end - start});
    end = next_end;
  }
  return windows;
}

// Sums over scored positions: the model's NLL and, against a reference, its NLL, KL(ref || model),
// top-1 agreement and the difference of the probabilities given to the true token.
struct Sums {
  double nll = 0, ref_nll = 0, kl = 0, same = 0, dp = 0, dp2 = 0;
  int64_t positions = 0;
  // lp, rp (n, V) log-probabilities; target (n) the true tokens.
  void add(const torch::Tensor& lp, const torch::Tensor* rp, const torch::Tensor& target) {
    auto tok_lp = lp.gather(-1, target.unsqueeze(-1)).squeeze(-1);
    nll -= tok_lp.sum().item<double>();
    positions += target.size(0);
    if (!rp) return;
    auto ref_tok = rp->gather(-1, target.unsqueeze(-1)).squeeze(-1);
    ref_nll -= ref_tok.sum().item<double>();
    kl += (rp->exp() * (*rp - lp)).sum().item<double>();
    same += lp.argmax(-1).eq(rp->argmax(-1)).sum().item<double>();
    auto d = tok_lp.exp() - ref_tok.exp();
    dp += d.sum().item<double>();
    dp2 += (d * d).sum().item<double>();
  }
  TextScore score(int64_t tokens, bool with_reference) const {
    TextScore s;
    s.tokens = tokens;
    s.positions = positions;
    s.nll = nll / double(positions);
    s.perplexity = std::exp(s.nll);
    if (with_reference) {
      s.reference_perplexity = std::exp(ref_nll / double(positions));
      s.kl = kl / double(positions);
      s.top1_agreement = same / double(positions);
      s.mean_delta_p = dp / double(positions);
      s.rms_delta_p = std::sqrt(dp2 / double(positions));
    }
    return s;
  }
};

}  // namespace

namespace {

// The text's context limit and a checked window (0: the whole context).
int64_t checked_window(model::Llama& model, model::Llama* reference, int64_t window) {
  int64_t ctx = model->config().max_seq_len;
  if (reference) ctx = std::min(ctx, (*reference)->config().max_seq_len);
  if (window <= 0) window = ctx;
  if (window < 2 || window > ctx) fail("--window {} must be between 2 and the model's context ({})", window, ctx);
  if (reference && (*reference)->config().vocab_size != model->config().vocab_size)
    fail("agreement needs one vocabulary: the teacher has {} tokens, the model {}", (*reference)->config().vocab_size,
         model->config().vocab_size);
  return window;
}

// Scores `windows` of L tokens each (the last may be shorter when the text is), `batch_windows`
// at a time; with bos_id >= 0 each window's first token is replaced by BOS, as llama-perplexity does.
TextScore score_windows(model::Llama& model, const std::vector<int32_t>& tokens, const std::vector<Window>& windows,
                        int64_t window, int32_t bos_id, model::Llama* reference, int64_t batch_windows, bool quiet) {
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t N = static_cast<int64_t>(tokens.size());
  model->eval();
  if (reference) (*reference)->eval();
  Sums sums;
  Progress progress("perplexity", static_cast<int64_t>(windows.size()));
  progress.set_quiet(quiet);
  const torch::Device device = model->device();
  for (size_t w0 = 0; w0 < windows.size(); w0 += static_cast<size_t>(batch_windows)) {
    const size_t w1 = std::min(windows.size(), w0 + static_cast<size_t>(batch_windows));
    const int64_t L = std::min(window, N);  // every window but a text shorter than one is full
    auto batch = torch::empty({static_cast<int64_t>(w1 - w0), L}, torch::kLong);  // (W, L)
    auto* bp = batch.data_ptr<int64_t>();
    for (size_t w = w0; w < w1; ++w)
      for (int64_t t = 0; t < L; ++t) bp[static_cast<int64_t>(w - w0) * L + t] = tokens[windows[w].start + t];
    if (bos_id >= 0) batch.select(1, 0).fill_(bos_id);
    auto input = batch.slice(1, 0, L - 1).to(device);
    auto logp = torch::log_softmax(model->forward(input).to(torch::kFloat32), -1);  // (W, L-1, V)
    torch::Tensor ref_logp;
    if (reference)
      ref_logp = torch::log_softmax((*reference)->forward(input.to((*reference)->device())).to(device, torch::kFloat32), -1);
    for (size_t w = w0; w < w1; ++w) {
      const int64_t b = static_cast<int64_t>(w - w0), first = windows[w].first;  // predicts tokens first..L-1
      auto target = batch[b].slice(0, first, L).to(device);                           // (n)
      torch::Tensor rp;
      if (reference) rp = ref_logp[b].slice(0, first - 1, L - 1);
      sums.add(logp[b].slice(0, first - 1, L - 1), reference ? &rp : nullptr, target);
    }
    progress.update(static_cast<int64_t>(w1), static_cast<int64_t>(w1 - w0) * L);
  }
  progress.finish();
  TextScore s = sums.score(N, reference != nullptr);
  s.seconds = seconds_since(t0);
  return s;
}

}  // namespace

TextScore score_text(model::Llama& model, const std::vector<int32_t>& tokens, int64_t window, int64_t stride,
                     model::Llama* reference, int64_t batch_windows, bool quiet) {
  const int64_t N = static_cast<int64_t>(tokens.size());
  if (N < 2) fail("the text has {} tokens; perplexity needs at least 2", N);
  window = checked_window(model, reference, window);
  if (stride <= 0) stride = window / 2;
  if (stride > window - 1) fail("--stride {} must be smaller than the window ({})", stride, window);
  return score_windows(model, tokens, plan_windows(N, window, stride), window, -1, reference, batch_windows, quiet);
}

TextScore score_chunks(model::Llama& model, const std::vector<int32_t>& tokens, int64_t window, int32_t bos_id,
                       model::Llama* reference, int64_t batch_windows, bool quiet) {
  const int64_t N = static_cast<int64_t>(tokens.size());
  window = checked_window(model, reference, window);
  if (N < 2 * window)
    fail("the text has {} tokens; --ppl-method chunks needs at least 2 windows of {} (llama-perplexity's rule)", N, window);
  std::vector<Window> chunks;
  for (int64_t start = 0; start + window <= N; start += window) chunks.push_back({start, window / 2 + 1});
  return score_windows(model, tokens, chunks, window, bos_id, reference, batch_windows, quiet);
}

}  // namespace lineage::eval
