// GGUF models with general.architecture llama (or qwen2): hyper-parameters under "<arch>.*", the
// tokenizer under "tokenizer.ggml.*", tensors with llama.cpp names. For arch llama, q/k rows are in
// the interleaved RoPE layout (llama.cpp's convert_hf_to_gguf.py permutes them), so they are
// permuted on the way in and out; qwen2 uses rotate-half (NEOX) and is stored as is.
#include <filesystem>
#include <set>

#include "lineage/core/json.h"
#include "lineage/core/error.h"
#include "lineage/io/gguf.h"
#include "lineage/io/model_file.h"
#include "lineage/io/weight_names.h"

namespace lineage::io {

namespace fs = std::filesystem;
using nlohmann::json;

text::Vocab read_gguf_vocab(const std::string& path) { return read_gguf_vocab(GgufFile::read(path)); }

ModelFile read_gguf_model(const std::string& path) {
  GgufFile g = GgufFile::read(path);
  const model::ModelConfig c = read_gguf_config(g);
  const std::string& arch = c.arch;

  ModelFile m;
  m.format = ModelFormat::kGguf;
  m.path = path;
  m.config = c;
  m.name = g.find("general.name") ? g.get_string("general.name") : fs::path(path).stem().string();
  if (g.find("general.license")) m.license = g.get_string("general.license");
  if (g.find("lineage.provenance")) m.provenance = g.get_string("lineage.provenance");
  std::set<std::string> types;
  const auto expected = model::expected_shapes(c);
  for (const auto& info : g.tensors()) {
    if (info.name.find("rope_freqs") != std::string::npos) continue;
    auto own = rename_weight(info.name, Naming::kGguf, Naming::kOwn);
    if (!own) fail("'{}': tensor '{}' is not part of a {} model", path, info.name, arch);
    auto t = g.load_tensor(info);
    if (auto want = expected.find(*own); want != expected.end() && t.sizes().vec() != want->second)
      fail("'{}': tensor '{}' has shape ({}), expected ({}) for n_embd={} n_ff={} n_head={} n_head_kv={} n_vocab={}", path,
           info.name, fmt::join(t.sizes(), ", "), fmt::join(want->second, ", "), c.dim, c.hidden_dim, c.n_heads,
           c.n_kv_heads, c.vocab_size);
    if (arch == "llama")
      if (int64_t heads = rope_heads(*own, c)) {
        if (t.size(0) % (2 * heads) != 0)
          fail("'{}': tensor '{}' has {} rows, expected a multiple of 2 x {} heads", path, info.name, t.size(0), heads);
        t = rope_interleaved_to_half(t, heads);
      }
    m.weights[*own] = t;
    types.insert(info.type == 0 ? "F32" : info.type == 1 ? "F16" : info.type == 8 ? "Q8_0" : "BF16");
  }
  m.stored_dtype = types.size() == 1 ? *types.begin() : "mixed";
  check_weights(c, m.weights, path, Naming::kGguf);
  if (g.find("tokenizer.ggml.model")) m.tokenizer = text::make_tokenizer(read_gguf_vocab(g));
  return m;
}

void write_gguf_model(const ModelFile& m, const std::string& path, torch::Dtype dtype) {
  const auto& c = m.config;
  check_weights(c, m.weights, m.path);
  if (dtype != torch::kFloat32 && dtype != torch::kFloat16)
    fail("cannot write '{}': GGUF export supports f32 and f16", path);
  const std::string arch = "llama";  // qwen2 = llama + QKV bias, which llama.cpp's llama graph reads
  GgufWriter w;
  w.add("general.architecture", GgufType::kString, arch);
  w.add("general.name", GgufType::kString, m.name.empty() ? "lineage-model" : m.name);
  w.add("general.file_type", GgufType::kU32, dtype == torch::kFloat32 ? 0 : 1);
  w.add("general.alignment", GgufType::kU32, 32);
  if (!m.license.empty()) w.add("general.license", GgufType::kString, m.license);
  if (!m.provenance.empty()) {
    // The teacher as GGUF's base-model keys (what llama.cpp's tools and the Hub read), and the
    // whole lineage.json beside them.
    nlohmann::json p = parse_json_or_discarded(m.provenance);
    if (p.is_object() && p.contains("teacher") && p["teacher"].is_object()) {
      const auto& t = p["teacher"];
      w.add("general.base_model.count", GgufType::kU32, 1);
      w.add("general.base_model.0.name", GgufType::kString, t.value("name", t.value("source", std::string("teacher"))));
      if (t.contains("source") && t["source"].is_string())
        w.add("general.base_model.0.url", GgufType::kString, t["source"].get<std::string>());
    }
    w.add("lineage.provenance", GgufType::kString, m.provenance);
  }
  w.add(arch + ".context_length", GgufType::kU32, c.max_seq_len);
  w.add(arch + ".embedding_length", GgufType::kU32, c.dim);
  w.add(arch + ".block_count", GgufType::kU32, c.n_layers);
  w.add(arch + ".feed_forward_length", GgufType::kU32, c.hidden_dim);
  w.add(arch + ".rope.dimension_count", GgufType::kU32, c.head_dim());
  w.add(arch + ".attention.head_count", GgufType::kU32, c.n_heads);
  w.add(arch + ".attention.head_count_kv", GgufType::kU32, c.n_kv_heads);
  w.add(arch + ".attention.layer_norm_rms_epsilon", GgufType::kF32, c.norm_eps);
  w.add(arch + ".rope.freq_base", GgufType::kF32, c.rope_theta);
  w.add(arch + ".vocab_size", GgufType::kU32, c.vocab_size);
  if (m.tokenizer) {
    const text::Vocab& v = m.tokenizer->vocab();
    if (v.size() != c.vocab_size)
      fail("cannot write '{}': the tokenizer has {} tokens but the model's vocabulary is {}", path, v.size(), c.vocab_size);
    w.add("tokenizer.ggml.model", GgufType::kString, v.model == text::VocabModel::kSpm ? "llama" : "gpt2");
    if (v.model == text::VocabModel::kBpe) w.add("tokenizer.ggml.pre", GgufType::kString, v.pre);
    w.add_array("tokenizer.ggml.tokens", GgufType::kString, v.tokens);
    w.add_array("tokenizer.ggml.scores", GgufType::kF32, v.scores);
    std::vector<int32_t> types;
    for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
    w.add_array("tokenizer.ggml.token_type", GgufType::kI32, types);
    if (v.model == text::VocabModel::kBpe) w.add_array("tokenizer.ggml.merges", GgufType::kString, v.merges);
    if (v.bos_id >= 0) w.add("tokenizer.ggml.bos_token_id", GgufType::kU32, v.bos_id);
    if (v.eos_id >= 0) w.add("tokenizer.ggml.eos_token_id", GgufType::kU32, v.eos_id);
    if (v.unk_id >= 0) w.add("tokenizer.ggml.unknown_token_id", GgufType::kU32, v.unk_id);
    if (v.pad_id >= 0) w.add("tokenizer.ggml.padding_token_id", GgufType::kU32, v.pad_id);
    w.add("tokenizer.ggml.add_bos_token", GgufType::kBool, v.add_bos);
    w.add("tokenizer.ggml.add_eos_token", GgufType::kBool, false);
    if (v.model == text::VocabModel::kSpm) w.add("tokenizer.ggml.add_space_prefix", GgufType::kBool, v.add_space_prefix);
  }
  // Tensor order as llama.cpp writes it: embedding, blocks, output norm, output.
  std::vector<std::string> order{"tok_embeddings.weight"};
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (const auto& [own, t] : m.weights)
      if (own.rfind(fmt::format("layers.{}.", l), 0) == 0) order.push_back(own);
  order.push_back("norm.weight");
  if (!c.tie_embeddings) order.push_back("output.weight");
  for (const auto& own : order) {
    torch::Tensor t = m.weights.at(own);
    if (int64_t heads = rope_heads(own, c)) t = rope_half_to_interleaved(t, heads);
    // llama.cpp keeps 1-D tensors (norms, biases) in F32 whatever the file type.
    GgmlType type = (dtype == torch::kFloat16 && t.dim() >= 2) ? GgmlType::kF16 : GgmlType::kF32;
    w.add_tensor(*rename_weight(own, Naming::kOwn, Naming::kGguf), t, type);
  }
  w.write(path);
}

}  // namespace lineage::io
