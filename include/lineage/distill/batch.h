// Training rows as tensors: kept apart from dataset.h so that reading data needs no libtorch.
#pragma once
#include <torch/torch.h>

#include <utility>
#include <vector>

#include "lineage/distill/dataset.h"

namespace lineage::distill {

// Rows `index` of `rows` as tensors on `device`: tokens (B, seq_len + 1) int64, mask (B, seq_len + 1) bool.
std::pair<torch::Tensor, torch::Tensor> batch_of(const TokenRows& rows, const std::vector<int64_t>& index,
                                                 torch::Device device);

}  // namespace lineage::distill
