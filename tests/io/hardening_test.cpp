// Untrusted files: the defects a black-box mutation campaign found (issue 19), each as a test that
// crashed, hung or ran out of memory before. A GGUF hyper-parameter is checked against limits and
// against the tensors in the file before it divides, bounds a loop or sizes an allocation; JSON
// nested 10^5 deep is refused by name instead of overflowing the stack.
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/json.h"
#include "lineage/io/gguf.h"
#include "lineage/io/model_file.h"
#include "lineage/io/safetensors.h"
#include "lineage/model/config.h"
#include "lineage/model/generate.h"
#include "lineage/teacher/cache.h"
#include "process.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage::io {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;

// A copy of the GGUF at `from` with key `key` set to `value` stored as `type` (added if absent).
void mutate_gguf(const std::string& from, const std::string& to, const std::string& key, GgufType type,
                 const nlohmann::json& value) {
  GgufFile g = GgufFile::read(from);
  GgufWriter w;
  bool seen = false;
  for (const auto& kv : g.kvs()) {
    if (kv.key == "general.alignment") continue;  // the writer sets its own
    if (kv.key == key) {
      w.add(key, type, value);
      seen = true;
    } else if (kv.type == GgufType::kArray) {
      w.add_array(kv.key, kv.array_type, kv.value);
    } else {
      w.add(kv.key, kv.type, kv.value);
    }
  }
  if (!seen) w.add(key, type, value);
  for (const auto& t : g.tensors()) w.add_tensor(t.name, g.load_tensor(t), GgmlType::kF32);
  w.write(to);
}


struct Mutation {
  std::string key;
  GgufType type;
  nlohmann::json value;
  std::string expect;  // in the error
};

TEST(HardenedGguf, CorruptHyperParametersFailNamedBeforeUse) {
  TempDir tmp;
  const std::string base = (tmp / "tiny.gguf").string();
  testing::write_tiny_teacher(base);
  const std::vector<Mutation> cases = {
      {"llama.attention.head_count", GgufType::kU32, 0, "n_heads must be positive, found 0"},      // was SIGFPE
      {"llama.attention.head_count_kv", GgufType::kU32, 0, "n_kv_heads must be positive"},
      {"llama.attention.head_count", GgufType::kU32, 3, "not divisible by n_heads 3"},
      {"llama.block_count", GgufType::kU32, 4294967295u, "n_layers is 4294967295, above the limit"},  // was a hang
      {"llama.block_count", GgufType::kI32, -1, "n_layers must be positive"},
      {"llama.block_count", GgufType::kI32, 2147483647, "above the limit"},
      {"llama.block_count", GgufType::kI64, 9223372036854775807LL, "above the limit"},
      {"llama.block_count", GgufType::kU32, 3, "block_count is 3, but the file holds tensors for 2 blocks"},
      {"llama.context_length", GgufType::kI64, 9223372036854775807LL, "max_seq_len is 9223372036854775807"},  // was OOM
      {"llama.context_length", GgufType::kI32, 2147483647, "above the limit"},
      {"llama.context_length", GgufType::kI32, -1, "max_seq_len must be positive"},
      {"llama.embedding_length", GgufType::kU32, 64, "embedding_length is 64, but token_embd.weight is 32 wide"},
      {"llama.feed_forward_length", GgufType::kU32, 1 << 30, "hidden_dim is 1073741824, above the limit"},
      {"llama.feed_forward_length", GgufType::kU32, 96, "feed_forward_length is 96, but blk.0.ffn_up.weight has 64 rows"},
      {"llama.attention.head_count_kv", GgufType::kU32, 4, "head_count_kv 4 with head_count 4 gives keys of 32 rows"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::string path = (tmp / ("m" + std::to_string(i) + ".gguf")).string();
    mutate_gguf(base, path, c.key, c.type, c.value);
    std::string err = testing::error_of([&] { read_model(path); });
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.key << " := " << c.value.dump() << ": " << err;
    EXPECT_NE(err.find(path), std::string::npos) << err;  // names the file
  }
  // The CLI reports it and exits 1 (not a signal, not a hang).
  mutate_gguf(base, (tmp / "zero-heads.gguf").string(), "llama.attention.head_count", GgufType::kU32, 0);
  testing::spit(tmp / "text.txt", testing::tiny_corpus(20));
  for (const std::string& verb : std::vector<std::string>{"info", "generate -p hi -n 2 -m",
                                                          "eval --no-cost --text " + quote((tmp / "text.txt").string()) + " -m"}) {
    auto r = run_lineage(verb + " " + quote((tmp / "zero-heads.gguf").string()));
    EXPECT_EQ(r.exit_code, 1) << verb << ": " << r.err;
    EXPECT_NE(r.err.find("n_heads must be positive"), std::string::npos) << verb << ": " << r.err;
  }
}

// A long context costs nothing until it is used: the rotary tables grow with the positions run.
TEST(HardenedGguf, AHugeContextLengthDoesNotAllocateUpFront) {
  TempDir tmp;
  const std::string base = (tmp / "tiny.gguf").string();
  testing::write_tiny_teacher(base);
  mutate_gguf(base, (tmp / "long.gguf").string(), "llama.context_length", GgufType::kU32, 1 << 24);
  ModelFile m = read_model((tmp / "long.gguf").string());
  EXPECT_EQ(m.config.max_seq_len, 1 << 24);
  const int64_t before = lineage::testing::resident_kb();
  auto net = make_model(m);
  model::GenerateOptions o;
  o.max_tokens = 8;
  o.sampling.temperature = 0;
  auto out = model::generate(net, {1, 72, 105}, o);
  EXPECT_FALSE(out.empty());
  // Tables for 2^24 positions would be ~1.5 GB in float64 while being built; a few positions cost KB.
  EXPECT_LT((lineage::testing::resident_kb() - before) / 1024, 64) << "MB grown";
  // And the same text as the model with its original context.
  auto orig = make_model(read_model(base));
  EXPECT_EQ(model::generate(orig, {1, 72, 105}, o), out);
}

// A safetensors file by hand: 8-byte header length, the JSON header, `data`.
void write_safetensors_raw(const std::string& path, const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string f(reinterpret_cast<const char*>(&n), 8);
  testing::spit(path, f + header + data);
}

// Found by fuzz_safetensors: a float as a size reached a float-to-integer conversion (UB); and what
// the reference implementation also refuses: products past the file, overlaps, gaps.
TEST(HardenedSafetensors, SizesAreIntegersAndTensorsTileTheData) {
  TempDir tmp;
  const std::string p = (tmp / "x.safetensors").string();
  const std::string data(16, '\0');
  struct Case {
    std::string header, expect;
  };
  const std::vector<Case> cases = {
      {R"({"a": {"dtype": "F32", "shape": [1.63e41], "data_offsets": [0, 16]}})", "shape holds 1.63e+41"},
      {R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.5]}})", "data_offsets holds 16.5"},
      {R"({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", "shape holds -4"},
      {R"({"a": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}})", "more elements than the file"},
      {R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
       "overlaps"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})", "a gap no tensor covers"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", "cover 8 bytes of the 16-byte"},
  };
  for (const auto& c : cases) {
    write_safetensors_raw(p, c.header, data);
    std::string err = testing::error_of([&] { read_safetensors(p); });
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.header << ": " << err;
  }
  write_safetensors_raw(p, R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})", data);
  EXPECT_EQ(read_safetensors(p).tensors.at("a").numel(), 4);
}

