// `lineage distill`, `lineage cache` and `lineage train` as a user runs them, on a tiny teacher
// written by the test: every option documented, a recipe file, bad inputs refused before the first
// step, a run killed with SIGKILL and resumed ending exactly like an uninterrupted one, exports
// carrying their provenance.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "lineage/distill/recipe.h"
#include "lineage/io/model_file.h"
#include "process.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;
using json = nlohmann::json;

struct TeacherSetup {
  TempDir tmp;
  std::string teacher, data;
  TeacherSetup() {
    testing::write_tiny_teacher(tmp / "teacher.gguf");
    testing::spit(tmp / "corpus.txt", testing::tiny_corpus(300));
    teacher = quote((tmp / "teacher.gguf").string());
    data = quote((tmp / "corpus.txt").string());
  }
  std::string base(const std::string& out) const {
    return "distill --teacher " + teacher + " --data " + data + " --out " + quote((tmp / out).string()) +
           " --seq-len 32 --dim 16 --layers 1 --heads 2 --batch-size 4 --eval-rows 4 ";
  }
};

std::vector<json> metrics(const fs::path& run) {
  std::vector<json> out;
  std::istringstream in(testing::slurp(run / "metrics.jsonl"));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::vector<double> step_losses(const fs::path& run) {
  std::vector<double> l;
  for (const auto& j : metrics(run))
    if (!j.contains("split")) l.push_back(j["loss"].get<double>());
  return l;
}

TEST(DistillCli, HelpDocumentsEveryRecipeOption) {
  auto res = run_lineage("distill --help");
  ASSERT_EQ(res.exit_code, 0);
  for (const auto& f : distill::recipe_fields())
    if (f.distill) EXPECT_NE(res.out.find(std::string("--") + f.key), std::string::npos) << f.key;
  for (const char* extra : {"--recipe", "--resume"}) EXPECT_NE(res.out.find(extra), std::string::npos);
}

TEST(DistillCli, RunsFromARecipeFileAndRecordsProvenance) {
  TeacherSetup s;
  testing::spit(s.tmp / "recipe.json",
                json({{"teacher", (s.tmp / "teacher.gguf").string()}, {"data", json::array({(s.tmp / "corpus.txt").string()})},
                      {"out", (s.tmp / "run").string()}, {"seq_len", 32}, {"dim", 16}, {"layers", 1}, {"heads", 2},
                      {"steps", 4}, {"batch_size", 4}, {"loss", "jsd"}, {"beta", 0.3}, {"eval_rows", 4}})
                    .dump());
  // A flag given on the command line wins over the file.
  auto res = run_lineage("distill --recipe " + quote((s.tmp / "recipe.json").string()) + " --steps 6");
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.out.find("validation perplexity"), std::string::npos) << res.out;
  EXPECT_EQ(step_losses(s.tmp / "run").size(), 6u);
  auto prov = json::parse(testing::slurp(s.tmp / "run" / "lineage.json"));
  EXPECT_EQ(prov["kind"], "distill");
  EXPECT_EQ(prov["recipe"]["loss"], "jsd");
  EXPECT_EQ(prov["recipe"]["beta"], 0.3);
  EXPECT_EQ(prov["steps_done"], 6);
  EXPECT_EQ(prov["teacher"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(prov["data"]["files"][0]["sha256"].get<std::string>().size(), 64u);
  EXPECT_FALSE(prov["finished_at"].is_null());
  EXPECT_TRUE(prov["evaluation"].contains("kl"));
  EXPECT_EQ(prov["exports"]["student.gguf"]["sha256"].get<std::string>().size(), 64u);
  // The exports carry the record: GGUF lineage.provenance + general.base_model.*, HF lineage.json.
  auto gguf = io::read_model((s.tmp / "run" / "student.gguf").string());
  auto inner = json::parse(gguf.provenance);
  EXPECT_EQ(inner["teacher"]["sha256"], prov["teacher"]["sha256"]);
  EXPECT_TRUE(fs::exists(s.tmp / "run" / "student" / "lineage.json"));
  auto info = run_lineage("info --json " + quote((s.tmp / "run" / "student.gguf").string()));
  EXPECT_EQ(info.exit_code, 0) << info.err;
}

TEST(DistillCli, BadInputsFailBeforeTheFirstStep) {
  TeacherSetup s;
  auto expect_error = [&](const std::string& args, const std::string& message) {
    auto res = run_lineage(args);
    EXPECT_EQ(res.exit_code, 1) << args;
    EXPECT_NE(res.err.find(message), std::string::npos) << args << "\n" << res.err;
    EXPECT_FALSE(fs::exists(s.tmp / "bad" / "metrics.jsonl")) << args;
  };
  expect_error(s.base("bad") + "--loss kl_forward", "unknown loss 'kl_forward'");
  expect_error(s.base("bad") + "--top-k 1000", "--top-k 1000 is out of range");
  expect_error(s.base("bad") + "--mode offline", "needs --cache");
  expect_error(s.base("bad") + "--mode teleport", "unknown distillation mode");
  expect_error(s.base("bad") + "--alpha 1.5", "--alpha 1.5");
  testing::spit(s.tmp / "empty.txt", "\n\n");
  expect_error("distill --teacher " + s.teacher + " --data " + quote((s.tmp / "empty.txt").string()) +
                   " --out " + quote((s.tmp / "bad").string()) + " --dim 16 --layers 1 --heads 2",
               "is empty");
  testing::spit(s.tmp / "bad.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\" \"completion\": 1}\n");
  expect_error("distill --teacher " + s.teacher + " --data " + quote((s.tmp / "bad.jsonl").string()) +
                   " --out " + quote((s.tmp / "bad").string()) + " --dim 16 --layers 1 --heads 2",
               "bad.jsonl line 2: not valid JSON");
  // A student with another vocabulary.
  model::ModelConfig c;
  c.vocab_size = 300;
  c.dim = 16;
  c.hidden_dim = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.max_seq_len = 64;
  model::Llama other(c);
  io::ModelFile m;
  m.config = c;
  for (auto& [n, t] : other->weights()) m.weights[n] = t.detach().clone();
  io::write_model(m, (s.tmp / "other.gguf").string());
  expect_error(s.base("bad") + "--student " + quote((s.tmp / "other.gguf").string()), "vocabulary of 300 tokens");
  // An existing run is not overwritten.
  ASSERT_EQ(run_lineage(s.base("done") + "--steps 2").exit_code, 0);
  auto again = run_lineage(s.base("done") + "--steps 2");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("already holds a run"), std::string::npos) << again.err;
}

TEST(DistillCli, OfflineFromTheCacheMatchesTheCacheBuilder) {
  TeacherSetup s;
  auto cache = run_lineage("cache --teacher " + s.teacher + " --data " + s.data + " --seq-len 32 --top-k 8 --out " +
                           quote((s.tmp / "cache").string()));
  ASSERT_EQ(cache.exit_code, 0) << cache.err;
  auto res = run_lineage(s.base("off") + "--steps 3 --mode offline --cache " + quote((s.tmp / "cache").string()));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  // Another context length makes other rows: refused.
  auto bad = run_lineage("distill --teacher " + s.teacher + " --data " + s.data + " --out " + quote((s.tmp / "off2").string()) +
                         " --seq-len 16 --dim 16 --layers 1 --heads 2 --mode offline --cache " + quote((s.tmp / "cache").string()));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--seq-len 16"), std::string::npos) << bad.err;
}

TEST(DistillCli, EveryModeRuns) {
  TeacherSetup s;
  for (const std::string& mode : {"online --top-k 5 --threads 1", "seq_kd --gen-examples 6 --gen-tokens 8", "on_policy --lambda 0.5 --gen-tokens 8"}) {
    std::string out = "m" + std::to_string(std::hash<std::string>{}(mode) % 1000);
    auto res = run_lineage(s.base(out) + "--steps 4 --mode " + mode);
    ASSERT_EQ(res.exit_code, 0) << mode << "\n" << res.err;
    EXPECT_EQ(step_losses(s.tmp / out).size(), 4u) << mode;
  }
}

// The chunked objective (--kd-chunk-rows) in the modes that use it, against the unchunked one:
// the same per-step losses (full logits and top-k teachers; on-policy on the student's samples).
TEST(DistillCli, ChunkedObjectiveGivesTheUnchunkedLossesInEveryMode) {
  TeacherSetup s;
  for (const std::string& mode : {"online", "online --top-k 5", "on_policy --lambda 1 --gen-tokens 8",
                                  "on_policy --lambda 1 --gen-tokens 8 --top-k 5"}) {
    std::vector<std::vector<double>> runs;
    for (const char* chunk : {"0", "7"}) {
      std::string out = "c" + std::string(chunk) + "_" + std::to_string(std::hash<std::string>{}(mode) % 1000);
      auto res = run_lineage(s.base(out) + "--steps 3 --kd-chunk-rows " + chunk + " --mode " + mode);
      ASSERT_EQ(res.exit_code, 0) << mode << "\n" << res.err;
      runs.push_back(step_losses(s.tmp / out));
    }
    ASSERT_EQ(runs[0].size(), 3u) << mode;
    ASSERT_EQ(runs[1].size(), 3u) << mode;
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(runs[1][i], runs[0][i], 1e-5 * std::abs(runs[0][i])) << mode << ", step " << i + 1;
  }
}

TEST(DistillCli, KilledAtARandomStepAndResumedEndsLikeAnUninterruptedRun) {
  TeacherSetup s;
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"distill", "--teacher", (s.tmp / "teacher.gguf").string(), "--data",
                                    (s.tmp / "corpus.txt").string(), "--out", (s.tmp / out).string(), "--seq-len", "32",
                                    "--dim", "16", "--layers", "1", "--heads", "2", "--batch-size", "4", "--eval-rows", "4",
                                    "--steps", "150", "--checkpoint-every", "7", "--eval-every", "25"};
  };
  auto started = std::chrono::steady_clock::now();
  pid_t whole = testing::spawn_lineage(args("whole"), s.tmp / "whole.log");
  int status = 0;
  waitpid(whole, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::slurp(s.tmp / "whole.log");
  // The kill comes at a random moment within the first half of what the whole run took, so it
  // lands inside the run however fast or loaded the machine is.
  auto whole_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();

  std::mt19937 rng(static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  bool killed = false;
  for (int attempt = 0; attempt < 3 && !killed; ++attempt) {
    fs::remove_all(s.tmp / "killed");
    pid_t pid = testing::spawn_lineage(args("killed"), s.tmp / "killed.log");
    // After the first checkpoint, a random moment later.
    for (int i = 0; i < 3000 && !fs::exists(s.tmp / "killed" / "checkpoints" / "latest"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto upper = std::max<long>(1, static_cast<long>(whole_ms) / (2 << attempt));
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<long>(0, upper)(rng)));
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    killed = WIFSIGNALED(status);
  }
  ASSERT_TRUE(killed) << "three runs ended before they could be killed";
  auto killed_at = step_losses(s.tmp / "killed").size();
  // Whatever the moment, `latest` names a whole checkpoint.
  auto latest = testing::slurp(s.tmp / "killed" / "checkpoints" / "latest");
  latest.pop_back();
  EXPECT_TRUE(fs::exists(s.tmp / "killed" / "checkpoints" / latest / "state.pt"));
  EXPECT_TRUE(fs::exists(s.tmp / "killed" / "checkpoints" / latest / "trainer.json"));

  auto res = run_lineage("distill --resume " + quote((s.tmp / "killed").string()));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.err.find("resuming"), std::string::npos);
  auto a = step_losses(s.tmp / "whole"), b = step_losses(s.tmp / "killed");
  ASSERT_EQ(a.size(), 150u);
  EXPECT_EQ(a, b) << "killed after " << killed_at << " steps, resumed from " << latest;
  auto pa = json::parse(testing::slurp(s.tmp / "whole" / "lineage.json"));
  auto pb = json::parse(testing::slurp(s.tmp / "killed" / "lineage.json"));
  EXPECT_EQ(pa["evaluation"]["loss"], pb["evaluation"]["loss"]);
  ASSERT_EQ(pb["resumed"].size(), 1u);
  // The run's command stays the one that started it; the resume is listed with its own.
  EXPECT_NE(pb["command"].get<std::string>().find("--steps 150"), std::string::npos);
  EXPECT_EQ(pb["command"].get<std::string>().find("--resume"), std::string::npos);
  EXPECT_NE(pb["resumed"][0]["command"].get<std::string>().find("--resume"), std::string::npos);
}

