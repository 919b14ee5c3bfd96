// The embedded default teacher (models/lineage-kjv-5m.gguf) on its own data, the King James Bible
// from Debian's bible-kjv: with the same student, steps and tokens, distillation beats
// cross-entropy alone, and the offline top-20 cache (with its tail draws) matches the online
// full-logit path. A shortened version of what the README's first command runs.
// At 80 steps the seed alone moves perplexity by ~10% (97.9 to 109.0 measured), and the offline-
// online difference of one seed by -3.6% to +4.2%, so each figure is a mean over two seeds and
// the bound is 5%: over three seeds the means differ by +0.6% (numbers in issue 3's closing note).
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(EmbeddedTeacher, DistillationBeatsCrossEntropyAndTheCacheMatchesOnline) {
  LINEAGE_REQUIRE_EMBEDDED_TEACHER_AND_KJV();
  TempDir tmp;
  std::string kjv = (tmp / "kjv.txt").string();
  ASSERT_TRUE(testing::write_kjv(kjv));
  const std::string data = " --data " + quote(kjv) + " --max-examples 300 --seq-len 256 ";
  const std::string student = " --dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288 --steps 80 --batch-size 8"
                              " --lr 3e-3 --min-lr 3e-4 --warmup 10 --eval-every 0 --eval-rows 32 --checkpoint-every 0 ";
  const std::string teacher = " --teacher " + quote(testing::embedded_teacher().string());
  auto run = [&](const std::string& name, const std::string& extra) {
    double sum = 0;
    for (int seed : {1, 2}) {
      std::string dir = name + std::to_string(seed);
      auto r = run_lineage("distill" + teacher + data + student + "--out " + quote((tmp / dir).string()) + " --seed " +
                           std::to_string(seed) + " " + extra);
      EXPECT_EQ(r.exit_code, 0) << dir << "\n" << r.err;
      double ppl = testing::student_perplexity(tmp / dir);
      std::printf("  %-8s seed %d: validation perplexity %.3f\n", name.c_str(), seed, ppl);
      sum += ppl;
    }
    return sum / 2;
  };
  double kd = run("kd", "--mode online --loss forward_kl --alpha 1");
  double ce = run("ce", "--alpha 0");
  auto cache = run_lineage("cache" + teacher + data + "--top-k 20 --out " + quote((tmp / "cache").string()));
  ASSERT_EQ(cache.exit_code, 0) << cache.err;
  double offline = run("offline", "--mode offline --cache " + quote((tmp / "cache").string()) + " --loss forward_kl --alpha 1");
  std::printf("mean validation perplexity after 80 steps: KD online %.3f, CE only %.3f, KD offline top-20 %.3f\n", kd, ce,
              offline);
  EXPECT_LT(kd, ce);
  EXPECT_LT(std::abs(offline - kd) / kd, 0.05);
}

}  // namespace
}  // namespace lineage
