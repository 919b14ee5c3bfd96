// Training data (lineage distill/train --data FILE): JSONL (prompt/completion, text, chat messages)
// or plain text, chosen by the first byte; read, tokenized, split and packed into rows as
// load_dataset does, with a byte-fallback SentencePiece-style vocabulary made here.
#include "fuzz_common.h"
#include "lineage/distill/dataset.h"
#include "lineage/text/tokenizer.h"

namespace {

const lineage::text::Tokenizer& tokenizer() {
  static const auto tok = [] {
    lineage::text::Vocab v;
    v.source = "fuzz";
    v.tokens = {"<unk>", "<s>", "</s>"};
    v.types = {lineage::text::TokenType::kUnknown, lineage::text::TokenType::kControl,
               lineage::text::TokenType::kControl};
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "<0x%02X>", b);
      v.tokens.push_back(hex);
      v.types.push_back(lineage::text::TokenType::kByte);
    }
    for (const char* piece : {"\xE2\x96\x81", "e", "t", "a", "\xE2\x96\x81t", "he", "\xE2\x96\x81the"}) {
      v.tokens.push_back(piece);
      v.types.push_back(lineage::text::TokenType::kNormal);
    }
    v.scores.assign(v.tokens.size(), 0.0f);
    for (size_t i = 259; i < v.tokens.size(); ++i) v.scores[i] = -static_cast<float>(i - 258);
    v.unk_id = 0, v.bos_id = 1, v.eos_id = 2;
    return lineage::text::make_tokenizer(v);
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool jsonl = (data[0] & 1) == 0;
  const std::string path = lineage::fuzz::as_file(data + 1, size - 1, jsonl ? "data.jsonl" : "data.txt");
  return lineage::fuzz::refusing_is_fine([&] {
    lineage::distill::DataOptions o;
    o.seq_len = 8 + (data[0] >> 1) % 24;
    o.pack = (data[0] & 2) != 0;
    o.valid_fraction = 0.25;
    lineage::distill::Dataset d = lineage::distill::load_dataset({path}, tokenizer(), o);
    // Every row is whole and every token id is in the vocabulary.
    for (const auto* rows : {&d.train, &d.valid}) {
      if (rows->tokens.size() != rows->mask.size() ||
          rows->tokens.size() != static_cast<size_t>(rows->rows() * (o.seq_len + 1)))
        __builtin_trap();
      for (int32_t t : rows->tokens)
        if (t < 0 || t >= tokenizer().vocab().size()) __builtin_trap();
    }
  });
}
