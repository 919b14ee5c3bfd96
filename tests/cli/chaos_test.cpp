// Chaos (issue 19): `lineage distill`, `train` and `cache` killed with SIGKILL at 20 random moments,
// resumed each time, end exactly where an uninterrupted run ends — every step's loss, the final
// weights, the cache's bytes. And a disk that fills up: the run stops with a clear error, the last
// whole checkpoint stays loadable, and --resume goes on once there is space again.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "lineage/core/json.h"
#include "lineage/io/model_file.h"
#include "process.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using json = nlohmann::json;
using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

// Runs `first` and then `again` (the resume) until one exits 0, killing each with SIGKILL at a
// random moment, `kills` times in all; returns how many kills landed before the run was done. A
// kill before `started` exists (the run recorded nothing yet) is followed by `first` again, as a
// user would start over a run that never began.
int run_with_kills(const std::vector<std::string>& first, const std::vector<std::string>& again, const fs::path& started,
                   int kills, const fs::path& log, int max_delay_ms, uint32_t seed) {
  std::mt19937 rng(seed);
  int landed = 0;
  for (int attempt = 0;; ++attempt) {
    pid_t pid = testing::spawn_lineage(attempt == 0 || !fs::exists(started) ? first : again, log, true);
    int status = 0;
    if (landed < kills) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(30, max_delay_ms)(rng)));
      kill(pid, SIGKILL);
    }
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
      ++landed;
      continue;
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::slurp(log);
    return landed;
  }
}

// The arguments as shell words for run_lineage.
std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) out += (out.empty() ? "" : " ") + quote(a);
  return out;
}

