// lineage prune and distill --init-from-teacher prune:... on a tiny teacher built here: the pruned
// model is written in every format Lineage writes and reads back the same; nothing asked cut gives
// the teacher's weights; a target the teacher cannot give, or no calibration text, is refused by
// name; a distillation starts from the pruned teacher.
#include <nlohmann/json.hpp>

#include "lineage/io/model_file.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

TEST(PruneCli, WritesEveryFormatAndTheFullWidthIsTheTeacher) {
  TempDir tmp;
  lineage::testing::write_tiny_teacher(tmp / "teacher.gguf");  // dim 32: 4 heads of 8 over 2 KV heads, hidden 64, 2 layers
  testing::spit(tmp / "corpus.txt", lineage::testing::tiny_corpus(200));
  const std::string common = "prune --model " + quote((tmp / "teacher.gguf").string()) + " --calibration " +
                             quote((tmp / "corpus.txt").string()) + " --rows 16 --seq-len 32";
  for (std::string out : {"p.gguf", "p.bin", "p_hf"}) {
    auto r = run_lineage(common + " --dim 16 --kv-heads 1 --hidden 40 --layers 1 --out " + quote((tmp / out).string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("dim 16, 1 layers, 2 heads / 1 KV, hidden 40"), std::string::npos) << r.err;
  }
  auto gguf = io::read_model((tmp / "p.gguf").string());
  EXPECT_EQ(gguf.config.dim, 16);
  EXPECT_EQ(gguf.config.n_heads, 2);
  EXPECT_EQ(gguf.config.n_kv_heads, 1);
  EXPECT_EQ(gguf.config.hidden_dim, 40);
  EXPECT_EQ(gguf.config.n_layers, 1);
  for (std::string other : {"p.bin", "p_hf"}) {
    auto m = io::read_model((tmp / other).string(), (tmp / "teacher.gguf").string());
    ASSERT_EQ(m.weights.size(), gguf.weights.size()) << other;
    for (const auto& [name, t] : gguf.weights) EXPECT_TRUE(torch::equal(m.weights.at(name), t)) << other << " " << name;
  }
  auto g = run_lineage("generate -q -m " + quote((tmp / "p.gguf").string()) + " -p ab -n 8 --temperature 0");
  EXPECT_EQ(g.exit_code, 0) << g.err;

  auto whole = run_lineage(common + " --out " + quote((tmp / "whole.gguf").string()));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto teacher = io::read_model((tmp / "teacher.gguf").string()), same = io::read_model((tmp / "whole.gguf").string());
  for (const auto& [name, t] : teacher.weights) EXPECT_TRUE(torch::equal(same.weights.at(name), t)) << name;

  auto wide = run_lineage(common + " --dim 64 --out " + quote((tmp / "x.gguf").string()));
  EXPECT_NE(wide.exit_code, 0);
  EXPECT_NE(wide.err.find("cannot prune to 64 embedding channels"), std::string::npos) << wide.err;
  auto odd = run_lineage(common + " --dim 20 --heads 2 --out " + quote((tmp / "x.gguf").string()));
  EXPECT_NE(odd.exit_code, 0);
  EXPECT_NE(odd.err.find("head size"), std::string::npos) << odd.err;
  auto nodata = run_lineage("prune --model " + quote((tmp / "teacher.gguf").string()) + " --calibration " +
                            quote((tmp / "absent.txt").string()) + " --dim 16 --out " + quote((tmp / "x.gguf").string()));
  EXPECT_NE(nodata.exit_code, 0);
  EXPECT_NE(nodata.err.find("absent.txt"), std::string::npos) << nodata.err;
  EXPECT_FALSE(fs::exists(tmp / "x.gguf"));
}

TEST(PruneCli, DistillationStartsFromThePrunedTeacher) {
  TempDir tmp;
  lineage::testing::write_tiny_teacher(tmp / "teacher.gguf");
  testing::spit(tmp / "corpus.txt", lineage::testing::tiny_corpus(300));
  auto d = run_lineage("distill --teacher " + quote((tmp / "teacher.gguf").string()) + " --data " +
                       quote((tmp / "corpus.txt").string()) +
                       " --init-from-teacher prune:dim=16,kv-heads=1,hidden=40 --seq-len 32 --batch-size 4 --steps 6 "
                       "--eval-every 0 --eval-rows 4 --out " +
                       quote((tmp / "run").string()));
  ASSERT_EQ(d.exit_code, 0) << d.err;
  auto student = io::read_model((tmp / "run" / "student.gguf").string());
  EXPECT_EQ(student.config.dim, 16);
  EXPECT_EQ(student.config.n_heads, 2);
  EXPECT_EQ(student.config.n_kv_heads, 1);
  EXPECT_EQ(student.config.hidden_dim, 40);
  EXPECT_EQ(student.config.n_layers, 2);
  auto recipe = nlohmann::json::parse(testing::slurp(tmp / "run" / "recipe.json"));
  EXPECT_EQ(recipe["init-from-teacher"], "prune:dim=16,kv-heads=1,hidden=40");
  auto bad = run_lineage("distill --teacher " + quote((tmp / "teacher.gguf").string()) + " --data " +
                         quote((tmp / "corpus.txt").string()) + " --init-from-teacher prune:dim=16,depth=3 --seq-len 32 "
                         "--steps 2 --out " + quote((tmp / "bad").string()));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("unknown key 'depth'"), std::string::npos) << bad.err;
}

