// Teacher cache: what is read back is what the teacher said (to half precision), the record stays
// within the size budget, and a cache for another teacher, tokenizer or data is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "lineage/core/error.h"
#include "lineage/distill/batch.h"
#include "lineage/distill/dataset.h"
#include "lineage/teacher/cache.h"
#include "lineage/teacher/open.h"
#include "test_util.h"
#include "tiny_teacher.h"

using namespace lineage;
namespace lt = lineage::testing;
using lt::error_of;
using lt::TempDir;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  TempDir tmp;
  std::unique_ptr<teacher::Teacher> teacher;
  distill::Dataset data;
  Fixture() {
    lt::write_tiny_teacher(tmp / "teacher.gguf");
    lt::spit(tmp / "corpus.txt", lt::tiny_corpus());
    teacher = teacher::open({(tmp / "teacher.gguf").string()});
    distill::DataOptions o;
    o.seq_len = 32;
    data = distill::load_dataset({(tmp / "corpus.txt").string()}, teacher->tokenizer(), o);
  }
  void build(const fs::path& dir, int64_t k = 5, int64_t rows_per_shard = 7, uint64_t seed = 0) {
    teacher::CacheBuildOptions o;
    o.k = k;
    o.tail_samples = 3;
    o.seed = seed;
    o.seq_len = 32;
    o.batch_size = 3;
    o.rows_per_shard = rows_per_shard;
    o.quiet = true;
    teacher::build_cache(*teacher, {{"train", data.train.tokens.data(), data.train.rows(), data.train.digest()},
                                    {"valid", data.valid.tokens.data(), data.valid.rows(), data.valid.digest()}},
                         o, dir);
  }
};

}  // namespace

TEST(TeacherCache, RecordSizeFitsTheBudget) {
  EXPECT_EQ(teacher::id_bits(2048), 11);
  EXPECT_EQ(teacher::id_bits(131072), 17);
  EXPECT_EQ(teacher::id_bits(32000), 15);
  EXPECT_EQ(teacher::cache_record_bytes(20, 2048), 40 + 2 + 2 + 28);
  EXPECT_EQ(teacher::cache_record_bytes(20, 131072), 40 + 2 + 2 + 43);
  // With the default 6 tail draws: 26 ids packed.
  EXPECT_EQ(teacher::cache_record_bytes(20, 2048, 6), 40 + 2 + 2 + 36);
  EXPECT_EQ(teacher::cache_record_bytes(20, 131072, 6), 40 + 2 + 2 + 56);
  EXPECT_LE(teacher::cache_record_bytes(20, 131072, teacher::CacheBuildOptions{}.tail_samples), 100);
}

