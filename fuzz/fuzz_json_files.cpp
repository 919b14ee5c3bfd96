// The JSON Lineage reads from files and requests, through the bounded parser, then an HF
// config.json into a model config (the first byte chooses the reading).
#include "fuzz_common.h"
#include "lineage/core/json.h"
#include "lineage/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  return lineage::fuzz::refusing_is_fine([&] {
    auto j = lineage::parse_json(text, "input.json");
    if (data[0] & 1) lineage::model::config_from_json(j, "config.json").validate("config.json");
    else (void)j.dump();
  });
}
