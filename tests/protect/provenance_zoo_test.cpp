// The reduced provenance zoo, as a user runs it (scripts/provenance_zoo.sh --small): students of
// the embedded teacher distilled online and initialised from its layers, an independent model
// trained on the same text with another seed, a second teacher and a reference, all built here;
// `lineage provenance` must attribute the layer-initialised student to the embedded teacher by its
// weights at p < 1e-6, never attribute the online student to the other teacher, and the independent
// model to nobody. The full zoo's figures are
// in the README (Protection) and were measured with the same script without --small.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace lineage {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

TEST(ProvenanceZoo, TheLayerInitialisedStudentIsTracedAndNoModelIsMisattributed) {
  if (!fs::exists(testing::embedded_teacher())) GTEST_SKIP() << "models/lineage-kjv-5m.gguf is missing";
  TempDir tmp;
  const fs::path zoo = tmp / "zoo";
  const std::string cmd = std::string("LINEAGE_BIN='") + LINEAGE_BINARY + "' bash '" + LINEAGE_SOURCE_DIR +
                          "/scripts/provenance_zoo.sh' --small '" + zoo.string() + "' >'" + (tmp / "out").string() +
                          "' 2>'" + (tmp / "err").string() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::slurp(tmp / "err");
  std::map<std::string, nlohmann::json> by_suspect;
  std::ifstream in(zoo / "results.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    by_suspect[j["suspect"].get<std::string>()] = j;
  }
  const std::string table = testing::slurp(tmp / "out");
  ASSERT_EQ(by_suspect.size(), 3u) << table;
  EXPECT_EQ(by_suspect["s_init"]["verdict"], "lineage-kjv-5m.gguf") << table;
  EXPECT_LT(by_suspect["s_init"]["weights:lineage-kjv-5m.gguf"].get<double>(), -6) << table;
  // The online student of the reduced zoo is undertrained (150 steps): it may be attributed to its
  // teacher or to nobody, never to the other teacher.
  EXPECT_NE(by_suspect["s_online"]["verdict"], "t2.gguf") << table;
  EXPECT_TRUE(by_suspect["i_seed_a"]["verdict"].is_null()) << table;
}

}  // namespace
}  // namespace lineage
