// Watermark detection and the radioactivity test, over the green counts of watermark.h.
//
// detect: is this text watermarked with our key? Plain text is scored whole; JSONL of
// {"prompt", "completion"} pairs scores only the completions, the prompt's last h tokens seeding
// the first green lists (Kirchenbauer et al. 2023, §4).
//
// trace: was this suspect model trained on text watermarked with our key? ("Watermarking Makes
// Language Models Radioactive", Sander et al. 2024.) With the suspect's weights, it reads texts and
// at each position its top-n next-token predictions are scored as windows (the text's last h ids,
// the prediction); with only its text, its generations are scored. Windows repeat across the test
// only once, and windows that occur in the texts we feed it are never scored: a clean model
// continuing our own watermarked text would otherwise look guilty.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "lineage/protect/watermark.h"

namespace lineage::text {
class Tokenizer;
}

namespace lineage::protect {

struct Verdict {
  std::string method;        // what was scored
  int64_t documents = 0;     // texts, pairs or generations read
  int64_t tokens = 0;        // candidate windows seen (before deduplication)
  int64_t scored = 0, green = 0, repeated = 0, excluded = 0;
  double gamma = 0.25, z = 0, p_value = 1, threshold_z = 4;
  bool flagged = false;      // z > threshold_z
  std::string key_fingerprint;
  // The green-mass test (trace.h) scores contexts, not tokens: `scored` contexts whose
  // next-token probability on the green list sums to green_mass against expected_mass by chance.
  bool mass = false;
  double green_mass = 0, expected_mass = 0;
  std::optional<double> reference_mass;  // the reference model's probability on the same green lists
};

Verdict verdict_of(const GreenCounter& counter, const Watermark& wm, double threshold_z, std::string method,
                   int64_t documents, int64_t tokens);
nlohmann::json to_json(const Verdict& v);
// One line a person reads: "watermarked: z = 9.41, p = 2.4e-21 (512 tokens scored, 203 green; γ 0.25)".
std::string describe(const Verdict& v);

// Plain text as one document of ids (no BOS), or JSONL of {"prompt", "completion"} as one
// document per line: the prompt's ids (with BOS as the tokenizer adds it) then the completion's,
// `from` marking where the completion starts. A malformed line fails with its line number.
struct EncodedText {
  struct Doc {
    std::vector<int32_t> ids;
    size_t from = 0;
  };
  bool pairs = false;
  std::vector<Doc> docs;
};
EncodedText encode_text(const text::Tokenizer& tok, std::string_view input, std::string_view source);

// `input` is plain text, or JSONL (every non-empty line an object with "completion" and optionally
// "prompt"); a JSONL line that is malformed fails with its line number. `source` names the input.
Verdict detect_text(const Watermark& wm, const text::Tokenizer& tok, std::string_view input, std::string_view source,
                    double threshold_z = 4);

}  // namespace lineage::protect
