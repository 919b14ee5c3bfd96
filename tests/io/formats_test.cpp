// io: every format round-trips a model to the same logits, readers reject bad files with one
// clear message, and the real stories260K converts llama2.c -> HF -> GGUF -> back within 1e-5.
#include <fstream>

#include "lineage/core/error.h"
#include "lineage/io/gguf.h"
#include "lineage/io/model_file.h"
#include "lineage/io/safetensors.h"
#include "lineage/io/weight_names.h"
#include "test_util.h"

namespace lineage::io {
namespace {

using testing::error_of;
using testing::TempDir;
namespace fs = std::filesystem;

model::ModelConfig tiny(bool tied, bool bias, int64_t kv = 2) {
  model::ModelConfig c;
  c.arch = bias ? "qwen2" : "llama";
  c.vocab_size = 40;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv;
  c.max_seq_len = 64;
  c.tie_embeddings = tied;
  c.qkv_bias = bias;
  c.rope_theta = bias ? 1e6 : 10000.0;
  return c;
}

ModelFile random_model(const model::ModelConfig& c, uint64_t seed = 3) {
  torch::manual_seed(seed);
  model::Llama net(c);
  ModelFile m;
  m.config = c;
  m.path = "random";
  m.name = "tiny";
  for (auto& [name, t] : net->weights()) m.weights[name] = torch::randn(t.sizes()) * 0.3;
  return m;
}

torch::Tensor logits_of(const ModelFile& m, const std::vector<int64_t>& ids) {
  auto net = make_model(m);
  torch::NoGradGuard g;
  return net->forward(torch::tensor(ids, torch::kLong).view({1, -1}));
}

const std::vector<int64_t> kIds{1, 5, 9, 2, 33, 17, 8, 8, 21, 39};

TEST(WeightNames, TableTranslatesEveryWeightBothWays) {
  for (bool bias : {false, true}) {
    auto c = tiny(false, bias);
    for (const auto& [own, shape] : model::expected_shapes(c))
      for (Naming n : {Naming::kHf, Naming::kGguf}) {
        auto other = rename_weight(own, Naming::kOwn, n);
        ASSERT_TRUE(other) << own;
        EXPECT_EQ(rename_weight(*other, n, Naming::kOwn), own);
      }
  }
  EXPECT_EQ(rename_weight("blk.12.attn_q.weight", Naming::kGguf, Naming::kHf), "model.layers.12.self_attn.q_proj.weight");
  EXPECT_FALSE(rename_weight("blk.x.attn_q.weight", Naming::kGguf, Naming::kOwn));
}

TEST(WeightNames, RopePermutationsAreInverse) {
  auto w = torch::randn({8 * 6, 5});
  EXPECT_TRUE(torch::equal(rope_half_to_interleaved(rope_interleaved_to_half(w, 8), 8), w));
  // Interleaved pair (0, 1) of head 0 becomes rows (0, head_dim/2).
  auto h = rope_interleaved_to_half(w, 8);
  EXPECT_TRUE(torch::equal(h[0], w[0]));
  EXPECT_TRUE(torch::equal(h[3], w[1]));
}

TEST(Safetensors, RoundTripsEachDtype) {
  TempDir tmp;
  std::map<std::string, torch::Tensor> t{{"a", torch::randn({3, 5})}, {"b", torch::randn({7})}};
  for (auto dt : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
    auto path = (tmp / "x.safetensors").string();
    write_safetensors(path, t, {{"k", "v"}}, dt);
    auto back = read_safetensors(path);
    EXPECT_EQ(back.metadata.at("k"), "v");
    for (const auto& [name, x] : t)
      EXPECT_TRUE(torch::equal(back.tensors.at(name), x.to(dt).to(torch::kFloat32))) << name;
  }
}

TEST(Safetensors, BadFilesFailClearly) {
  TempDir tmp;
  auto path = (tmp / "x.safetensors").string();
  write_safetensors(path, {{"w", torch::ones({4, 4})}}, {}, torch::kFloat32);
  std::string good = testing::slurp(path);
  testing::spit(path, good.substr(0, good.size() - 10));
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("data_offsets"), std::string::npos);
  std::string bad_dtype = good;
  bad_dtype.replace(bad_dtype.find("\"F32\""), 5, "\"Q4K\"");
  testing::spit(path, bad_dtype);
  auto msg = error_of([&] { read_safetensors(path); });
  EXPECT_NE(msg.find("'Q4K'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected one of F32"), std::string::npos) << msg;
  testing::spit(path, std::string("\xff\xff\xff\x00\x00\x00\x00\x00{}", 10));
  EXPECT_NE(error_of([&] { read_safetensors(path); }).find("header length"), std::string::npos);
}

TEST(Gguf, KeyValuesAndTensorsRoundTrip) {
  TempDir tmp;
  GgufWriter w;
  w.add("general.architecture", GgufType::kString, "llama");
  w.add("x.u32", GgufType::kU32, 7);
  w.add("x.f32", GgufType::kF32, 0.5);
  w.add("x.bool", GgufType::kBool, true);
  w.add_array("x.strings", GgufType::kString, std::vector<std::string>{"a", "", "ccc"});
  w.add_array("x.i32", GgufType::kI32, std::vector<int32_t>{-1, 2});
  auto a = torch::randn({3, 64}), b = torch::randn({5});
  w.add_tensor("a", a, GgmlType::kF16);
  w.add_tensor("b", b, GgmlType::kF32);
  auto path = (tmp / "t.gguf").string();
  w.write(path);
  auto g = GgufFile::read(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("x.u32"), 7);
  EXPECT_EQ(g.get_float("x.f32"), 0.5);
  EXPECT_EQ(g.find("x.strings")->value, nlohmann::json({"a", "", "ccc"}));
  EXPECT_EQ(g.find("x.i32")->value, nlohmann::json({-1, 2}));
  ASSERT_EQ(g.tensors().size(), 2u);
  EXPECT_EQ(g.tensors()[0].ne, (std::vector<uint64_t>{64, 3}));  // fastest-varying first
  EXPECT_EQ(g.tensors()[1].offset % 32, 0u);
  EXPECT_TRUE(torch::equal(g.load_tensor(g.tensors()[0]), a.to(torch::kFloat16).to(torch::kFloat32)));
  EXPECT_TRUE(torch::equal(g.load_tensor(g.tensors()[1]), b));
}

// Writes a GGUF with one Q8_0 tensor by hand: blocks of an f16 scale then 32 int8.
TEST(Gguf, ReadsQ8_0) {
  TempDir tmp;
  std::string f = "GGUF";
  auto put32 = [&](uint32_t v) { f.append(reinterpret_cast<char*>(&v), 4); };
  auto put64 = [&](uint64_t v) { f.append(reinterpret_cast<char*>(&v), 8); };
  put32(3);
  put64(1);
  put64(0);
  put64(1);
  f += "q";
  put32(2);
  put64(32);
  put64(2);
  put32(8);
  put64(0);
  while (f.size() % 32) f += '\0';
  std::vector<float> expected;
  for (int blk = 0; blk < 2; ++blk) {
    auto d = torch::tensor({0.25f * (blk + 1)}).to(torch::kFloat16);
    f.append(reinterpret_cast<const char*>(d.data_ptr()), 2);
    for (int i = 0; i < 32; ++i) {
      int8_t q = static_cast<int8_t>(i - 16 + blk);
      f += static_cast<char>(q);
      expected.push_back(q * 0.25f * (blk + 1));
    }
  }
  testing::spit(tmp / "q.gguf", f);
  auto g = GgufFile::read((tmp / "q.gguf").string());
  auto t = g.load_tensor(g.tensors()[0]);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_TRUE(torch::equal(t.flatten(), torch::tensor(expected)));
}

TEST(Gguf, BadFilesFailClearly) {
  TempDir tmp;
  auto path = (tmp / "m.gguf").string();
  testing::spit(path, "GGML\x03\x00\x00\x00");
  auto msg = error_of([&] { GgufFile::read(path); });
  EXPECT_NE(msg.find("magic is 'GGML', expected 'GGUF'"), std::string::npos) << msg;
  testing::spit(path, std::string("\0\0\x01G\x03\x00\x00\x00", 8));
  msg = error_of([&] { GgufFile::read(path); });
  EXPECT_NE(msg.find("magic is '\\x00\\x00\\x01G'"), std::string::npos) << msg;
  testing::spit(path, std::string("GGUF\x03\x00\x00\x00\x01\x00", 10));
  msg = error_of([&] { GgufFile::read(path); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  testing::spit(path, std::string("GGUF\x09\x00\x00\x00", 8) + std::string(16, '\0'));
  EXPECT_NE(error_of([&] { GgufFile::read(path); }).find("version 9"), std::string::npos);
}

class ModelRoundTrip : public ::testing::TestWithParam<std::tuple<bool, bool, std::string>> {};

TEST_P(ModelRoundTrip, SameLogits) {
  auto [tied, bias, ext] = GetParam();
  if (ext == ".bin" && bias) GTEST_SKIP() << "llama2.c has no QKV bias";
  TempDir tmp;
  auto m = random_model(tiny(tied, bias));
  if (ext == ".bin") m.config.rope_theta = 10000.0;
  auto out = (tmp / ("model" + ext)).string();
  write_model(m, out);
  auto back = read_model(out);
  EXPECT_EQ(back.config.tie_embeddings, tied);
  EXPECT_EQ(back.config.qkv_bias, bias);
  EXPECT_EQ(back.config.rope_theta, m.config.rope_theta);
  EXPECT_LT((logits_of(back, kIds) - logits_of(m, kIds)).abs().max().item<float>(), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Formats, ModelRoundTrip,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(),
                                            ::testing::Values(std::string(""), std::string(".gguf"),
                                                              std::string(".bin"))));

TEST(ModelFiles, Float16ExportsStayClose) {
  TempDir tmp;
  auto m = random_model(tiny(false, false));
  write_model(m, (tmp / "h.gguf").string(), {torch::kFloat16});
  write_model(m, (tmp / "hf16").string(), {torch::kFloat16});
  auto ref = logits_of(m, kIds);
  for (std::string p : {"h.gguf", "hf16"}) {
    auto back = read_model((tmp / p).string());
    EXPECT_EQ(back.stored_dtype, p == "h.gguf" ? "mixed" : "F16");
    EXPECT_LT((logits_of(back, kIds) - ref).abs().max().item<float>(), 2e-2) << p;
  }
}

TEST(ModelFiles, Stories260KConvertsThroughEveryFormatWithin1e5) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  auto orig = read_model((testing::stories_dir() / "stories260K.bin").string());
  ASSERT_TRUE(orig.tokenizer) << "tok512.bin beside the checkpoint is found";
  EXPECT_EQ(orig.config.num_parameters(), 260032);
  std::vector<int64_t> ids;
  for (int32_t id : orig.tokenizer->encode("Once upon a time, a little fox found a shiny stone.", true)) ids.push_back(id);
  auto ref = logits_of(orig, ids);

  write_model(orig, (tmp / "hf").string());
  auto hf = read_model((tmp / "hf").string());
  write_model(hf, (tmp / "m.gguf").string());
  auto gguf = read_model((tmp / "m.gguf").string());
  write_model(gguf, (tmp / "back" / "stories.bin").string());
  auto back = read_model((tmp / "back" / "stories.bin").string());
  for (const auto* m : {&hf, &gguf, &back}) {
    EXPECT_LT((logits_of(*m, ids) - ref).abs().max().item<float>(), 1e-5) << format_name(m->format);
    ASSERT_TRUE(m->tokenizer) << format_name(m->format);
    EXPECT_EQ(m->tokenizer->encode("Once upon a time, a fox", true), orig.tokenizer->encode("Once upon a time, a fox", true));
  }
  // The llama2.c file written back has the original's bytes for the header and every weight; the
  // trailing freq_cis tables (unused by run.c) may differ by an ulp of cos/sin between libms.
  std::string a = testing::slurp(tmp / "back" / "stories.bin");
  std::string b = testing::slurp(testing::stories_dir() / "stories260K.bin");
  ASSERT_EQ(a.size(), b.size());
  const size_t freq_bytes = 2 * 512 * 4 * sizeof(float);  // 2 tables of (seq_len 512, head_dim/2 4)
  EXPECT_TRUE(a.compare(0, a.size() - freq_bytes, b, 0, b.size() - freq_bytes) == 0) << "weights differ";
  auto fa = torch::from_blob(a.data() + a.size() - freq_bytes, {2, 512, 4}, torch::kFloat32);
  auto fb = torch::from_blob(b.data() + b.size() - freq_bytes, {2, 512, 4}, torch::kFloat32);
  EXPECT_LT((fa - fb).abs().max().item<float>(), 1e-6);
}

TEST(ModelFiles, WrongShapeNamesTheTensorInTheFilesNaming) {
  TempDir tmp;
  auto m = random_model(tiny(false, false));
  write_model(m, (tmp / "hf").string());
  auto st = read_safetensors((tmp / "hf" / "model.safetensors").string());
  st.tensors["model.layers.1.self_attn.k_proj.weight"] = torch::zeros({16, 16});
  write_safetensors((tmp / "hf" / "model.safetensors").string(), st.tensors, {}, torch::kFloat32);
  auto msg = error_of([&] { read_model((tmp / "hf").string()); });
  EXPECT_NE(msg.find("'model.layers.1.self_attn.k_proj.weight' has shape (16, 16), expected (8, 16)"), std::string::npos)
      << msg;
}

TEST(ModelFiles, UnsupportedArchitectureIsNamed) {
  TempDir tmp;
  fs::create_directories(tmp / "m");
  testing::spit(tmp / "m" / "config.json", R"({"model_type": "gpt_neox", "hidden_size": 8})");
  auto msg = error_of([&] { read_model((tmp / "m").string()); });
  EXPECT_NE(msg.find("model_type 'gpt_neox' is not supported, expected llama, mistral or qwen2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
}

TEST(ModelFiles, TruncatedLlama2cSaysSo) {
  LINEAGE_REQUIRE_SHARED();
  TempDir tmp;
  std::string data = testing::slurp(testing::stories_dir() / "stories260K.bin");
  testing::spit(tmp / "cut.bin", data.substr(0, data.size() / 2));
  auto msg = error_of([&] { read_model((tmp / "cut.bin").string()); });
  EXPECT_NE(msg.find("cut.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has 1056540 bytes, this file has 528270 (truncated)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lineage::io
