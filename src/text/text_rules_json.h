// tokenizer.json's text rules (text_rules.h) read from and written to its JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "lineage/text/text_rules.h"

namespace lineage::text {

// The "normalizer", "pre_tokenizer" and "decoder" of a tokenizer.json; fails naming `path` and any
// step type it does not apply.
TextRules read_text_rules(const nlohmann::json& tokenizer_json, const std::string& path);
// Sets those three keys of `tokenizer_json` (null where a list is empty).
void write_text_rules(const TextRules& rules, nlohmann::json& tokenizer_json);

}  // namespace lineage::text
