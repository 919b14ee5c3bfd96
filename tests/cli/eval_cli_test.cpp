// lineage eval end to end: a tiny model trained here on four facts must answer a hand-made
// multiple-choice and cloze task about them; bad task files fail before any model runs; and
// stories260K on every benchmark file in ../shared/data/eval lands where chance allows.
#include <nlohmann/json.hpp>

#include <cmath>

#include "test_util.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(EvalCli, ATinyModelGetsTheHandMadeTaskRight) {
  TempDir tmp;
  const char* facts[] = {"the sky is blue.", "the grass is green.", "the sun is hot.", "the snow is cold."};
  std::string corpus;
  uint64_t x = 99;
  for (int i = 0; i < 1200; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    corpus += facts[(x >> 33) % 4];
    corpus += (i % 6 == 5) ? "\n\n" : " ";
  }
  testing::spit(tmp / "facts.txt", corpus);
  auto train = run_lineage("train --data " + quote((tmp / "facts.txt").string()) + " --out " + quote((tmp / "m").string()) +
                           " --vocab-size 280 --dim 64 --layers 2 --heads 4 --seq-len 32 --steps 200 --batch-size 16"
                           " --lr 3e-3 --warmup 10 --eval-every 0 --checkpoint-every 0");
  ASSERT_EQ(train.exit_code, 0) << train.err;
  testing::spit(tmp / "mc.jsonl", R"({"query": "the sky is", "choices": ["green.", "blue.", "hot.", "cold."], "gold": 1}
{"query": "the grass is", "choices": ["green.", "blue.", "hot.", "cold."], "gold": 0}
{"query": "the sun is", "choices": ["green.", "blue.", "hot.", "cold."], "gold": 2}
{"query": "the snow is", "choices": ["green.", "blue.", "hot.", "cold."], "gold": 3}
)");
  testing::spit(tmp / "cloze.jsonl", R"({"context": "the sky is blue. the snow is", "continuation": "cold."}
{"context": "the grass is", "continuation": "green."}
)");
  auto res = run_lineage("eval -m " + quote((tmp / "m" / "model.gguf").string()) + " --task " + quote((tmp / "mc.jsonl").string()) +
                         " " + quote((tmp / "cloze.jsonl").string()) + " --text " + quote((tmp / "facts.txt").string()) +
                         " --json " + quote((tmp / "e.json").string()) + " --no-cost");
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto j = json::parse(testing::slurp(tmp / "e.json"));
  const auto& t = j["models"]["model"]["tasks"];
  EXPECT_EQ(t["mc"]["kind"], "multiple_choice");
  EXPECT_EQ(t["mc"]["items"], 4);
  EXPECT_DOUBLE_EQ(t["mc"]["acc"].get<double>(), 1.0) << res.out;
  EXPECT_DOUBLE_EQ(t["mc"]["chance"].get<double>(), 0.25);
  EXPECT_EQ(t["cloze"]["kind"], "cloze");
  EXPECT_DOUBLE_EQ(t["cloze"]["acc"].get<double>(), 1.0) << res.out;
  // Four facts in a fixed frame: the text is nearly predictable.
  EXPECT_LT(j["models"]["model"]["text"]["perplexity"].get<double>(), 3.0);
  EXPECT_NE(res.out.find("mc acc"), std::string::npos);

  // The same model as its own teacher: full agreement, and the share column.
  res = run_lineage("eval -m " + quote((tmp / "m" / "model.gguf").string()) + " --teacher " +
                    quote((tmp / "m" / "model.gguf").string()) + " --task " + quote((tmp / "mc.jsonl").string()) +
                    " --text " + quote((tmp / "facts.txt").string()) + " --text-limit 300 --json " +
                    quote((tmp / "pair.json").string()));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto p = json::parse(testing::slurp(tmp / "pair.json"));
  EXPECT_NEAR(p["agreement"]["kl"].get<double>(), 0.0, 1e-6);
  EXPECT_DOUBLE_EQ(p["agreement"]["top1_agreement"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(p["share"]["accuracy_kept"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(p["share"]["parameters"].get<double>(), 1.0);
  EXPECT_GT(p["models"]["model"]["cost"]["decode_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(p["models"]["model"]["cost"]["flops_per_token"].get<double>(), 0);
  EXPECT_NE(res.out.find("model/teacher"), std::string::npos);
}

TEST(EvalCli, ABadTaskFileFailsWithItsLineBeforeAnyModelRuns) {
  TempDir tmp;
  testing::spit(tmp / "bad.jsonl", "{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 4}\n");
  // The model path does not exist either: the task file is read first.
  auto res = run_lineage("eval -m " + quote((tmp / "nope.gguf").string()) + " --task " + quote((tmp / "bad.jsonl").string()));
  EXPECT_NE(res.exit_code, 0);
  EXPECT_NE(res.err.find("bad.jsonl:2 (read as multiple choice {\"query\", \"choices\", \"gold\"}): \"gold\" is 4, out of "
                         "range for 1 choices"),
            std::string::npos)
      << res.err;
  res = run_lineage("eval -m " + quote((tmp / "nope.gguf").string()) + " --text " + quote((tmp / "bad.jsonl").string()));
  EXPECT_NE(res.exit_code, 0);
  EXPECT_NE(res.err.find("nope.gguf' does not exist"), std::string::npos) << res.err;
}

TEST(EvalCli, Stories260KOnEverySharedBenchmarkIsWhereChanceAllows) {
  auto eval_dir = testing::shared_dir() / "data" / "eval";
  auto text = testing::shared_dir() / "data" / "text" / "wikitext2_test.txt";
  if (!fs::exists(testing::stories_dir() / "stories260K.bin") || !fs::exists(eval_dir) || !fs::exists(text))
    GTEST_SKIP() << "../shared/models/stories260K or ../shared/data/eval is missing";
  TempDir tmp;
  std::string tasks;
  int n_files = 0;
  for (const auto& e : fs::directory_iterator(eval_dir)) {
    tasks += " " + quote(e.path().string());
    ++n_files;
  }
  auto res = run_lineage("eval -m " + quote((testing::stories_dir() / "stories260K.bin").string()) + " --tokenizer " +
                         quote((testing::stories_dir() / "tok512.bin").string()) + " --task" + tasks +
                         " --limit 60 --text " + quote(text.string()) + " --text-limit 4000 --json " +
                         quote((tmp / "e.json").string()));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto j = json::parse(testing::slurp(tmp / "e.json"));
  const auto& tasks_json = j["models"]["model"]["tasks"];
  EXPECT_EQ(static_cast<int>(tasks_json.size()), n_files);
  for (const auto& [name, t] : tasks_json.items()) {
    EXPECT_EQ(t["items"], 60) << name;
    double acc = t["acc"], chance = t["chance"];
    if (t["kind"] == "cloze") {
      EXPECT_LT(acc, 0.15) << name << ": a 260K-parameter story model should not solve LAMBADA";
    } else {
      // No better than a model that knows nothing: between always-choice-i accuracies (BoolQ's
      // "no" is 30% of these items, "yes" 70%), widened by 4 binomial standard errors.
      double lo = t["constant_choice_acc"][0], hi = t["constant_choice_acc"][1];
      double se = std::sqrt(chance * (1 - chance) / 60);
      EXPECT_GE(acc, std::min(lo, chance) - 4 * se) << name << " acc " << acc << " chance " << chance;
      EXPECT_LE(acc, std::max(hi, chance) + 4 * se) << name << " acc " << acc << " chance " << chance;
      double norm = t["acc_norm"];
      EXPECT_GE(norm, std::min(lo, chance) - 4 * se) << name;
      EXPECT_LE(norm, std::max(hi, chance) + 4 * se) << name;
    }
  }
  double ppl = j["models"]["model"]["text"]["perplexity"];
  EXPECT_GT(ppl, 20.0);  // Wikipedia is far from its training stories
  EXPECT_LT(ppl, 5000.0);
}

}  // namespace
}  // namespace lineage
