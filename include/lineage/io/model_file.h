// Reading and writing whole models — config, weights and tokenizer — in the formats people have:
//   llama2.c checkpoint (.bin)    read and write; tokenizer in a separate tokenizer.bin
//   Hugging Face folder           config.json + model.safetensors (or sharded) + tokenizer.json
//   GGUF (.gguf)                  llama.cpp: hyper-parameters, tokenizer and tensors in one file
// Weights are held in the model's own names and rotate-half RoPE layout (model/llama.h).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>

#include "lineage/io/weight_names.h"
#include "lineage/model/config.h"
#include "lineage/model/llama.h"
#include "lineage/text/tokenizer.h"

namespace lineage::io {

enum class ModelFormat { kLlama2c, kHf, kGguf };
const char* format_name(ModelFormat f);

struct ModelFile {
  ModelFormat format = ModelFormat::kHf;
  std::string path;
  model::ModelConfig config;
  std::map<std::string, torch::Tensor> weights;  // own names, float32 on CPU
  std::string stored_dtype;                      // as in the file: F32, F16, BF16, Q8_0, mixed
  std::shared_ptr<text::Tokenizer> tokenizer;    // null when the file carries none
  std::string name;                              // model name (GGUF general.name, folder name, ...)
  std::string license;                           // GGUF general.license, when known
  std::string provenance;                        // lineage.json text of a Lineage student ("" if none):
                                                 // GGUF key lineage.provenance, HF folder lineage.json
};

// Detects the format of `path` (a folder is HF; a file by its magic or extension), reads it and
// checks every tensor's shape against the config. `tokenizer_path` overrides the tokenizer the
// model carries or has beside it.
ModelFile read_model(const std::string& path, const std::string& tokenizer_path = "");

// Just the format `path` would be read as (fails when none fits).
ModelFormat detect_format(const std::string& path);

struct WriteOptions {
  torch::Dtype dtype = torch::kFloat32;  // kFloat32, kFloat16 (all formats), kBFloat16 (HF only)
};
// Writes in the format `path` names: "*.gguf" GGUF, "*.bin" llama2.c (tokenizer.bin beside it),
// anything else an HF folder. Every file is written atomically.
void write_model(const ModelFile& m, const std::string& path, const WriteOptions& options = {});

// A model on `device` in `dtype`, with the file's weights.
model::Llama make_model(const ModelFile& m, torch::Device device = torch::kCPU, torch::Dtype dtype = torch::kFloat32);

// Any tokenizer source: the files text::load_tokenizer_file reads, a GGUF's embedded one, or a
// model's (an HF folder's tokenizer.json, a llama2.c checkpoint's tokenizer beside it).
std::shared_ptr<text::Tokenizer> load_tokenizer(const std::string& path);

// Whether `path` is a llama2.c checkpoint: its header is a valid config and the file has the size
// the config implies (a llama2.c tokenizer.bin, also ".bin", is not).
bool is_llama2c_checkpoint(const std::string& path);
// run.c's tokenizer beside a checkpoint (tok<vocab_size>.bin, else tokenizer.bin); null when neither.
std::shared_ptr<text::Tokenizer> llama2c_tokenizer_beside(const std::string& path, int64_t vocab_size);

// Format-specific entry points (read_model/write_model dispatch to these).
ModelFile read_llama2c(const std::string& path);
void write_llama2c(const ModelFile& m, const std::string& path);
ModelFile read_hf(const std::string& dir);
void write_hf(const ModelFile& m, const std::string& dir, torch::Dtype dtype);
ModelFile read_gguf_model(const std::string& path);
void write_gguf_model(const ModelFile& m, const std::string& path, torch::Dtype dtype);
text::Vocab read_gguf_vocab(const std::string& path);

// Checks `weights` against the shapes `config` implies; names the first mismatch.
// Messages name tensors as `naming` does (the file's own names).
void check_weights(const model::ModelConfig& config, const std::map<std::string, torch::Tensor>& weights,
                   const std::string& source, Naming naming = Naming::kOwn);

}  // namespace lineage::io
