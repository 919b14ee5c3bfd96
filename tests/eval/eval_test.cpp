// Evaluation: task files (kinds, delimiters, errors with line numbers), batched log-likelihoods
// against one-at-a-time scoring, sliding-window perplexity against a per-token reference, and
// agreement figures against their definitions.
#include <gtest/gtest.h>

#include <cmath>

#include "lineage/core/error.h"
#include "lineage/eval/score.h"
#include "lineage/eval/tasks.h"
#include "lineage/io/model_file.h"
#include "test_util.h"
#include "tiny_teacher.h"

using namespace lineage;
namespace lt = lineage::testing;
using lt::error_of;
using lt::TempDir;
namespace fs = std::filesystem;

namespace {

model::Llama tiny_model(const TempDir& tmp, uint64_t seed, std::shared_ptr<text::Tokenizer>* tok = nullptr) {
  auto path = tmp / ("m" + std::to_string(seed) + ".gguf");
  lt::write_tiny_teacher(path, seed, 32, 2, 0.3);
  auto file = io::read_model(path.string());
  if (tok) *tok = file.tokenizer;
  return io::make_model(file);
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  auto t = torch::randint(0, vocab, {n}, torch::kLong);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(t[i].item<int64_t>());
  return out;
}

// log p(tokens[j] | tokens[from..j)) by a forward pass over exactly that prefix.
double reference_logprob(model::Llama& m, const std::vector<int32_t>& tokens, int64_t from, int64_t j) {
  torch::NoGradGuard ng;
  std::vector<int64_t> prefix(tokens.begin() + from, tokens.begin() + j);
  auto logits = m->forward(torch::tensor(prefix, torch::kLong).unsqueeze(0));
  return torch::log_softmax(logits[0][-1], -1)[tokens[j]].item<double>();
}

}  // namespace

