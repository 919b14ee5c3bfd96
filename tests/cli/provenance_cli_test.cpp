// `lineage provenance` against an API nobody here wrote: llama.cpp's llama-server serves the
// embedded teacher (Lineage's own GGUF export), and the black-box test, asking it over
// /v1/completions, attributes it to the teacher's file and not to an unrelated model; the JSON
// carries the table. Bad flags fail naming the flag.
#include <nlohmann/json.hpp>

#include "llama_cpp.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

TEST(ProvenanceCli, ATeacherServedByLlamaCppIsAttributedToItsOwnFile) {
  const fs::path server = testing::shared_dir() / "tools" / "llama.cpp" / "bin" / "llama-server";
  if (!fs::exists(server)) GTEST_SKIP() << "../shared/tools/llama.cpp is missing: llama.cpp's server is the API under test";
  if (!fs::exists(testing::embedded_teacher())) GTEST_SKIP() << "models/lineage-kjv-5m.gguf is missing";
  TempDir tmp;
  const std::string teacher = testing::embedded_teacher().string();
  testing::write_tiny_teacher(tmp / "unrelated.gguf", 7, 32, 2, 0.5);
  testing::write_tiny_teacher(tmp / "control.gguf", 8, 32, 2, 0.5);
  testing::spit(tmp / "text.txt", testing::tiny_corpus(300));
  testing::LlamaServer llama(server, teacher, tmp / "llama.log");
  ASSERT_GT(llama.port, 0) << testing::slurp(tmp / "llama.log");
  const std::string url = "http://127.0.0.1:" + std::to_string(llama.port) + "/v1";
  auto r = run_lineage("provenance -q --suspect " + url + " --tokenizer " + quote(teacher) + " --candidate " + quote(teacher) +
                       " --candidate " + quote((tmp / "unrelated.gguf").string()) + " --reference " +
                       quote((tmp / "control.gguf").string()) + " --text " + quote((tmp / "text.txt").string()) +
                       " --queries 60 --prompt-tokens 8 --gen-tokens 16 --outputs-decide --json " + quote((tmp / "v.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto v = nlohmann::json::parse(testing::slurp(tmp / "v.json"));
  EXPECT_EQ(v["verdict"], "lineage-kjv-5m.gguf") << r.out;
  for (const auto& row : v["rows"])
    if (row["candidate"] == "lineage-kjv-5m.gguf" && row["method"] == "blackbox") {
      EXPECT_GT(row["value"].get<double>(), 0.6) << r.out;  // llama.cpp's greedy text and ours, token by token
      EXPECT_LT(row["p_value"].get<double>(), 1e-6) << r.out;
      EXPECT_EQ(row["queries_or_tokens"].get<int64_t>(), 60);
    }
  EXPECT_NE(r.out.find("verdict: derived from lineage-kjv-5m.gguf"), std::string::npos) << r.out;

  auto bad = run_lineage("provenance --suspect " + quote(teacher) + " --candidate " + quote(teacher) + " --text " +
                         quote((tmp / "text.txt").string()) + " --alpha 2");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--alpha 2"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace lineage
