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

}  // namespace
}  // namespace lineage
