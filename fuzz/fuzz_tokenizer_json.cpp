// tokenizer.json: vocabulary, merges, added tokens, normalizers, pre-tokenizers, decoders; the
// tokenizer it makes encodes and decodes text with spaces, digits, accents, bytes that are not UTF-8.
#include "fuzz_common.h"
#include "lineage/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "tok/tokenizer.json");
  return lineage::fuzz::refusing_is_fine([&] {
    auto tok = lineage::text::load_tokenizer_file(path);
    for (const char* text : {"Hello  world 123", "e\xCC\x81t\xC3\xA9 \xFF\xFE", ""}) {
      auto ids = tok->encode(text, true);
      tok->decode(ids);
      int32_t prev = -1;
      for (int32_t id : ids) tok->decode_piece(prev, id), prev = id;
    }
  });
}
