// A compiled PCRE2 expression (UTF, Unicode properties, JIT) for the tokenizers' split patterns.
// Text given to it must be well-formed UTF-8 (callers cut invalid bytes out first).
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lineage/core/error.h"
#include "lineage/text/utf8.h"

namespace lineage::text {

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& source) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      fail("tokenizer '{}': pattern '{}' does not compile at offset {}: {}", source, pattern, off,
           reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-overlapping match, left to right, as [begin, end) byte offsets (empty ones too).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, PCRE2_NO_UTF_CHECK, md,
                           nullptr);
      if (rc < 0) break;
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      out.emplace_back(ov[0], ov[1]);
      if (ov[1] > ov[0]) start = ov[1];
      else if (ov[1] < text.size()) start = ov[1] + utf8::seq_len(static_cast<unsigned char>(text[ov[1]]));
      else break;
    }
    pcre2_match_data_free(md);
    return out;
  }

  // Splits `text` into matches and the gaps between them ("isolated" behaviour), in order.
  void split(std::string_view text, std::vector<std::string_view>& out) const {
    size_t last = 0;
    for (auto [b, e] : find_all(text)) {
      if (b > last) out.push_back(text.substr(last, b - last));
      if (e > b) out.push_back(text.substr(b, e - b));
      last = e;
    }
    if (last < text.size()) out.push_back(text.substr(last));
  }

 private:
  pcre2_code* code_ = nullptr;
};

}  // namespace lineage::text