// Found by fuzz_json_files: a float past int64 in config.json reached a float-to-integer conversion.
TEST(HardenedJson, IntegersFromJsonAreCheckedBeforeConversion) {
  EXPECT_EQ(json_int(nlohmann::json(7)), 7);
  EXPECT_EQ(json_int(nlohmann::json(7.0)), 7);
  EXPECT_FALSE(json_int(nlohmann::json(7.5)));
  EXPECT_FALSE(json_int(nlohmann::json(4.06667e33)));
  EXPECT_FALSE(json_int(nlohmann::json(18446744073709551615ULL)));
  EXPECT_FALSE(json_int(nlohmann::json("7")));
  auto cfg = nlohmann::json::parse(R"({"vocab_size": 4.06667e33, "dim": 8, "hidden_dim": 16, "n_layers": 1,
                                       "n_heads": 2, "max_seq_len": 8})");
  std::string err = testing::error_of([&] { model::config_from_json(cfg, "config.json"); });
  EXPECT_NE(err.find("'vocab_size' is 4.06667e+33, expected an integer"), std::string::npos) << err;
}

// Every reader of a JSON integer from outside goes through json_int: a float past int64 (or a
// fraction) is an error that names the field, never a float-to-integer conversion.
TEST(HardenedJson, HugeNumbersFailNamedInEveryReader) {
  TempDir tmp;
  // HF config.json
  std::filesystem::create_directories(tmp / "hf");
  testing::spit(tmp / "hf" / "config.json", R"({"model_type": "llama", "hidden_size": 1e40, "intermediate_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 300})");
  std::string err = testing::error_of([&] { read_model((tmp / "hf").string()); });
  EXPECT_NE(err.find("'hidden_size': expected an integer, found 1e+40"), std::string::npos) << err;
  testing::spit(tmp / "hf" / "config.json", R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 0, "head_dim": 32, "vocab_size": 300})");
  err = testing::error_of([&] { read_model((tmp / "hf").string()); });  // was a division by zero
  EXPECT_NE(err.find("num_attention_heads is 0"), std::string::npos) << err;
  // GGUF: a token id stored as a float
  const std::string base = (tmp / "tiny.gguf").string();
  testing::write_tiny_teacher(base);
  mutate_gguf(base, (tmp / "bos.gguf").string(), "tokenizer.ggml.bos_token_id", GgufType::kF32, 1e30);
  err = testing::error_of([&] { read_model((tmp / "bos.gguf").string()); });
  EXPECT_NE(err.find("tokenizer.ggml.bos_token_id: expected an integer"), std::string::npos) << err;
  // ... but llama.cpp's "no such token", uint32 0xFFFFFFFF, is -1 (its converters write it).
  mutate_gguf(base, (tmp / "pad.gguf").string(), "tokenizer.ggml.padding_token_id", GgufType::kU32, 4294967295u);
  EXPECT_EQ(read_gguf_vocab((tmp / "pad.gguf").string()).pad_id, -1);
  // A teacher cache manifest
  std::filesystem::create_directories(tmp / "cache");
  testing::spit(tmp / "cache" / "cache.json", R"({"format": "lineage-teacher-cache", "k": 1e40, "vocab_size": 300,
      "seq_len": 16, "splits": {}})");
  err = testing::error_of([&] { teacher::TeacherCache c(tmp / "cache"); });
  EXPECT_NE(err.find("'k': expected an integer in [1, 65536], found 1e+40"), std::string::npos) << err;
  // A recipe, through the CLI
  testing::spit(tmp / "recipe.json", R"({"steps": 1e40})");
  auto r = run_lineage("distill --recipe " + quote((tmp / "recipe.json").string()) + " --out " + quote((tmp / "run").string()));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("recipe option 'steps': expected an integer"), std::string::npos) << r.err;
  EXPECT_THROW(need_json_int(nlohmann::json(2.5), "x"), Error);
  EXPECT_EQ(need_json_int(nlohmann::json(3.0), "x", 0, 3), 3);
  EXPECT_THROW(need_json_int(nlohmann::json(4), "x", 0, 3), Error);
}

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(HardenedJson, DeepNestingIsRefusedByName) {
  EXPECT_EQ(json_depth("{\"a\": [1, {\"b\": \"[[[[\"}]}"), 3);  // brackets in strings do not count
  EXPECT_EQ(json_depth(nested(1000000)), kMaxJsonDepth + 1);     // stops counting past the limit
  std::string err = testing::error_of([] { parse_json(nested(100000), "x.json"); });
  EXPECT_NE(err.find("'x.json' nests JSON deeper than 128 levels"), std::string::npos) << err;
  EXPECT_TRUE(parse_json_or_discarded(nested(100000)).is_discarded());
  EXPECT_EQ(parse_json(nested(100), "ok.json").dump().size(), 200u);
}

