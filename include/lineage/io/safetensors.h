// safetensors (Hugging Face): the format has no Debian reader, so it is written here.
//
//   uint64 LE  N            length of the JSON header
//   N bytes    JSON         {"name": {"dtype": "F32"|"F16"|"BF16"|..., "shape": [..],
//                            "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
//                           padded with spaces to a multiple of 8
//   data                    tensors, row-major little-endian, offsets relative to here
//
// The reader checks every offset and size against the file before touching data.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace lineage::io {

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;  // float32 on CPU, whatever the stored dtype
  std::map<std::string, std::string> metadata;
  std::string dtype;                             // stored dtype of the floating tensors ("F32", ...)
};

SafetensorsFile read_safetensors(const std::string& path);

// dtype: torch::kFloat32, kFloat16 or kBFloat16 for every tensor.
void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata, torch::Dtype dtype);

}  // namespace lineage::io