TEST(TrainCli, TrainsATokenizerAndAModelAndExportsThem) {
  TempDir tmp;
  testing::spit(tmp / "corpus.txt", testing::tiny_corpus(600));
  auto res = run_lineage("train --data " + quote((tmp / "corpus.txt").string()) + " --out " + quote((tmp / "t").string()) +
                         " --vocab-size 300 --dim 32 --layers 2 --heads 4 --seq-len 32 --steps 30 --batch-size 8 --lr 3e-3"
                         " --eval-every 10 --warmup 5 --license CC0-1.0");
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto m = metrics(tmp / "t");
  double first = m.front()["loss"], last = 0;
  for (const auto& j : m)
    if (j.contains("split")) last = j["loss"];
  EXPECT_LT(last, first - 1.0) << "validation loss should fall well below the first training loss";
  auto model = io::read_model((tmp / "t" / "model.gguf").string());
  EXPECT_EQ(model.config.vocab_size, 300);
  ASSERT_TRUE(model.tokenizer);
  EXPECT_EQ(model.tokenizer->decode(model.tokenizer->encode("the cat sat on a mat.", false)), "the cat sat on a mat.");
  auto prov = json::parse(model.provenance);
  EXPECT_EQ(prov["kind"], "train");
  EXPECT_NE(prov["command"].get<std::string>().find("--vocab-size 300"), std::string::npos);
  EXPECT_EQ(model.license, "CC0-1.0");
  EXPECT_EQ(prov["license"], "CC0-1.0");

  // A student distilled from it takes the teacher's license unless told otherwise.
  res = run_lineage("distill --teacher " + quote((tmp / "t" / "model.gguf").string()) + " --data " +
                    quote((tmp / "corpus.txt").string()) + " --out " + quote((tmp / "s").string()) +
                    " --dim 16 --layers 1 --heads 2 --seq-len 32 --steps 2 --batch-size 2 --eval-every 0");
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto student = io::read_model((tmp / "s" / "student.gguf").string());
  EXPECT_EQ(student.license, "CC0-1.0");
  EXPECT_EQ(json::parse(student.provenance)["teacher"]["license"], "CC0-1.0");
}

}  // namespace
}  // namespace lineage