// Before: SIGSEGV (stack overflow) in distill --recipe and verify; now exit 1 with the file named.
TEST(HardenedJson, DeeplyNestedFilesGiveCleanErrorsInTheCli) {
  TempDir tmp;
  const std::string deep = "{\"steps\": " + nested(200000) + "}";
  testing::spit(tmp / "recipe.json", deep);
  auto r = run_lineage("distill --recipe " + quote((tmp / "recipe.json").string()) + " --out " + quote((tmp / "run").string()));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("nests JSON deeper"), std::string::npos) << r.err;
  std::filesystem::create_directories(tmp / "signed");
  testing::spit(tmp / "signed" / "lineage.sig.json", deep);
  auto v = run_lineage("verify " + quote((tmp / "signed").string()));
  EXPECT_EQ(v.exit_code, 1) << v.err;
  EXPECT_NE(v.err.find("nests JSON deeper"), std::string::npos) << v.err;
  std::filesystem::create_directories(tmp / "tok");
  testing::spit(tmp / "tok" / "tokenizer.json", deep);
  auto t = run_lineage("tokenize -m " + quote((tmp / "tok").string()) + " -p hi");
  EXPECT_EQ(t.exit_code, 1) << t.err;
  EXPECT_NE(t.err.find("nests JSON deeper"), std::string::npos) << t.err;
  testing::spit(tmp / "data.jsonl", "{\"text\": " + nested(200000) + "}\n");
  auto d = run_lineage("train --data " + quote((tmp / "data.jsonl").string()) + " --out " + quote((tmp / "t").string()) +
                       " --steps 1");
  EXPECT_EQ(d.exit_code, 1) << d.err;
  EXPECT_NE(d.err.find("nests JSON deeper"), std::string::npos) << d.err;
}

}  // namespace
}  // namespace lineage::io
