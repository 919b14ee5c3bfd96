// GGUF v3, the llama.cpp model file (ggml's docs/gguf.md). Little-endian throughout.
//
//   char[4]   magic "GGUF"
//   uint32    version (3; 2 is read too)
//   uint64    n_tensors
//   uint64    n_kv
//   n_kv x    key-value: string key, uint32 value type, value
//   n_tensors x tensor info: string name, uint32 n_dims, uint64 ne[n_dims] (fastest-varying
//             first, so a torch (out, in) matrix has ne = [in, out]), uint32 ggml type,
//             uint64 offset (from the start of the data section, a multiple of the alignment)
//   padding   to general.alignment (default 32)
//   data
//
//   string = uint64 length + bytes (no terminator)
//   value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
//                9 array (uint32 element type, uint64 count, elements), 10 u64, 11 i64, 12 f64
//   tensor types read: 0 F32, 1 F16, 8 Q8_0 (blocks of 32: f16 scale + 32 int8), 30 BF16;
//   written: F32, F16.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/model/config.h"
#include "lineage/text/vocab.h"

// Tensors appear only in signatures here: the container and its metadata are read without libtorch
// (src/io/gguf.cpp, gguf_meta.cpp; fuzz/fuzz_gguf.cpp), tensors in gguf_tensors.cpp.
namespace at {
class Tensor;
}
namespace torch {
using at::Tensor;
}

namespace lineage {
class MappedFile;
}

namespace lineage::io {

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };

struct GgufKV {
  std::string key;
  GgufType type;
  GgufType array_type = GgufType::kU8;  // element type when type == kArray
  nlohmann::json value;                 // number, bool, string, or array of them
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // fastest-varying first
  uint32_t type = 0;         // ggml type id
  uint64_t offset = 0;       // within the data section
  uint64_t bytes = 0;
};

class GgufFile {
 public:
  static GgufFile read(const std::string& path);

  const std::vector<GgufKV>& kvs() const { return kvs_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufKV* find(const std::string& key) const;
  // Typed access that fails naming the key and the file when absent or of another type.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // The tensor as float32 on CPU, torch shape (ne reversed); dequantizes Q8_0.
  torch::Tensor load_tensor(const GgufTensorInfo& info) const;
  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }

 private:
  std::string path_;
  uint32_t version_ = 3;
  std::vector<GgufKV> kvs_;
  std::vector<GgufTensorInfo> tensors_;
  std::shared_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;
};

// Collects key-values and tensors, then writes a GGUF v3 atomically.
class GgufWriter {
 public:
  void add(const std::string& key, GgufType type, nlohmann::json value);
  void add_array(const std::string& key, GgufType element_type, nlohmann::json values);
  // t: float tensor of any torch shape; stored as F32 or F16.
  void add_tensor(const std::string& name, const torch::Tensor& t, GgmlType type);
  void write(const std::string& path) const;

 private:
  std::vector<GgufKV> kvs_;
  std::vector<std::pair<std::string, torch::Tensor>> tensors_;  // already in stored dtype
  std::vector<GgmlType> types_;
};

// The model's hyper-parameters from the "<arch>.*" keys, checked against limits (ModelConfig::
// validate) and against the tensors the file holds (block count, widths) before anything uses them.
model::ModelConfig read_gguf_config(const GgufFile& g);
// The tokenizer under "tokenizer.ggml.*".
text::Vocab read_gguf_vocab(const GgufFile& g);

}  // namespace lineage::io
