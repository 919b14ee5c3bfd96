// Format detection and the format-independent parts of model reading and writing.
#include "lineage/io/model_file.h"

#include <cstring>
#include <filesystem>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/gguf.h"
#include "lineage/io/weight_names.h"

namespace lineage::io {

namespace fs = std::filesystem;

const char* format_name(ModelFormat f) {
  switch (f) {
    case ModelFormat::kLlama2c: return "llama2.c checkpoint";
    case ModelFormat::kHf: return "Hugging Face safetensors folder";
    case ModelFormat::kGguf: return "GGUF";
  }
  return "?";
}

ModelFormat detect_format(const std::string& path) {
  fs::path p(path);
  if (!fs::exists(p)) fail("model '{}' does not exist", path);
  if (fs::is_directory(p)) return ModelFormat::kHf;
  auto ext = p.extension().string();
  if (ext == ".gguf") return ModelFormat::kGguf;
  if (ext == ".safetensors" || p.filename() == "config.json") return ModelFormat::kHf;
  char magic[4] = {};
  {
    MappedFile f(p);
    if (f.size() >= 4) std::memcpy(magic, f.data(), 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) return ModelFormat::kGguf;
  if (ext == ".bin" || std::memcmp(magic, "ak42", 4) == 0) return ModelFormat::kLlama2c;
  fail("'{}' is not a model Lineage reads: expected a Hugging Face folder, a .gguf file or a llama2.c .bin checkpoint",
       path);
}

ModelFile read_model(const std::string& path, const std::string& tokenizer_path) {
  ModelFile m;
  switch (detect_format(path)) {
    case ModelFormat::kLlama2c: m = read_llama2c(path); break;
    case ModelFormat::kGguf: m = read_gguf_model(path); break;
    case ModelFormat::kHf: {
      fs::path p(path);
      m = read_hf(fs::is_directory(p) ? path : p.parent_path().string());
      break;
    }
  }
  if (!tokenizer_path.empty()) m.tokenizer = load_tokenizer(tokenizer_path);
  if (m.tokenizer && m.tokenizer->vocab_size() > m.config.vocab_size)
    fail("tokenizer '{}' has {} tokens, more than the {} rows of model '{}'", tokenizer_path.empty() ? path : tokenizer_path,
         m.tokenizer->vocab_size(), m.config.vocab_size, path);
  return m;
}

void write_model(const ModelFile& m, const std::string& path, const WriteOptions& options) {
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  auto ext = p.extension().string();
  if (ext == ".gguf") return write_gguf_model(m, path, options.dtype);
  if (ext == ".bin") {
    if (options.dtype != torch::kFloat32) fail("cannot write '{}': llama2.c checkpoints are float32 only", path);
    return write_llama2c(m, path);
  }
  write_hf(m, path, options.dtype);
}

model::Llama make_model(const ModelFile& m, torch::Device device, torch::Dtype dtype) {
  model::Llama net(m.config);
  net->load_weights(m.weights, m.path);
  net->to(device, dtype);
  net->eval();
  return net;
}

std::shared_ptr<text::Tokenizer> load_tokenizer(const std::string& path) {
  fs::path p(path);
  if (fs::is_regular_file(p)) {
    char magic[4] = {};
    {
      MappedFile f(p);
      if (f.size() >= 4) std::memcpy(magic, f.data(), 4);
    }
    if (std::memcmp(magic, "GGUF", 4) == 0) return text::make_tokenizer(read_gguf_vocab(path));
    if (is_llama2c_checkpoint(path)) {
      ModelFile m = read_llama2c(path);
      if (!m.tokenizer)
        fail("'{}' is a llama2.c checkpoint and no tokenizer is beside it (tok{}.bin or tokenizer.bin): pass the tokenizer file",
             path, m.config.vocab_size);
      return m.tokenizer;
    }
    if (p.extension() == ".safetensors" || p.filename() == "config.json")
      return text::load_tokenizer_file(p.parent_path().string());
  }
  return text::load_tokenizer_file(path);
}

void check_weights(const model::ModelConfig& config, const std::map<std::string, torch::Tensor>& weights,
                   const std::string& source, Naming naming) {
  auto shown = [&](const std::string& own) { return rename_weight(own, Naming::kOwn, naming).value_or(own); };
  auto expected = model::expected_shapes(config);
  for (const auto& [name, shape] : expected) {
    auto it = weights.find(name);
    if (it == weights.end()) fail("'{}': tensor '{}' is missing", source, shown(name));
    if (it->second.sizes().vec() != shape)
      fail("'{}': tensor '{}' has shape ({}), expected ({}) for dim={} hidden_dim={} n_heads={} n_kv_heads={} vocab={}",
           source, shown(name), fmt::join(it->second.sizes(), ", "), fmt::join(shape, ", "), config.dim,
           config.hidden_dim, config.n_heads, config.n_kv_heads, config.vocab_size);
  }
  for (const auto& [name, t] : weights)
    if (expected.count(name) == 0) fail("'{}': unexpected tensor '{}' for this configuration", source, shown(name));
}

}  // namespace lineage::io