// --hidden-loss: a student of another width matched block by block through learned projections,
// which a checkpoint keeps (a resume goes on with them) and the run saves beside the student; the
// term is logged; other modes are refused.
TEST(PruneCli, HiddenStateDistillationTrainsItsProjectionAndResumes) {
  TempDir tmp;
  lineage::testing::write_tiny_teacher(tmp / "teacher.gguf");
  testing::spit(tmp / "corpus.txt", lineage::testing::tiny_corpus(300));
  const std::string common = "distill --teacher " + quote((tmp / "teacher.gguf").string()) + " --data " +
                             quote((tmp / "corpus.txt").string()) +
                             " --dim 16 --layers 1 --heads 2 --seq-len 32 --batch-size 4 --eval-every 0 --eval-rows 4"
                             " --hidden-loss cosine --hidden-weight 0.5 --checkpoint-every 2";
  auto first = run_lineage(common + " --steps 4 --out " + quote((tmp / "run").string()));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_TRUE(fs::exists(tmp / "run" / "hidden_projection.pt"));
  const std::string metrics = testing::slurp(tmp / "run" / "metrics.jsonl");
  EXPECT_NE(metrics.find("\"hidden\""), std::string::npos) << metrics;
  auto more = run_lineage("distill --resume " + quote((tmp / "run").string()) + " --steps 6");
  ASSERT_EQ(more.exit_code, 0) << more.err;
  auto recipe = nlohmann::json::parse(testing::slurp(tmp / "run" / "recipe.json"));
  EXPECT_EQ(recipe["hidden-loss"], "cosine");
  auto provenance = nlohmann::json::parse(testing::slurp(tmp / "run" / "lineage.json"));
  EXPECT_EQ(provenance["steps_done"], 6);
  // The chunked logit loss (the teacher's blocks seen through its hidden states), and none at all
  // (alpha 0: the teacher's blocks run for the hidden term alone).
  for (std::string extra : {" --kd-chunk-rows 16", " --alpha 0"}) {
    auto r = run_lineage(common + extra + " --steps 2 --out " + quote((tmp / ("run" + std::to_string(extra.size()))).string()));
    EXPECT_EQ(r.exit_code, 0) << extra << ": " << r.err;
    EXPECT_NE(testing::slurp(tmp / ("run" + std::to_string(extra.size())) / "metrics.jsonl").find("\"hidden\""),
              std::string::npos)
        << extra;
  }
  auto other = run_lineage(common + " --steps 2 --mode seq_kd --out " + quote((tmp / "seq").string()));
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("--hidden-loss is for --mode online"), std::string::npos) << other.err;
}

}  // namespace
}  // namespace lineage