TEST(TaskFiles, DetectsTheKindAndAddsTheDelimiter) {
  TempDir tmp;
  lt::spit(tmp / "mc.jsonl", R"({"query": "Question: 2+2?", "choices": ["4", "5", " 6"], "gold": 0}
{"query": "Ends with space ", "choices": ["a", "b"], "gold": 1}
)");
  lt::spit(tmp / "cloze.jsonl", "\n{\"context\": \"the cat sat on the\", \"continuation\": \"mat\"}\n");
  lt::spit(tmp / "hs.txt", "A man is\n2\nwalks.\nruns.\nsits.\nflies.\nShe\n0\na\nb\nc\nd\n");
  auto mc = eval::load_task((tmp / "mc.jsonl").string());
  EXPECT_EQ(mc.kind, eval::TaskKind::kMultipleChoice);
  ASSERT_EQ(mc.items.size(), 2u);
  EXPECT_EQ(mc.items[0].continuations, (std::vector<std::string>{" 4", " 5", " 6"}));
  EXPECT_EQ(mc.items[1].continuations, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(mc.items[0].choice_bytes, (std::vector<int64_t>{1, 1, 2}));  // the delimiter is not the choice's
  EXPECT_EQ(mc.items[1].gold, 1);
  EXPECT_EQ(mc.items[1].line, 2);
  auto cloze = eval::load_task((tmp / "cloze.jsonl").string());
  EXPECT_EQ(cloze.kind, eval::TaskKind::kCloze);
  EXPECT_EQ(cloze.items.at(0).continuations, (std::vector<std::string>{" mat"}));
  EXPECT_EQ(cloze.items[0].line, 2);
  auto hs = eval::load_task((tmp / "hs.txt").string());
  EXPECT_EQ(hs.kind, eval::TaskKind::kHellaSwag);
  ASSERT_EQ(hs.items.size(), 2u);
  EXPECT_EQ(hs.items[0].gold, 2);
  EXPECT_EQ(hs.items[0].continuations[3], " flies.");
  EXPECT_EQ(hs.items[1].line, 7);
  EXPECT_EQ(eval::load_task((tmp / "hs.txt").string(), 1).items.size(), 1u);
}

TEST(TaskFiles, BadLinesAreNamedByNumber) {
  TempDir tmp;
  const std::string good = R"({"query": "q", "choices": ["a", "b"], "gold": 1})";
  auto err = [&](const std::string& third_line) {
    lt::spit(tmp / "t.jsonl", good + "\n" + good + "\n" + third_line + "\n");
    return error_of([&] { eval::load_task((tmp / "t.jsonl").string()); });
  };
  // Every message names the line and the format the file was read as.
  const std::string at = "t.jsonl:3 (read as multiple choice {\"query\", \"choices\", \"gold\"}): ";
  EXPECT_NE(err("{not json").find(at + "not a valid JSON object"), std::string::npos);
  EXPECT_NE(err(R"({"query": "q", "choices": ["a", "b"]})").find(at + "missing field \"gold\""), std::string::npos);
  EXPECT_NE(err(R"({"choices": ["a", "b"], "gold": 0})").find(at + "missing field \"query\""), std::string::npos);
  EXPECT_NE(err(R"({"query": "q", "choices": ["a", "b"], "gold": 2})").find(at + "\"gold\" is 2, out of range for 2 choices"),
            std::string::npos);
  EXPECT_NE(err(R"({"query": "q", "choices": [], "gold": 0})").find(at + "\"choices\" is empty"), std::string::npos);
  EXPECT_NE(err(R"({"query": "q", "choices": ["a", 3], "gold": 0})").find(at + "\"choices\" must be a list of strings"),
            std::string::npos);
  lt::spit(tmp / "hs.txt", "ctx\n7\na\nb\nc\nd\n");
  EXPECT_NE(error_of([&] { eval::load_task((tmp / "hs.txt").string()); }).find("hs.txt:2: expected the gold ending's index"),
            std::string::npos);
  lt::spit(tmp / "hs.txt", "ctx\n1\na\nb\nc\n");
  EXPECT_NE(error_of([&] { eval::load_task((tmp / "hs.txt").string()); }).find("not a multiple of 6"), std::string::npos);
  lt::spit(tmp / "empty.jsonl", "\n\n");
  EXPECT_NE(error_of([&] { eval::load_task((tmp / "empty.jsonl").string()); }).find("is empty"), std::string::npos);
  EXPECT_NE(error_of([&] { eval::load_task((tmp / "missing.jsonl").string()); }).find("cannot open"), std::string::npos);
}

// llm-foundry's schema tasks (WinoGrande as its task files spell it): one continuation after each
// context option. It used to be read as cloze and fail with 'missing field "context"'.
TEST(TaskFiles, LlmFoundrySchemaTasksScoreTheContinuationAfterEachContext) {
  TempDir tmp;
  lt::spit(tmp / "winogrande.jsonl",
           R"({"context_options": ["The trophy did not fit in the suitcase because the trophy", "The trophy did not fit in the suitcase because the suitcase"], "continuation": "was too small.", "gold": 1}
{"context_options": ["Anna gave Mary a book, so Anna ", "Anna gave Mary a book, so Mary "], "continuation": "said thanks.", "gold": 1}
)");
  auto task = eval::load_task((tmp / "winogrande.jsonl").string());
  EXPECT_EQ(task.kind, eval::TaskKind::kSchema);
  ASSERT_EQ(task.items.size(), 2u);
  EXPECT_EQ(task.items[0].continuations, (std::vector<std::string>{" was too small.", " was too small."}));
  EXPECT_EQ(task.items[1].continuations[0], "said thanks.");  // the context already ends in a space
  EXPECT_EQ(task.items[0].context_of(1), "The trophy did not fit in the suitcase because the suitcase");
  EXPECT_EQ(task.items[0].gold, 1);
  // Scored: each candidate is its own context + the continuation, as loglikelihood() scores it.
  std::shared_ptr<text::Tokenizer> tok;
  auto m = tiny_model(tmp, 5, &tok);
  auto r = eval::score_task(m, *tok, task, 8192, /*quiet=*/true);
  std::vector<eval::LoglikRequest> reqs;
  for (const auto& item : task.items)
    for (size_t c = 0; c < 2; ++c) reqs.push_back(eval::make_request(*tok, item.context_of(c), item.continuations[c]));
  auto ll = eval::loglikelihood(m, reqs);
  double correct = 0;
  for (size_t i = 0; i < 2; ++i) correct += (ll[2 * i + 1].logprob > ll[2 * i].logprob) == (task.items[i].gold == 1);
  EXPECT_DOUBLE_EQ(r.acc, correct / 2);
  EXPECT_EQ(r.to_json()["kind"], "schema");
  EXPECT_TRUE(r.to_json().contains("acc_norm_tokens"));
  // A bad schema line names the format it was read as.
  lt::spit(tmp / "bad.jsonl", R"({"context_options": ["a", "b"], "continuation": "c"})");
  auto e = error_of([&] { eval::load_task((tmp / "bad.jsonl").string()); });
  EXPECT_NE(e.find("bad.jsonl:1 (read as llm-foundry schema"), std::string::npos) << e;
  EXPECT_NE(e.find("missing field \"gold\""), std::string::npos) << e;
  lt::spit(tmp / "cloze.jsonl", R"({"ctx": "a", "continuation": "c"})");
  e = error_of([&] { eval::load_task((tmp / "cloze.jsonl").string()); });
  EXPECT_NE(e.find("(read as cloze {\"context\", \"continuation\"}): missing field \"context\""), std::string::npos) << e;
}

// acc_norm is per byte of the choice (lm-evaluation-harness), acc_norm_tokens per token of it
// (llama.cpp): checked against both definitions on the same log-likelihoods.
TEST(Scoring, AccNormPerByteAndPerToken) {
  TempDir tmp;
  std::shared_ptr<text::Tokenizer> tok;
  auto m = tiny_model(tmp, 6, &tok);
  std::string lines;
  for (int i = 0; i < 12; ++i)
    lines += "{\"query\": \"item " + std::to_string(i) + " is\", \"choices\": [\"a\", \"bb bb\", \"ccc, c c c\", \"d" +
             std::string(static_cast<size_t>(i), 'd') + "\"], \"gold\": " + std::to_string(i % 4) + "}\n";
  lt::spit(tmp / "mc.jsonl", lines);
  auto task = eval::load_task((tmp / "mc.jsonl").string());
  auto r = eval::score_task(m, *tok, task, 8192, true);
  double by_byte = 0, by_token = 0;
  for (const auto& item : task.items) {
    std::vector<eval::LoglikRequest> reqs;
    for (const auto& c : item.continuations) reqs.push_back(eval::make_request(*tok, item.context, c));
    auto ll = eval::loglikelihood(m, reqs);
    size_t bb = 0, bt = 0;
    for (size_t c = 1; c < ll.size(); ++c) {
      if (ll[c].logprob / item.choice_bytes[c] > ll[bb].logprob / item.choice_bytes[bb]) bb = c;
      if (ll[c].logprob / double(reqs[c].continuation.size()) > ll[bt].logprob / double(reqs[bt].continuation.size())) bt = c;
    }
    by_byte += bb == static_cast<size_t>(item.gold);
    by_token += bt == static_cast<size_t>(item.gold);
  }
  EXPECT_DOUBLE_EQ(r.acc_norm, by_byte / 12);
  EXPECT_DOUBLE_EQ(r.acc_norm_tokens, by_token / 12);
}

TEST(Scoring, BatchedLogLikelihoodsEqualOneAtATimeReference) {
  TempDir tmp;
  auto m = tiny_model(tmp, 3);
  std::vector<eval::LoglikRequest> reqs;
  for (int i = 0; i < 9; ++i) {
    auto ctx = random_tokens(3 + 7 * i % 40, 260, 100 + i);
    auto cont = random_tokens(1 + i % 4, 260, 200 + i);
    reqs.push_back({ctx, cont});
  }
  // One longer than the context (128): its head is cut.
  reqs.push_back({random_tokens(200, 260, 7), random_tokens(3, 260, 8)});
  auto batched = eval::loglikelihood(m, reqs, /*max_batch_tokens=*/4096);
  auto single = eval::loglikelihood(m, reqs, /*max_batch_tokens=*/1);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_NEAR(batched[i].logprob, single[i].logprob, 1e-4) << i;
    EXPECT_EQ(batched[i].greedy, single[i].greedy);
    std::vector<int32_t> all(reqs[i].context);
    all.insert(all.end(), reqs[i].continuation.begin(), reqs[i].continuation.end());
    const int64_t n = static_cast<int64_t>(all.size()), from = std::max<int64_t>(0, n - 129);
    double want = 0;
    for (int64_t j = n - static_cast<int64_t>(reqs[i].continuation.size()); j < n; ++j)
      want += reference_logprob(m, all, from, j);
    EXPECT_NEAR(batched[i].logprob, want, 1e-3) << i;
    EXPECT_EQ(batched[i].tokens, static_cast<int64_t>(reqs[i].continuation.size()));
  }
}

