// The HTTP teacher against `lineage serve` on loopback: its top-k equals the in-process teacher's;
// a server that answers 503 (queue full, Retry-After) is retried until every row is answered; a
// second teacher on the same journal sends no scoring request; an unreachable URL fails naming it.
#include <torch/torch.h>

#include <thread>

#include "lineage/io/model_file.h"
#include "lineage/serve/server.h"
#include "lineage/teacher/http_teacher.h"
#include "lineage/text/text_rules.h"
#include "lineage/text/tokenizer.h"
#include "serve/serving.h"
#include "test_util.h"

namespace lt = lineage::testing;
using lineage::teacher::HttpTeacher;
using lineage::teacher::HttpTeacherOptions;

namespace {

const std::string kModel = lt::kServedModel;
using Serving = lt::Serving;

torch::Tensor rows(const lineage::text::Tokenizer& tok, int64_t B, int64_t T) {
  const char* texts[] = {"In the beginning God created the heaven and the earth. And the earth was without form, and void;",
                         "And God said, Let there be light: and there was light. And God saw the light, that it was good:",
                         "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures:",
                         "Blessed are the poor in spirit: for theirs is the kingdom of heaven. Blessed are they that mourn:"};
  auto out = torch::zeros({B, T + 1}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    auto ids = tok.encode(std::string(texts[b % 4]) + " " + texts[(b + 1) % 4], true);
    for (int64_t t = 0; t <= T; ++t) out[b][t] = ids[t % ids.size()];
  }
  return out;
}

}  // namespace

TEST(HttpTeacher, TopKEqualsTheInProcessTeachersAndRetries503UntilAnswered) {
  lt::TempDir tmp;
  lineage::serve::ServeOptions so;
  so.max_batch = 1;
  so.max_queue = 2;  // with 8 requests in flight most are refused at first: 503 + Retry-After
  Serving s(so);
  auto tok = lineage::io::load_tokenizer(kModel);
  HttpTeacherOptions o;
  o.tokenizer = tok;
  o.concurrency = 8;
  o.backoff_s = 0.05;
  o.max_retries = 50;
  o.journal = (tmp / "answers.db").string();
  o.quiet = true;
  HttpTeacher http(s.url(), o);
  EXPECT_TRUE(http.capabilities().prompt_logprobs);
  EXPECT_TRUE(http.capabilities().token_ids);
  EXPECT_EQ(http.capabilities().max_top_logprobs, 20);
  const int64_t B = 8, T = 48;
  auto r = rows(*tok, B, T);
  auto input = r.slice(1, 0, -1), next = r.slice(1, 1);
  lineage::teacher::TopKRequest req;
  req.k = 10;
  req.next = next;
  const int64_t probes = http.requests_sent();
  auto got = http.top_k(input, req);
  EXPECT_GT(http.requests_sent() - probes, B) << "no request was refused and retried";
  lineage::teacher::LocalTeacher local(kModel, torch::kCPU);
  req.tail_samples = 0;
  auto want = local.top_k(input, req);
  EXPECT_TRUE(torch::allclose(got.logprobs, want.logprobs, 1e-4, 1e-4));
  // The next token's log-probability is exact at every position but the last, which comes from the
  // generated token's alternatives: exact there when the next token is among them.
  EXPECT_TRUE(torch::allclose(got.target_logprobs.slice(1, 0, -1), want.target_logprobs.slice(1, 0, -1), 1e-4, 1e-4));
  for (int64_t b = 0; b < B; ++b) {
    bool listed = (want.ids[b][T - 1] == next[b][T - 1]).any().item<bool>();
    if (listed) EXPECT_NEAR(got.target_logprobs[b][T - 1].item<float>(), want.target_logprobs[b][T - 1].item<float>(), 1e-4);
    else EXPECT_LE(got.target_logprobs[b][T - 1].item<float>(), want.logprobs[b][T - 1][req.k - 1].item<float>() + 1e-4);
  }
  // Ids agree wherever the neighbours' log-probabilities are not tied.
  EXPECT_GT((got.ids == want.ids).to(torch::kFloat).mean().item<double>(), 0.99);

  // The journal answers a second teacher without asking the server.
  HttpTeacher again(s.url(), o);
  const int64_t probes2 = again.requests_sent();
  auto got2 = again.top_k(input, req);
  EXPECT_EQ(again.requests_sent(), probes2);
  EXPECT_TRUE(torch::equal(got2.ids, got.ids));

  // What an API cannot give is refused with the fix in the message.
  req.tail_samples = 6;
  EXPECT_NE(lt::error_of([&] { http.top_k(input, req); }).find("--tail-samples 0"), std::string::npos);
  req.tail_samples = 0;
  req.k = 21;
  EXPECT_NE(lt::error_of([&] { http.top_k(input, req); }).find("at most 20"), std::string::npos);
  EXPECT_NE(lt::error_of([&] { http.logits(input); }).find("--top-k"), std::string::npos);
}

