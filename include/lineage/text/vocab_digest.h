// A content hash of a vocabulary: two tokenizers with the same digest split every text into the
// same ids. Teacher caches and provenance record it; a cache built with another tokenizer is refused.
#pragma once
#include "lineage/core/hash.h"
#include "lineage/text/vocab.h"

namespace lineage::text {

// SHA-256 over the model kind, tokens, scores, types, merges, pre-tokenizer and special ids.
Digest vocab_digest(const Vocab& v);

}  // namespace lineage::text
