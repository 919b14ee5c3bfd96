// A request log as JSONL (lineage monitor --log requests.jsonl): every line's fields, and each
// body as the monitor reads it (parameters, messages, tool calls, the answers it re-sends).
#include <vector>

#include "../src/protect/monitor_features.h"
#include "fuzz_common.h"
#include "lineage/protect/request_record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "requests.jsonl");
  return lineage::fuzz::refusing_is_fine([&] {
    std::vector<uint64_t> sentences, words;
    lineage::protect::read_request_log(path, [&](lineage::protect::RequestRecord&& rec) {
      lineage::protect::monitor::Request r;
      lineage::protect::monitor::parse_request(rec, r, sentences, words, /*answers=*/true);
      lineage::protect::monitor::digest_word_of_hex(rec.response_sha256);
    });
  });
}