TEST(Scoring, GreedyMeansEveryTokenIsTheArgmax) {
  TempDir tmp;
  auto m = tiny_model(tmp, 4);
  torch::NoGradGuard ng;
  auto ctx = random_tokens(10, 260, 1);
  // The model's own greedy continuation, then one token changed.
  std::vector<int32_t> seq(ctx), cont;
  for (int k = 0; k < 3; ++k) {
    std::vector<int64_t> s(seq.begin(), seq.end());
    auto next = static_cast<int32_t>(m->forward(torch::tensor(s).unsqueeze(0))[0][-1].argmax().item<int64_t>());
    seq.push_back(next);
    cont.push_back(next);
  }
  auto wrong = cont;
  wrong[1] = (wrong[1] + 1) % 260;
  auto r = eval::loglikelihood(m, {{ctx, cont}, {ctx, wrong}});
  EXPECT_TRUE(r[0].greedy);
  EXPECT_FALSE(r[1].greedy);
  EXPECT_GT(r[0].logprob, r[1].logprob);
}

TEST(Scoring, SlidingWindowPerplexityMatchesAPerTokenReference) {
  TempDir tmp;
  auto m = tiny_model(tmp, 5);
  auto tokens = random_tokens(150, 260, 9);
  const int64_t W = 32, S = 12;
  auto s = eval::score_text(m, tokens, W, S, nullptr, /*batch_windows=*/3, /*quiet=*/true);
  // Every token but the first, once; token j's context reaches back to the start of the first
  // window that covers it and no earlier window scored it.
  double nll = 0;
  int64_t scored = 0, end = W;
  for (int64_t j = 1; j < W; ++j, ++scored) nll -= reference_logprob(m, tokens, 0, j);
  while (end < 150) {
    int64_t next_end = std::min<int64_t>(end + S, 150), start = next_end - W;
    for (int64_t j = end; j < next_end; ++j, ++scored) nll -= reference_logprob(m, tokens, start, j);
    end = next_end;
  }
  EXPECT_EQ(s.positions, 149);
  EXPECT_EQ(scored, 149);
  EXPECT_NEAR(s.nll, nll / 149, 1e-4);
  EXPECT_NEAR(s.perplexity, std::exp(nll / 149), 1e-3 * s.perplexity);
  // A window as long as the text: one plain forward pass.
  auto whole = eval::score_text(m, std::vector<int32_t>(tokens.begin(), tokens.begin() + 100), 128, 0, nullptr, 4, true);
  double nll2 = 0;
  for (int64_t j = 1; j < 100; ++j) nll2 -= reference_logprob(m, tokens, 0, j);
  EXPECT_NEAR(whole.nll, nll2 / 99, 1e-4);
  EXPECT_THROW(eval::score_text(m, tokens, 500, 0, nullptr, 4, true), Error);  // longer than the context
  EXPECT_THROW(eval::score_text(m, tokens, 32, 32, nullptr, 4, true), Error);  // stride must leave context
}