TEST(TeacherCache, ReadsBackTheTeachersTopK) {
  Fixture f;
  ASSERT_GT(f.data.train.rows(), 20);
  f.build(f.tmp / "cache");
  teacher::TeacherCache cache(f.tmp / "cache");
  EXPECT_EQ(cache.k(), 5);
  EXPECT_EQ(cache.split_rows("train"), f.data.train.rows());
  EXPECT_EQ(cache.split_rows("valid"), f.data.valid.rows());
  // Rows from several shards, out of order.
  std::vector<int64_t> rows = {f.data.train.rows() - 1, 0, 8, 3};
  auto got = cache.rows("train", rows, torch::kCPU);
  auto [tok, mask] = batch_of(f.data.train, rows, torch::kCPU);
  teacher::TopKRequest req;
  req.k = 5;
  req.next = tok.slice(1, 1, 33);
  auto want = f.teacher->top_k(tok.slice(1, 0, 32), req);
  ASSERT_EQ(got.ids.sizes(), want.ids.sizes());
  EXPECT_TRUE(torch::equal(got.ids, want.ids));
  EXPECT_TRUE(torch::allclose(got.logprobs, want.logprobs, /*rtol=*/1e-3, /*atol=*/2e-3));
  // The log-probability of the token that actually came next, wherever it ranks.
  ASSERT_EQ(got.target_logprobs.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_TRUE(torch::allclose(got.target_logprobs, want.target_logprobs, 1e-3, 2e-3));
  auto full = torch::log_softmax(f.teacher->logits(tok.slice(1, 0, 32)), -1);
  EXPECT_TRUE(torch::allclose(got.target_logprobs, full.gather(-1, tok.slice(1, 1, 33).unsqueeze(-1)).squeeze(-1), 1e-3, 2e-3));
  // The files hold exactly header + records.
  int64_t bytes = 0;
  for (const auto& e : fs::directory_iterator(f.tmp / "cache"))
    if (e.path().extension() == ".bin") bytes += static_cast<int64_t>(e.file_size()) - teacher::kCacheHeaderBytes;
  EXPECT_EQ(bytes, (f.data.train.rows() + f.data.valid.rows()) * 32 * teacher::cache_record_bytes(5, 260, 3));
  // Tail draws: 3 per position, never one of the top k or the next token.
  ASSERT_EQ(got.tail_ids.sizes(), (std::vector<int64_t>{4, 32, 3}));
  auto next = tok.slice(1, 1, 33).unsqueeze(-1);
  for (int64_t j = 0; j < 3; ++j) {
    auto d = got.tail_ids.select(-1, j).unsqueeze(-1);
    EXPECT_FALSE((d == got.ids).any().item<bool>());
    EXPECT_FALSE((d == next).all(-1).any().item<bool>());
  }
  EXPECT_TRUE((got.tail_ids >= 0).all().item<bool>() && (got.tail_ids < 260).all().item<bool>());
}

TEST(TeacherCache, TailDrawsFollowTheSeed) {
  Fixture f;
  f.build(f.tmp / "a", 5, 7, 11);
  f.build(f.tmp / "b", 5, 7, 11);
  f.build(f.tmp / "c", 5, 7, 12);
  std::vector<int64_t> rows = {0, 1, 2};
  auto a = teacher::TeacherCache(f.tmp / "a").rows("train", rows, torch::kCPU);
  auto b = teacher::TeacherCache(f.tmp / "b").rows("train", rows, torch::kCPU);
  auto c = teacher::TeacherCache(f.tmp / "c").rows("train", rows, torch::kCPU);
  EXPECT_TRUE(torch::equal(a.tail_ids, b.tail_ids));
  EXPECT_FALSE(torch::equal(a.tail_ids, c.tail_ids));
  EXPECT_TRUE(torch::equal(a.ids, c.ids));
}

TEST(TeacherCache, RefusesAnotherTeacherTokenizerOrData) {
  Fixture f;
  f.build(f.tmp / "cache");
  teacher::TeacherCache cache(f.tmp / "cache");
  const auto& info = f.teacher->info();
  EXPECT_NO_THROW(cache.check(info.sha256, info.tokenizer_sha256, "train", f.data.train.digest(), 32));
  std::string other(64, 'a');
  EXPECT_NE(error_of([&] { cache.check(other, info.tokenizer_sha256, "train", f.data.train.digest(), 32); })
                .find("made by another teacher"), std::string::npos);
  EXPECT_NE(error_of([&] { cache.check(info.sha256, other, "train", f.data.train.digest(), 32); })
                .find("another tokenizer"), std::string::npos);
  EXPECT_NE(error_of([&] { cache.check(info.sha256, info.tokenizer_sha256, "train", f.data.valid.digest(), 32); })
                .find("other 'train' rows"), std::string::npos);
  EXPECT_NE(error_of([&] { cache.check(info.sha256, info.tokenizer_sha256, "train", f.data.train.digest(), 64); })
                .find("--seq-len 64"), std::string::npos);
}

// teacher::open with a cache: one Teacher that answers top-k by row from the cache and everything
// else from the model; it checks the rows it is asked for were the ones cached.
TEST(TeacherCache, OpensAsATeacherThatAnswersByRow) {
  Fixture f;
  f.build(f.tmp / "cache");
  teacher::TeacherSpec spec;
  spec.source = (f.tmp / "teacher.gguf").string();
  spec.cache = (f.tmp / "cache").string();
  auto cached = teacher::open(spec);
  auto can = cached->abilities();
  EXPECT_TRUE(can.by_row && can.top_k && can.tail_draws && can.logits && can.weights);
  EXPECT_EQ(can.max_top_k, 5);
  EXPECT_EQ(cached->info().sha256, f.teacher->info().sha256);
  std::vector<int64_t> rows = {2, 9, 0};
  auto [tok, mask] = batch_of(f.data.train, rows, torch::kCPU);
  teacher::TopKRequest by_row;
  by_row.split = "train";
  by_row.rows = rows;
  auto got = cached->top_k(tok.slice(1, 0, 32), by_row);
  auto want = teacher::TeacherCache(f.tmp / "cache").rows("train", rows, torch::kCPU);
  EXPECT_TRUE(torch::equal(got.ids, want.ids));
  EXPECT_TRUE(torch::equal(got.tail_ids, want.tail_ids));
  // Without rows it is the model's own answer.
  teacher::TopKRequest plain;
  plain.k = 3;
  EXPECT_EQ(cached->top_k(tok.slice(1, 0, 32), plain).ids.size(-1), 3);
  EXPECT_NO_THROW(cached->expect_rows("train", f.data.train.digest(), 32));
  EXPECT_NE(error_of([&] { cached->expect_rows("train", f.data.valid.digest(), 32); }).find("other 'train' rows"),
            std::string::npos);
  // The plain model teacher does not answer by row.
  EXPECT_FALSE(f.teacher->abilities().by_row);
  by_row.rows.pop_back();
  EXPECT_NE(error_of([&] { cached->top_k(tok.slice(1, 0, 32), by_row); }).find("2 rows asked"), std::string::npos);
}

TEST(TeacherCache, DetectsACorruptShard) {
  Fixture f;
  f.build(f.tmp / "cache");
  {
    std::fstream io(f.tmp / "cache" / "train-00001.bin", std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(teacher::kCacheHeaderBytes + 100);
    io.put('\x5a');
  }
  std::string e = error_of([&] { teacher::TeacherCache c(f.tmp / "cache"); });
  EXPECT_NE(e.find("train-00001.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;
}

TEST(TeacherCache, AnInterruptedBuildKeepsItsFinishedShards) {
  Fixture f;
  f.build(f.tmp / "cache");
  fs::path kept = f.tmp / "cache" / "train-00000.bin";
  auto before = fs::last_write_time(kept);
  fs::remove(f.tmp / "cache" / "train-00002.bin");
  fs::remove(f.tmp / "cache" / "cache.json");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  f.build(f.tmp / "cache");
  EXPECT_EQ(fs::last_write_time(kept), before);
  EXPECT_NO_THROW(teacher::TeacherCache c(f.tmp / "cache"));
}

TEST(TeacherCache, RefusesKLargerThanTheVocabulary) {
  Fixture f;
  EXPECT_NE(error_of([&] { f.build(f.tmp / "cache", 300); }).find("out of range"), std::string::npos);
}
