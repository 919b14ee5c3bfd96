// A SentencePiece .model as check_sentencepiece_model walks it before libsentencepiece reads the
// file: the protobuf fields, the normalizer's and denormalizer's charsmaps, every reachable node of
// their darts-clone tries. Refusing is a pass; a read outside the bytes is a finding.
#include <string_view>

#include "fuzz_common.h"
#include "lineage/text/tokenizer_formats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  return lineage::fuzz::refusing_is_fine([&] { lineage::text::check_sentencepiece_model(bytes, "fuzz.model"); });
}
