// The lineage binary as a user runs it: greedy text equal to llama2.c's run.c, conversions that
// generate the same text, and bad inputs that end in one clear line and a non-zero exit.
#include <map>
#include <vector>
#include <nlohmann/json.hpp>

#include "lineage/core/threads.h"
#include "test_util.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

std::string stories_args() {
  auto d = testing::stories_dir();
  return "--model " + quote((d / "stories260K.bin").string()) + " --tokenizer " + quote((d / "tok512.bin").string());
}

// libgomp's idle threads must not spin long against OpenBLAS's, nor sleep between the decoder's
// small parallel regions (lineage/core/threads.h): `lineage` re-executes itself with
// GOMP_SPINCOUNT=10000, and a user's own choice wins. libgomp prints its settings at load with
// OMP_DISPLAY_ENV=verbose; the last print is the process that runs.
TEST(Threads, OpenMpSpinsBrieflyUnlessTheUserChose) {
  auto last_value = [](const std::string& err, const std::string& key) {
    auto at = err.rfind(key);
    if (at == std::string::npos) return std::string("none");
    at += key.size();
    return err.substr(at, err.find('\'', at) - at);
  };
  const std::vector<const char*> names = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_DISPLAY_ENV"};
  std::map<std::string, std::string> saved;
  for (const char* name : names)
    if (const char* v = std::getenv(name)) saved[name] = v;
  ::setenv("OMP_DISPLAY_ENV", "verbose", 1);
  ::unsetenv("OMP_WAIT_POLICY");
  ::unsetenv("GOMP_SPINCOUNT");
  auto res = run_lineage("--version");
  EXPECT_EQ(res.exit_code, 0);
  EXPECT_NE(res.out.find("lineage "), std::string::npos);
  EXPECT_EQ(last_value(res.err, "GOMP_SPINCOUNT = '"), kGompSpinCount) << res.err;
  ::setenv("OMP_WAIT_POLICY", "ACTIVE", 1);
  res = run_lineage("--version");
  EXPECT_EQ(last_value(res.err, "OMP_WAIT_POLICY = '"), "ACTIVE") << res.err;
  EXPECT_NE(last_value(res.err, "GOMP_SPINCOUNT = '"), kGompSpinCount) << res.err;
  ::unsetenv("OMP_WAIT_POLICY");
  ::setenv("GOMP_SPINCOUNT", "5", 1);
  res = run_lineage("--version");
  EXPECT_EQ(last_value(res.err, "GOMP_SPINCOUNT = '"), "5") << res.err;
  for (const char* name : names) {
    if (saved.count(name)) ::setenv(name, saved[name].c_str(), 1);
    else ::unsetenv(name);
  }
}

TEST(Generate, GreedyTextEqualsLlama2cRunForEveryPrompt) {
  LINEAGE_REQUIRE_SHARED();
  auto refs = testing::load_llama2c_reference();
  ASSERT_GE(refs.size(), 7u);
  for (const auto& r : refs) {
    // run.c's -n counts positions from BOS; it prints the prompt then steps - ids + 1 new tokens.
    int new_tokens = r.steps - static_cast<int>(r.ids.size()) + 1;
    auto res = run_lineage("generate " + stories_args() + " --temperature 0 -q --max-tokens " +
                           std::to_string(new_tokens) + " --prompt " + quote(r.prompt));
    ASSERT_EQ(res.exit_code, 0) << res.err;
    EXPECT_EQ(res.out, r.text + "\n") << "prompt: " << r.prompt;
  }
}

TEST(Generate, ConvertedModelsWriteTheSameText) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  auto d = testing::stories_dir();
  auto src = quote((d / "stories260K.bin").string());
  ASSERT_EQ(run_lineage("convert " + src + " " + quote((tmp / "s.gguf").string())).exit_code, 0);
  ASSERT_EQ(run_lineage("convert " + src + " " + quote((tmp / "hf").string())).exit_code, 0);
  auto ref = run_lineage("generate " + stories_args() + " -t 0 -q -n 60 -p 'The cat'");
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  for (std::string m : {"s.gguf", "hf"}) {
    auto res = run_lineage("generate --model " + quote((tmp / m).string()) + " -t 0 -q -n 60 -p 'The cat'");
    ASSERT_EQ(res.exit_code, 0) << res.err;
    EXPECT_EQ(res.out, ref.out) << m;
  }
}