std::vector<double> step_losses(const fs::path& run) {
  std::vector<double> l;
  std::istringstream in(testing::slurp(run / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) {
      auto j = json::parse(line);
      if (!j.contains("split")) l.push_back(j["loss"].get<double>());
    }
  return l;
}

void expect_same_weights(const fs::path& a, const fs::path& b) {
  auto ma = io::read_model(a.string()), mb = io::read_model(b.string());
  ASSERT_EQ(ma.weights.size(), mb.weights.size());
  for (const auto& [name, t] : ma.weights) EXPECT_TRUE(torch::equal(t, mb.weights.at(name))) << name;
}

struct ChaosSetup {
  TempDir tmp;
  ChaosSetup() {
    testing::write_tiny_teacher(tmp / "teacher.gguf");
    testing::spit(tmp / "corpus.txt", testing::tiny_corpus(400));
    testing::spit(tmp / "big.txt", testing::tiny_corpus(6000));
  }
  std::vector<std::string> distill(const std::string& out, int steps) const {
    return {"distill", "--teacher", (tmp / "teacher.gguf").string(), "--data", (tmp / "corpus.txt").string(), "--out",
            (tmp / out).string(), "--seq-len", "32", "--dim", "16", "--layers", "1", "--heads", "2", "--batch-size", "4",
            "--eval-rows", "4", "--steps", std::to_string(steps), "--checkpoint-every", "5", "--eval-every", "50"};
  }
  std::vector<std::string> resume(const std::string& verb, const std::string& out) const {
    return {verb, "--resume", (tmp / out).string()};
  }
};

TEST(Chaos, DistillKilled20TimesEndsBitIdenticalToAnUninterruptedRun) {
  ChaosSetup s;
  auto whole = run_lineage(joined(s.distill("whole", 3000)));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  int landed = run_with_kills(s.distill("chaos", 3000), s.resume("distill", "chaos"), s.tmp / "chaos" / "checkpoints" / "latest", 20,
                              s.tmp / "chaos.log", 600, 7);
  EXPECT_EQ(landed, 20) << "the run ended before 20 kills: make it longer";
  EXPECT_EQ(step_losses(s.tmp / "whole"), step_losses(s.tmp / "chaos"));
  expect_same_weights(s.tmp / "whole" / "student.gguf", s.tmp / "chaos" / "student.gguf");
}

TEST(Chaos, TrainKilled20TimesEndsBitIdenticalToAnUninterruptedRun) {
  ChaosSetup s;
  auto train = [&](const std::string& out) {
    return std::vector<std::string>{"train", "--data", (s.tmp / "corpus.txt").string(), "--tokenizer",
                                    (s.tmp / "teacher.gguf").string(), "--out", (s.tmp / out).string(), "--seq-len", "32",
                                    "--dim", "16", "--layers", "1", "--heads", "2", "--batch-size", "4", "--steps", "3000",
                                    "--checkpoint-every", "5", "--eval-every", "50"};
  };
  pid_t pid = testing::spawn_lineage(train("whole"), s.tmp / "whole.log", true);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::slurp(s.tmp / "whole.log");
  int landed = run_with_kills(train("chaos"), s.resume("train", "chaos"), s.tmp / "chaos" / "checkpoints" / "latest", 20,
                              s.tmp / "chaos.log", 600, 11);
  EXPECT_EQ(landed, 20) << "the run ended before 20 kills: make it longer";
  EXPECT_EQ(step_losses(s.tmp / "whole"), step_losses(s.tmp / "chaos"));
  expect_same_weights(s.tmp / "whole" / "model.gguf", s.tmp / "chaos" / "model.gguf");
}

TEST(Chaos, CacheKilled20TimesWritesTheSameBytes) {
  ChaosSetup s;
  auto cache = [&](const std::string& out) {
    return std::vector<std::string>{"cache", "--teacher", (s.tmp / "teacher.gguf").string(), "--data",
                                    (s.tmp / "big.txt").string(), "--out", (s.tmp / out).string(), "--seq-len", "32",
                                    "--top-k", "8", "--rows-per-shard", "2"};
  };
  pid_t pid = testing::spawn_lineage(cache("whole"), s.tmp / "whole.log", true);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::slurp(s.tmp / "whole.log");
  // The same command again is the resume: finished shards are kept.
  int landed = run_with_kills(cache("chaos"), cache("chaos"), s.tmp / "chaos", 20, s.tmp / "chaos.log", 400, 13);
  EXPECT_EQ(landed, 20) << "the cache was written before 20 kills: make it bigger";
  size_t shards = 0;
  for (const auto& e : fs::directory_iterator(s.tmp / "whole")) {
    if (e.path().extension() != ".bin") continue;
    ++shards;
    EXPECT_EQ(testing::slurp(e.path()), testing::slurp(s.tmp / "chaos" / e.path().filename())) << e.path().filename();
  }
  EXPECT_GT(shards, 5u);
}

uint64_t bytes_under(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// A disk that fills up mid-run: a tmpfs as the run directory, filled so that the first checkpoint
// fits and the second does not (root only; skipped otherwise). Freeing the space, --resume goes on
// from the last whole checkpoint and ends like a run that never stopped.
TEST(Chaos, AFullDiskStopsTheRunCleanlyAndResumeGoesOnOnceThereIsSpace) {
  ChaosSetup s;
  auto whole = run_lineage(joined(s.distill("whole", 120)));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const uint64_t checkpoint = bytes_under(s.tmp / "whole" / "checkpoints" / "step-0000120");
  const fs::path dir = s.tmp / "small";
  fs::create_directories(dir);
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64m") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): the full-disk test is skipped";
  struct Unmount {
    fs::path d;
    ~Unmount() { umount2(d.c_str(), MNT_DETACH); }
  } unmount{dir};
  {  // leave room for the run's small files and one and a half checkpoints
    const auto free_bytes = fs::space(dir).available;
    const uint64_t keep = checkpoint * 3 / 2 + (64 << 10);
    std::ofstream filler(dir / "filler", std::ios::binary);
    std::string block(1 << 16, 'x');
    for (uint64_t left = free_bytes - keep; left > 0;) {
      uint64_t n = std::min<uint64_t>(left, block.size());
      filler.write(block.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
  }
  auto full = run_lineage(joined(s.distill("small/run", 120)));
  EXPECT_EQ(full.exit_code, 1) << full.err;
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos) << full.err;
  // The last whole checkpoint is named by `latest` and complete.
  auto latest = testing::slurp(dir / "run" / "checkpoints" / "latest");
  ASSERT_FALSE(latest.empty()) << full.err;
  latest.pop_back();
  EXPECT_TRUE(fs::exists(dir / "run" / "checkpoints" / latest / "state.pt")) << latest;
  EXPECT_TRUE(json::parse(testing::slurp(dir / "run" / "checkpoints" / latest / "trainer.json")).contains("step"));
  fs::remove(dir / "filler");  // space again
  auto resumed = run_lineage("distill --resume " + quote((dir / "run").string()));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming"), std::string::npos) << resumed.err;
  EXPECT_EQ(step_losses(s.tmp / "whole"), step_losses(dir / "run"));
  expect_same_weights(s.tmp / "whole" / "student.gguf", dir / "run" / "student.gguf");
}

}  // namespace
}  // namespace lineage
