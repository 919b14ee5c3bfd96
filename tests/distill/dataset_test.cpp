// Data loading: which tokens are targets for each JSONL shape, errors with line numbers, a
// deterministic split, packing, and the data cursor.
#include <gtest/gtest.h>

#include <set>

#include "lineage/core/error.h"
#include "lineage/distill/dataset.h"
#include "test_util.h"
#include "tiny_teacher.h"

using namespace lineage;
namespace lt = lineage::testing;
using lt::error_of;
using lt::TempDir;

namespace {

std::unique_ptr<text::Tokenizer> bytes_tok() { return text::make_tokenizer(lt::byte_vocab()); }

distill::DataOptions unpacked(int64_t T = 64) {
  distill::DataOptions o;
  o.seq_len = T;
  o.valid_fraction = 0;
  o.pack = false;
  return o;
}

// The target tokens of row 0 decoded back to text.
std::string targets_of(const distill::TokenRows& rows, const text::Tokenizer& tok, int64_t row = 0) {
  std::vector<int32_t> ids;
  const int64_t W = rows.seq_len + 1;
  for (int64_t i = 0; i < W; ++i)
    if (rows.mask[row * W + i] && rows.tokens[row * W + i] != tok.eos_id()) ids.push_back(rows.tokens[row * W + i]);
  return tok.decode(ids);
}

}  // namespace

TEST(Dataset, PromptCompletionTrainsOnTheCompletionOnly) {
  TempDir tmp;
  lt::spit(tmp / "d.jsonl", "{\"prompt\": \"Q: 2+2?\", \"completion\": \" A: 4\"}\n");
  auto tok = bytes_tok();
  auto ds = distill::load_dataset({(tmp / "d.jsonl").string()}, *tok, unpacked());
  ASSERT_EQ(ds.train.rows(), 1);
  EXPECT_EQ(targets_of(ds.train, *tok), " A: 4");
  EXPECT_EQ(ds.files[0].format, "jsonl prompt/completion");
  ASSERT_EQ(ds.train_prompts.size(), 1u);
  EXPECT_EQ(tok->decode(ds.train_prompts[0].tokens), "Q: 2+2?");
  // EOS closes the completion and is a target.
  const int64_t W = 65;
  int64_t last = 0;
  for (int64_t i = 0; i < W; ++i)
    if (ds.train.mask[i]) last = i;
  EXPECT_EQ(ds.train.tokens[last], tok->eos_id());
}

TEST(Dataset, TextTrainsOnEveryTokenAndMessagesOnTheAssistant) {
  TempDir tmp;
  lt::spit(tmp / "t.jsonl", "{\"text\": \"hello there\"}\n");
  lt::spit(tmp / "m.jsonl",
                "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello!\"}]}\n");
  auto tok = bytes_tok();
  auto t = distill::load_dataset({(tmp / "t.jsonl").string()}, *tok, unpacked());
  EXPECT_EQ(targets_of(t.train, *tok), "hello there");
  auto m = distill::load_dataset({(tmp / "m.jsonl").string()}, *tok, unpacked());
  EXPECT_EQ(targets_of(m.train, *tok), "hello!");
  ASSERT_EQ(m.train_prompts.size(), 1u);
  EXPECT_EQ(tok->decode(m.train_prompts[0].tokens), "<|user|>\nhi\n<|assistant|>\n");
}

TEST(Dataset, BadLinesNameTheFileAndLine) {
  TempDir tmp;
  auto tok = bytes_tok();
  auto err = [&](const std::string& content) {
    lt::spit(tmp / "d.jsonl", content);
    return error_of([&] { distill::load_dataset({(tmp / "d.jsonl").string()}, *tok, unpacked()); });
  };
  EXPECT_NE(err("{\"text\": \"ok\"}\n{\"text\": \"ok\"\n").find("line 2: not valid JSON"), std::string::npos);
  EXPECT_NE(err("{\"text\": \"ok\"}\n\n{\"prompt\": 5}\n").find("line 3: field \"prompt\" must be a string"), std::string::npos);
  EXPECT_NE(err("{\"question\": \"x\"}\n").find("line 1: expected a \"prompt\""), std::string::npos);
  EXPECT_NE(err("[1, 2]\n").find("line 1: expected a JSON object"), std::string::npos);
  EXPECT_NE(err("{\"messages\": []}\n").find("non-empty array"), std::string::npos);
  EXPECT_NE(err("  \n\n").find("is empty"), std::string::npos);
  EXPECT_NE(error_of([&] { distill::load_dataset({(tmp / "missing.txt").string()}, *tok, unpacked()); }).find("missing.txt"),
            std::string::npos);
}