TEST(Generate, SeededSamplingRepeats) {
  LINEAGE_REQUIRE_SHARED();
  auto a = run_lineage("generate " + stories_args() + " -q -n 40 --seed 5 --temperature 1.0 -p 'Once'");
  auto b = run_lineage("generate " + stories_args() + " -q -n 40 --seed 5 --temperature 1.0 -p 'Once'");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

// At the context length generation stops and says so; --context-shift slides on, as llama.cpp.
TEST(Generate, TheContextLengthIsSaidOrSlidPast) {
  LINEAGE_REQUIRE_SHARED();
  auto info = run_lineage("info --json " + quote((testing::stories_dir() / "stories260K.bin").string()));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const int ctx = nlohmann::json::parse(info.out)["config"]["max_seq_len"];
  const std::string asked = std::to_string(ctx + 100);
  auto cut = run_lineage("generate " + stories_args() + " -t 0 --ignore-eos -n " + asked + " -p 'Once upon a time'");
  ASSERT_EQ(cut.exit_code, 0) << cut.err;
  EXPECT_NE(cut.err.find("stopped at the model's context length (" + std::to_string(ctx) + " positions)"), std::string::npos)
      << cut.err;
  auto slid = run_lineage("generate " + stories_args() + " -t 0 --ignore-eos --context-shift -n " + asked +
                          " -p 'Once upon a time'");
  ASSERT_EQ(slid.exit_code, 0) << slid.err;
  EXPECT_EQ(slid.err.find("stopped at"), std::string::npos) << slid.err;
  EXPECT_NE(slid.err.find("+ " + asked + " generated tokens"), std::string::npos) << slid.err;
  // Up to the context the two are the same text.
  ASSERT_GT(slid.out.size(), cut.out.size());
  EXPECT_EQ(slid.out.substr(0, cut.out.size() - 1), cut.out.substr(0, cut.out.size() - 1));
  auto short_run = run_lineage("generate " + stories_args() + " -t 0 -n 10 -p 'Once upon a time'");
  EXPECT_EQ(short_run.err.find("stopped at"), std::string::npos) << short_run.err;
}

TEST(Info, ReportsTheModel) {
  LINEAGE_REQUIRE_SHARED();
  auto res = run_lineage("info --json " + quote((testing::stories_dir() / "stories260K.bin").string()));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto j = nlohmann::json::parse(res.out);
  EXPECT_EQ(j["parameters"], 260032);
  EXPECT_EQ(j["format"], "llama2.c checkpoint");
  EXPECT_EQ(j["dtype"], "F32");
  EXPECT_EQ(j["file_bytes"], 1056540);
  EXPECT_EQ(j["config"]["n_kv_heads"], 4);
  EXPECT_NE(j["tokenizer"].get<std::string>().find("512 tokens"), std::string::npos);
}

// Each bad input: exit code 1, exactly one line on stderr, naming the file and what was expected.
void expect_one_clear_line(const testing::CliResult& r, const std::vector<std::string>& needles) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("lineage: ", 0), 0u) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

TEST(Errors, TruncatedFile) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  std::string data = testing::slurp(testing::stories_dir() / "stories260K.bin");
  testing::spit(tmp / "cut.bin", data.substr(0, 1000));
  expect_one_clear_line(run_lineage("info " + quote((tmp / "cut.bin").string())), {"cut.bin", "truncated"});
  ASSERT_EQ(run_lineage("convert " + quote((testing::stories_dir() / "stories260K.bin").string()) + " " +
                        quote((tmp / "s.gguf").string())).exit_code, 0);
  std::string g = testing::slurp(tmp / "s.gguf");
  testing::spit(tmp / "cut.gguf", g.substr(0, g.size() - 5000));
  expect_one_clear_line(run_lineage("info " + quote((tmp / "cut.gguf").string())), {"cut.gguf", "truncated", "ends past"});
}

TEST(Errors, WrongMagic) {
  TempDir tmp;
  testing::spit(tmp / "m.gguf", "GGJT\x03\x00\x00\x00 and more bytes");
  expect_one_clear_line(run_lineage("info " + quote((tmp / "m.gguf").string())), {"m.gguf", "expected 'GGUF'"});
  testing::spit(tmp / "m.bin", "ak42\x01\x00\x00\x00");
  expect_one_clear_line(run_lineage("info " + quote((tmp / "m.bin").string())), {"m.bin", "ak42"});
  testing::spit(tmp / "weird", "not a model at all");
  expect_one_clear_line(run_lineage("info " + quote((tmp / "weird").string())), {"weird", "expected a Hugging Face folder"});
}

TEST(Errors, WrongShape) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  // A llama2.c header that claims 6 layers for a 5-layer file: sizes disagree.
  std::string data = testing::slurp(testing::stories_dir() / "stories260K.bin");
  data[8] = 6;
  testing::spit(tmp / "six.bin", data);
  expect_one_clear_line(run_lineage("info " + quote((tmp / "six.bin").string())), {"six.bin", "n_layers=6", "bytes"});
}

TEST(Errors, UnknownDtype) {
  TempDir tmp;
  fs::create_directories(tmp / "hf");
  testing::spit(tmp / "hf" / "config.json",
                R"({"model_type": "llama", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "vocab_size": 4})");
  std::string header = R"({"model.norm.weight": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  uint64_t n = header.size();
  testing::spit(tmp / "hf" / "model.safetensors",
                std::string(reinterpret_cast<char*>(&n), 8) + header + std::string(8, '\0'));
  expect_one_clear_line(run_lineage("info " + quote((tmp / "hf").string())),
                        {"model.safetensors", "'F8_E4M3'", "expected one of F32"});
}

TEST(Errors, MissingTokenizer) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  fs::copy_file(testing::stories_dir() / "stories260K.bin", tmp / "alone.bin");
  expect_one_clear_line(run_lineage("generate --model " + quote((tmp / "alone.bin").string()) + " -p hi"),
                        {"no tokenizer for", "alone.bin", "--tokenizer"});
  expect_one_clear_line(run_lineage("generate --model " + quote((tmp / "alone.bin").string()) +
                                    " --tokenizer " + quote((tmp / "nope.json").string()) + " -p hi"),
                        {"nope.json", "does not exist"});
}

TEST(Errors, UnsupportedArchitecture) {
  TempDir tmp;
  fs::create_directories(tmp / "neox");
  testing::spit(tmp / "neox" / "config.json", R"({"model_type": "gpt_neox"})");
  expect_one_clear_line(run_lineage("info " + quote((tmp / "neox").string())),
                        {"config.json", "'gpt_neox'", "expected llama, mistral or qwen2"});
}

TEST(Errors, BadFlags) {
  LINEAGE_REQUIRE_SHARED();
  expect_one_clear_line(run_lineage("generate " + stories_args() + " -p hi --top-p 1.5"), {"top-p", "(0, 1]"});
  expect_one_clear_line(run_lineage("generate " + stories_args() + " -p hi --dtype f8"), {"--dtype", "expected f32"});
}

}  // namespace
}  // namespace lineage
