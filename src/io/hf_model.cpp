// Hugging Face model folders: config.json (model_type llama or qwen2) + model.safetensors, or
// shards listed in model.safetensors.index.json; tokenizer.json / tokenizer.model beside them.
// HF stores q/k rows in the rotate-half layout the model uses, so no permutation is needed.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "lineage/core/json.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/io/safetensors.h"
#include "lineage/io/weight_names.h"
#include "lineage/text/tokenizer_formats.h"

namespace lineage::io {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

model::ModelConfig config_from_hf(const json& j, const std::string& source) {
  if (!j.is_object()) fail("'{}' must hold a JSON object", source);
  std::string type = j.value("model_type", "");
  if (type != "llama" && type != "qwen2" && type != "mistral")
    fail("'{}': model_type '{}' is not supported, expected llama, mistral or qwen2", source, type.empty() ? "(none)" : type);
  auto need = [&](const char* key) -> int64_t {
    if (!j.contains(key) || !j[key].is_number()) fail("'{}': '{}' is missing or not a number", source, key);
    return need_json_int(j[key], fmt::format("'{}': '{}'", source, key));
  };
  auto optional = [&](const char* key, int64_t fallback) -> int64_t {
    if (!j.contains(key) || !j[key].is_number()) return fallback;
    return need_json_int(j[key], fmt::format("'{}': '{}'", source, key));
  };
  model::ModelConfig c;
  c.arch = type == "qwen2" ? "qwen2" : "llama";
  c.dim = need("hidden_size");
  c.hidden_dim = need("intermediate_size");
  c.n_layers = need("num_hidden_layers");
  c.n_heads = need("num_attention_heads");
  c.n_kv_heads = optional("num_key_value_heads", c.n_heads);
  c.vocab_size = need("vocab_size");
  c.max_seq_len = optional("max_position_embeddings", 2048);
  c.norm_eps = j.value("rms_norm_eps", 1e-6);
  c.rope_theta = j.value("rope_theta", 10000.0);
  c.tie_embeddings = j.value("tie_word_embeddings", type == "qwen2");
  c.qkv_bias = type == "qwen2" || j.value("attention_bias", false);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail("'{}': rope_scaling {} is not supported yet (plain RoPE only)", source, j["rope_scaling"].dump());
  if (c.n_heads <= 0) fail("'{}': num_attention_heads is {}, expected at least 1", source, c.n_heads);
  if (const int64_t head_dim = optional("head_dim", c.dim / c.n_heads); head_dim != c.dim / c.n_heads)
    fail("'{}': head_dim {} differs from hidden_size / num_attention_heads = {}; not supported", source, head_dim,
         c.dim / c.n_heads);
  if (std::string act = j.value("hidden_act", "silu"); act != "silu")
    fail("'{}': hidden_act '{}' is not supported, expected silu", source, act);
  c.validate(source);
  return c;
}

}  // namespace

ModelFile read_hf(const std::string& dir_str) {
  fs::path dir(dir_str);
  fs::path cfg_path = dir / "config.json";
  if (!fs::exists(cfg_path)) fail("'{}' is not a Hugging Face model folder: config.json is missing", dir_str);
  json cfg;
  try {
    std::string text = read_file(cfg_path);
    check_json_depth(text, "'" + cfg_path.string() + "'");
    cfg = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("'{}' is not valid JSON: {}", cfg_path.string(), e.what());
  }
  ModelFile m;
  m.format = ModelFormat::kHf;
  m.path = dir_str;
  m.config = config_from_hf(cfg, cfg_path.string());
  m.name = fs::absolute(dir).lexically_normal().filename().string();
  if (m.name.empty()) m.name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  if (fs::exists(dir / "lineage.json")) m.provenance = read_file(dir / "lineage.json");

  std::vector<fs::path> shards;
  if (fs::exists(dir / "model.safetensors")) {
    shards.push_back(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    json idx = parse_json(read_file(dir / "model.safetensors.index.json"), (dir / "model.safetensors.index.json").string());
    std::set<std::string> files;
    for (const auto& [name, file] : idx.at("weight_map").items()) files.insert(file.get<std::string>());
    for (const auto& f : files) shards.push_back(dir / f);
  } else {
    fail("'{}' has no model.safetensors or model.safetensors.index.json", dir_str);
  }
  std::set<std::string> dtypes;
  for (const auto& shard : shards) {
    auto st = read_safetensors(shard.string());
    if (!st.dtype.empty()) dtypes.insert(st.dtype);
    for (auto& [name, t] : st.tensors) {
      if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // derived, some exports keep it
      auto own = rename_weight(name, Naming::kHf, Naming::kOwn);
      if (!own) fail("'{}': tensor '{}' is not part of a {} model", shard.string(), name, m.config.arch);
      m.weights[*own] = std::move(t);
    }
  }
  // Tied checkpoints sometimes still carry lm_head.weight (a copy of the embedding).
  if (m.config.tie_embeddings) m.weights.erase("output.weight");
  m.stored_dtype = dtypes.size() == 1 ? *dtypes.begin() : "mixed";
  check_weights(m.config, m.weights, dir_str, Naming::kHf);
  if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "tokenizer.model"))
    m.tokenizer = text::load_tokenizer_file(dir_str);
  return m;
}

void write_hf(const ModelFile& m, const std::string& dir_str, torch::Dtype dtype) {
  const auto& c = m.config;
  check_weights(c, m.weights, m.path);
  fs::path dir(dir_str);
  fs::create_directories(dir);
  const char* dtype_name = dtype == torch::kFloat32 ? "float32" : dtype == torch::kFloat16 ? "float16" : "bfloat16";
  json cfg = {{"architectures", {c.arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
              {"model_type", c.arch},
              {"hidden_size", c.dim},
              {"intermediate_size", c.hidden_dim},
              {"num_hidden_layers", c.n_layers},
              {"num_attention_heads", c.n_heads},
              {"num_key_value_heads", c.n_kv_heads},
              {"vocab_size", c.vocab_size},
              {"max_position_embeddings", c.max_seq_len},
              {"rms_norm_eps", c.norm_eps},
              {"rope_theta", c.rope_theta},
              {"rope_scaling", nullptr},
              {"tie_word_embeddings", c.tie_embeddings},
              {"hidden_act", "silu"},
              {"torch_dtype", dtype_name},
              {"use_cache", true}};
  if (c.arch == "llama") cfg["attention_bias"] = c.qkv_bias;
  if (m.tokenizer) {
    if (m.tokenizer->bos_id() >= 0) cfg["bos_token_id"] = m.tokenizer->bos_id();
    if (m.tokenizer->eos_id() >= 0) cfg["eos_token_id"] = m.tokenizer->eos_id();
  }
  std::map<std::string, torch::Tensor> hf;
  for (const auto& [own, t] : m.weights) {
    auto name = rename_weight(own, Naming::kOwn, Naming::kHf);
    if (!name) fail("cannot write '{}': weight '{}' has no Hugging Face name", dir_str, own);
    hf[*name] = t;
  }
  write_safetensors((dir / "model.safetensors").string(), hf, {{"format", "pt"}}, dtype);
  if (m.tokenizer) text::write_hf_tokenizer(m.tokenizer->vocab(), dir_str);
  write_file_atomic(dir / "config.json", cfg.dump(2));
  if (!m.provenance.empty()) write_file_atomic(dir / "lineage.json", m.provenance);
}

}  // namespace lineage::io
