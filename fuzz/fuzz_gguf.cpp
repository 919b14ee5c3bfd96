// GGUF: header, key-values, arrays, tensor infos and offsets against the file, then the model's
// hyper-parameters (limits, and against the tensors) and the embedded tokenizer, which encodes and
// decodes text — everything `lineage info` reads before any tensor is loaded.
#include "fuzz_common.h"
#include "lineage/io/gguf.h"
#include "lineage/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "model.gguf");
  return lineage::fuzz::refusing_is_fine([&] {
    auto g = lineage::io::GgufFile::read(path);
    lineage::fuzz::refusing_is_fine([&] { lineage::io::read_gguf_config(g); });
    auto tok = lineage::text::make_tokenizer(lineage::io::read_gguf_vocab(g));
    tok->decode(tok->encode("Hello, world \xC3\xA9 123", true));
  });
}
