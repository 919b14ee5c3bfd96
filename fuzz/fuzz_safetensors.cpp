// safetensors: header length, JSON header, dtypes, shapes, offsets, overlaps, coverage, then the
// tensors themselves. (Built as C++17 with libtorch: fuzz/README.md.)
#include "fuzz_common.h"
#include "lineage/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "model.safetensors");
  return lineage::fuzz::refusing_is_fine([&] { lineage::io::read_safetensors(path); });
}