TEST(HttpTeacher, GenerationGoesThroughTheApi) {
  Serving s({});
  auto tok = lineage::io::load_tokenizer(kModel);
  HttpTeacherOptions o;
  o.tokenizer = tok;
  o.quiet = true;
  HttpTeacher http(s.url(), o);
  lineage::teacher::LocalTeacher local(kModel, torch::kCPU);
  lineage::model::GenerateOptions g;
  g.max_tokens = 20;
  g.sampling.temperature = 0;
  g.stop_ids = {tok->eos_id()};
  auto prompt = tok->encode("And the LORD spake unto Moses, saying,", true);
  // The same text (its re-encoding may split differently from the ids the model chose).
  auto a = http.generate(prompt, g), b = local.generate(prompt, g);
  std::vector<int32_t> pa = prompt, pb = prompt;
  pa.insert(pa.end(), a.begin(), a.end());
  pb.insert(pb.end(), b.begin(), b.end());
  EXPECT_EQ(tok->decode(pa), tok->decode(pb));
  EXPECT_FALSE(a.empty());
}

// A completion the server returned as text, written in the student's tokens after a prompt that
// ends mid-word, starts mid-word (a row cut from packed text) or ends at a word: prompt +
// completion always decode to prompt text + completion text, and the completion never holds the
// prompt again. (The split it replaces kept the prompt's re-encoding whenever the prompt's first
// token re-encoded differently.) Checked on the embedded teacher's SentencePiece-style vocabulary,
// which puts a space in front of a fresh text, and on a byte-level BPE one.
TEST(HttpTeacher, ContinuationTokensWriteTheResponseAfterThePrompt) {
  auto spm = lineage::io::load_tokenizer(kModel);
  lineage::text::Vocab bv;
  bv.model = lineage::text::VocabModel::kBpe;
  bv.pre = "gpt-2";
  bv.add_bos = false;
  bv.add_space_prefix = false;
  for (int b = 0; b < 256; ++b) bv.tokens.push_back(lineage::text::byte_to_text(static_cast<unsigned char>(b)));
  bv.merges = {"Ġ t", "h e", "Ġt he", "e n"};
  for (std::string t : {"Ġt", "he", "Ġthe", "en"}) bv.tokens.push_back(t);
  bv.scores.assign(bv.tokens.size(), 0.0f);
  bv.types.assign(bv.tokens.size(), lineage::text::TokenType::kNormal);
  auto bpe = lineage::text::make_tokenizer(bv);
  const std::string text = "In the beginning God created the heaven and the earth. And the earth was without form";
  int checked = 0;
  for (const lineage::text::Tokenizer* tok : std::vector<const lineage::text::Tokenizer*>{spm.get(), bpe.get()}) {
    auto ids = tok->encode(text, tok->vocab().add_bos);
    for (size_t s = 0; s < 4; ++s)
      for (size_t e = s + 2; e + 1 < ids.size(); e += 3) {
        std::vector<int32_t> before(ids.begin() + static_cast<std::ptrdiff_t>(s), ids.begin() + static_cast<std::ptrdiff_t>(e));
        const std::string prompt_text = tok->decode(before);
        for (std::string answer : {tok->decode(std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(e), ids.end())),
                                   std::string(" and darkness"), std::string("ness was upon"), std::string("\nthe end")}) {
          auto c = lineage::teacher::continuation_tokens(*tok, before, answer);
          ASSERT_TRUE(c) << "prompt '" << prompt_text << "', answer '" << answer << "'";
          std::vector<int32_t> all(before);
          all.insert(all.end(), c->begin(), c->end());
          EXPECT_EQ(tok->decode(all), prompt_text + answer) << "prompt '" << prompt_text << "'";
          EXPECT_NE(tok->decode(*c).rfind(prompt_text, 0), 0u) << "prompt '" << prompt_text << "'";
          ++checked;
        }
      }
  }
  EXPECT_GT(checked, 100);
  EXPECT_TRUE(lineage::teacher::continuation_tokens(*spm, spm->encode("a", true), "")->empty());
}

TEST(HttpTeacher, AnUnreachableOrWrongServerFailsNamingIt) {
  auto tok = lineage::io::load_tokenizer(kModel);
  HttpTeacherOptions o;
  o.tokenizer = tok;
  o.quiet = true;
  o.max_retries = 1;
  o.backoff_s = 0.01;
  o.timeout_s = 5;
  auto msg = lt::error_of([&] { HttpTeacher("http://127.0.0.1:9/v1", o); });
  EXPECT_NE(msg.find("http://127.0.0.1:9/v1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot be reached"), std::string::npos) << msg;
  o.tokenizer = nullptr;
  msg = lt::error_of([&] { HttpTeacher("http://127.0.0.1:9/v1", o); });
  EXPECT_NE(msg.find("--tokenizer"), std::string::npos) << msg;
  Serving s({});
  o.tokenizer = tok;
  o.model = "gpt-7";
  msg = lt::error_of([&] { HttpTeacher(s.url(), o); });
  EXPECT_NE(msg.find("does not serve a model 'gpt-7'"), std::string::npos) << msg;
}