// llama-perplexity's method by its definition: chunks of W, BOS first, tokens W/2+1..W-1 scored.
TEST(Scoring, ChunkedPerplexityFollowsLlamaPerplexitysDefinition) {
  TempDir tmp;
  auto m = tiny_model(tmp, 5);
  auto tokens = random_tokens(110, 260, 13);
  const int64_t W = 32;
  const int32_t bos = 1;
  auto s = eval::score_chunks(m, tokens, W, bos, nullptr, /*batch_windows=*/2, /*quiet=*/true);
  double nll = 0;
  int64_t scored = 0;
  for (int64_t start = 0; start + W <= 110; start += W) {  // 3 chunks; the last 14 tokens dropped
    std::vector<int32_t> chunk(tokens.begin() + start, tokens.begin() + start + W);
    chunk[0] = bos;
    for (int64_t j = W / 2 + 1; j < W; ++j, ++scored) nll -= reference_logprob(m, chunk, 0, j);
  }
  EXPECT_EQ(scored, 3 * 15);
  EXPECT_EQ(s.positions, scored);
  EXPECT_NEAR(s.nll, nll / scored, 1e-4);
  auto no_bos = eval::score_chunks(m, tokens, W, -1, nullptr, 2, true);
  EXPECT_GT(std::abs(no_bos.nll - s.nll), 1e-6);  // the first token is context for all that is scored
  EXPECT_THROW(eval::score_chunks(m, std::vector<int32_t>(tokens.begin(), tokens.begin() + 60), W, bos, nullptr, 2, true),
               Error);  // fewer than two chunks
}

