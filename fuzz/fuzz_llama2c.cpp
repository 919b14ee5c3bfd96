// llama2.c tokenizer.bin (karpathy/llama2.c tokenizer.py's format): lengths, scores, tokens; the
// tokenizer it makes encodes and decodes text.
#include "fuzz_common.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/tokenizer_formats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "tokenizer.bin");
  return lineage::fuzz::refusing_is_fine([&] {
    auto tok = lineage::text::make_tokenizer(lineage::text::read_llama2c_tokenizer(path));
    tok->decode(tok->encode("Once upon a time \xF0\x9F\x99\x82", true));
  });
}
