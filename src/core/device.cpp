// Device and dtype names. See include/lineage/core/device.h.
#include "lineage/core/device.h"

#include "lineage/core/error.h"

namespace lineage {

torch::Device parse_device(const std::string& s) {
  if (s == "cpu") return torch::kCPU;
  if (s.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) fail("--device '{}': this libtorch has no CUDA device available", s);
    return torch::Device(s);
  }
  fail("--device '{}': expected cpu, cuda or cuda:N", s);
}

torch::Dtype parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return torch::kFloat32;
  if (s == "f16" || s == "float16") return torch::kFloat16;
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  fail("--dtype '{}': expected f32, f16 or bf16", s);
}

}  // namespace lineage