TEST(Scoring, AgreementFollowsItsDefinitions) {
  TempDir tmp;
  auto a = tiny_model(tmp, 6);
  auto b = tiny_model(tmp, 7);
  auto tokens = random_tokens(40, 260, 11);
  auto self = eval::score_text(a, tokens, 64, 0, &a, 4, true);
  EXPECT_NEAR(self.kl, 0, 1e-6);
  EXPECT_DOUBLE_EQ(self.top1_agreement, 1.0);
  EXPECT_NEAR(self.mean_delta_p, 0, 1e-9);
  EXPECT_NEAR(self.reference_perplexity, self.perplexity, 1e-6 * self.perplexity);
  // Against another model: the figures by hand over the one window.
  auto s = eval::score_text(a, tokens, 64, 0, &b, 4, true);
  torch::NoGradGuard ng;
  std::vector<int64_t> in(tokens.begin(), tokens.end() - 1);
  auto x = torch::tensor(in).unsqueeze(0);
  auto la = torch::log_softmax(a->forward(x)[0], -1), lb = torch::log_softmax(b->forward(x)[0], -1);  // (39, V)
  auto target = torch::tensor(std::vector<int64_t>(tokens.begin() + 1, tokens.end()));
  double kl = (lb.exp() * (lb - la)).sum(-1).mean().item<double>();
  double same = la.argmax(-1).eq(lb.argmax(-1)).to(torch::kDouble).mean().item<double>();
  auto pa = la.gather(-1, target.unsqueeze(-1)).exp(), pb = lb.gather(-1, target.unsqueeze(-1)).exp();
  EXPECT_NEAR(s.kl, kl, 1e-5);
  EXPECT_NEAR(s.top1_agreement, same, 1e-9);
  EXPECT_NEAR(s.mean_delta_p, (pa - pb).mean().item<double>(), 1e-6);
  EXPECT_NEAR(s.rms_delta_p, (pa - pb).pow(2).mean().sqrt().item<double>(), 1e-6);
  EXPECT_GT(s.kl, 0.001);
}
