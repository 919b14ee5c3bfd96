// Whole models as `lineage info` and `generate` read them, tensors included: a GGUF (first byte
// even) or a llama2.c checkpoint (odd); for a small model, one forward pass. (Built as C++17 with
// libtorch: fuzz/README.md.)
#include <torch/torch.h>

#include "fuzz_common.h"
#include "lineage/io/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool gguf = (data[0] & 1) == 0;
  const std::string path = lineage::fuzz::as_file(data + 1, size - 1, gguf ? "m/model.gguf" : "c/model.bin");
  return lineage::fuzz::refusing_is_fine([&] {
    auto m = lineage::io::read_model(path);
    if (m.tokenizer) m.tokenizer->decode(m.tokenizer->encode("Hello, world", true));
    if (m.config.num_parameters() < 2'000'000) {
      torch::NoGradGuard no_grad;
      auto net = lineage::io::make_model(m);
      net->forward(torch::zeros({1, std::min<int64_t>(4, m.config.max_seq_len)}, torch::kLong));
    }
  });
}
