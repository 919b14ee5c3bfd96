// A request log as JSONL (lineage monitor --log requests.jsonl): every line's fields and body.
#include "fuzz_common.h"
#include "lineage/protect/request_record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "requests.jsonl");
  return lineage::fuzz::refusing_is_fine(
      [&] { lineage::protect::read_request_log(path, [](lineage::protect::RequestRecord&&) {}); });
}
