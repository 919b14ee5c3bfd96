// Training rows as tensors (see batch.h).
#include "lineage/distill/batch.h"

#include "lineage/core/error.h"

namespace lineage::distill {

std::pair<torch::Tensor, torch::Tensor> batch_of(const TokenRows& rows, const std::vector<int64_t>& index,
                                                 torch::Device device) {
  const int64_t W = rows.seq_len + 1, B = static_cast<int64_t>(index.size());
  auto tok = torch::empty({B, W}, torch::kInt64);
  auto msk = torch::empty({B, W}, torch::kBool);
  auto* t = tok.data_ptr<int64_t>();
  auto* m = msk.data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b) {
    if (index[b] < 0 || index[b] >= rows.rows()) fail("row {} out of range (dataset has {} rows)", index[b], rows.rows());
    const int64_t off = index[b] * W;
    for (int64_t i = 0; i < W; ++i) {
      t[b * W + i] = rows.tokens[off + i];
      m[b * W + i] = rows.mask[off + i] != 0;
    }
  }
  return {tok.to(device), msk.to(device)};
}

}  // namespace lineage::distill
