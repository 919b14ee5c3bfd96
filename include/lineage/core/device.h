// Device and dtype names as every verb and recipe spells them: cpu, cuda, cuda:N; f32, f16, bf16
// (and float32, float16, bfloat16). Parsed in one place so that a flag and a recipe file agree.
#pragma once
#include <torch/torch.h>

#include <string>

namespace lineage {

torch::Device parse_device(const std::string& s);  // fails naming the flag when CUDA is asked for and absent
torch::Dtype parse_dtype(const std::string& s);

}  // namespace lineage