TEST(Dataset, SplitIsDeterministicAndIndependentOfTheContextLength) {
  TempDir tmp;
  lt::spit(tmp / "c.txt", lt::tiny_corpus(400));
  auto tok = bytes_tok();
  distill::DataOptions a;
  a.seq_len = 32;
  a.valid_fraction = 0.2;
  auto d1 = distill::load_dataset({(tmp / "c.txt").string()}, *tok, a);
  auto d2 = distill::load_dataset({(tmp / "c.txt").string()}, *tok, a);
  EXPECT_EQ(d1.train.tokens, d2.train.tokens);
  EXPECT_GT(d1.valid_examples, 0);
  EXPECT_GT(d1.train_examples, d1.valid_examples);
  a.seq_len = 48;
  auto d3 = distill::load_dataset({(tmp / "c.txt").string()}, *tok, a);
  EXPECT_EQ(d3.valid_examples, d1.valid_examples);
  EXPECT_EQ(d3.valid.target_tokens(), d1.valid.target_tokens());  // same examples, other row length
  a.split_seed = 99;
  auto d4 = distill::load_dataset({(tmp / "c.txt").string()}, *tok, a);
  EXPECT_NE(d4.valid.tokens, d1.valid.tokens);
}

TEST(Dataset, PackedRowsOverlapByOneTokenAndCountEachTargetOnce) {
  TempDir tmp;
  lt::spit(tmp / "c.txt", lt::tiny_corpus(100));
  auto tok = bytes_tok();
  distill::DataOptions o;
  o.seq_len = 16;
  o.valid_fraction = 0;
  auto ds = distill::load_dataset({(tmp / "c.txt").string()}, *tok, o);
  const int64_t W = 17;
  ASSERT_GT(ds.train.rows(), 3);
  for (int64_t r = 0; r + 1 < ds.train.rows() - 1; ++r) {
    EXPECT_EQ(ds.train.tokens[r * W + 16], ds.train.tokens[(r + 1) * W]);
    EXPECT_EQ(ds.train.mask[(r + 1) * W], 0);
  }
  // Every token of every document is a target exactly once, except the BOS each document starts with.
  std::string corpus = lt::tiny_corpus(100);
  int64_t expected = 0;
  size_t start = 0;
  while (start < corpus.size()) {
    size_t end = corpus.find("\n\n", start);
    if (end == std::string::npos) end = corpus.size();
    std::string doc = corpus.substr(start, end - start);
    while (!doc.empty() && doc.back() == '\n') doc.pop_back();
    while (!doc.empty() && doc.front() == '\n') doc.erase(0, 1);
    if (!doc.empty()) expected += static_cast<int64_t>(tok->encode(doc, false).size()) + 1;  // + EOS
    start = end + 2;
  }
  EXPECT_EQ(ds.train.target_tokens(), expected);
}

TEST(DataCursor, EveryRowOncePerEpochInAReproducibleOrder) {
  distill::DataCursor a{.seed = 5}, b{.seed = 5}, c{.seed = 6};
  auto first = a.next(10, 10);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 10u);
  EXPECT_EQ(b.next(4, 10), std::vector<int64_t>(first.begin(), first.begin() + 4));
  EXPECT_EQ(b.next(6, 10), std::vector<int64_t>(first.begin() + 4, first.end()));
  EXPECT_NE(c.next(10, 10), first);
  auto second = a.next(10, 10);
  EXPECT_EQ(a.epoch, 1);
  EXPECT_NE(second, first);
  EXPECT_EQ(std::set<int64_t>(second.begin(), second.end()).size(), 10u);
}
