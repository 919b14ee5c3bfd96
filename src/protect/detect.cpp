// Watermark detection on text. See include/lineage/protect/detect.h.
#include "lineage/core/json.h"
#include "lineage/protect/detect.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/text/tokenizer.h"

namespace lineage::protect {

using json = nlohmann::json;

Verdict verdict_of(const GreenCounter& c, const Watermark& wm, double threshold_z, std::string method,
                   int64_t documents, int64_t tokens) {
  Verdict v;
  v.method = std::move(method);
  v.documents = documents;
  v.tokens = tokens;
  v.scored = c.scored();
  v.green = c.green();
  v.repeated = c.repeated();
  v.excluded = c.excluded();
  v.gamma = wm.params().gamma;
  v.z = c.z();
  v.p_value = c.p_value();
  v.threshold_z = threshold_z;
  v.flagged = v.scored > 0 && v.z > threshold_z;
  v.key_fingerprint = wm.fingerprint();
  return v;
}

json to_json(const Verdict& v) {
  return {{"method", v.method},   {"documents", v.documents}, {"tokens", v.tokens},
          {"scored", v.scored},   {"green", v.green},         {"repeated_windows", v.repeated},
          {"excluded_windows", v.excluded}, {"gamma", v.gamma}, {"z", v.z},
          {"p_value", v.p_value}, {"threshold_z", v.threshold_z}, {"flagged", v.flagged},
          {"key_fingerprint", v.key_fingerprint}, {"statistic", v.mass ? "green mass" : "green tokens"},
          {"green_mass", v.green_mass}, {"expected_mass", v.expected_mass},
          {"reference_mass", v.reference_mass ? json(*v.reference_mass) : json(nullptr)}};
}

namespace {
// "= 3.2e-05", or "< 1e-300" where the tail underflows a double (z above ~37).
std::string p_text(double p) { return p > 0 ? fmt::format("= {:.3g}", p) : "< 1e-300"; }
}  // namespace

std::string describe(const Verdict& v) {
  if (v.scored == 0) return "no verdict: no token could be scored";
  if (v.mass)
    return fmt::format("{}: z = {:.2f}, p {} ({} distinct contexts scored; probability on the green lists "
                       "{:.2f}% against {:.2f}% by chance{}; {} repeated contexts skipped; threshold z > {})",
                       v.flagged ? "WATERMARKED" : "not watermarked", v.z, p_text(v.p_value), v.scored,
                       100 * v.green_mass / v.scored, 100 * v.expected_mass / v.scored,
                       v.reference_mass ? fmt::format(" and {:.2f}% for the reference", 100 * *v.reference_mass / v.scored) : "",
                       v.repeated, v.threshold_z);
  return fmt::format("{}: z = {:.2f}, p {} ({} tokens scored, {} green, {:.1f}% against {:.0f}% by chance; "
                     "{} repeated and {} excluded windows skipped; threshold z > {})",
                     v.flagged ? "WATERMARKED" : "not watermarked", v.z, p_text(v.p_value), v.scored, v.green,
                     100.0 * v.green / v.scored, 100.0 * v.gamma, v.repeated, v.excluded, v.threshold_z);
}

namespace {

// JSONL when the first non-blank character opens an object and that line parses as one.
bool looks_like_jsonl(std::string_view input) {
  size_t i = input.find_first_not_of(" \t\r\n");
  if (i == std::string_view::npos || input[i] != '{') return false;
  size_t end = input.find('\n', i);
  auto line = input.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i);
  auto j = parse_json_or_discarded(line);
  return j.is_object();
}

}  // namespace

EncodedText encode_text(const text::Tokenizer& tok, std::string_view input, std::string_view source) {
  EncodedText out;
  if (!looks_like_jsonl(input)) {
    out.docs.push_back({tok.encode(input, /*add_bos=*/false), 0});
    return out;
  }
  out.pairs = true;
  size_t line_no = 0, pos = 0;
  while (pos <= input.size()) {
    size_t end = input.find('\n', pos);
    if (end == std::string_view::npos) end = input.size();
    auto line = input.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto j = parse_json_or_discarded(line);
    if (j.is_discarded() || !j.is_object())
      fail("{}: line {} is not a JSON object (expected {{\"prompt\": ..., \"completion\": ...}})", source, line_no);
    if (!j.contains("completion") || !j["completion"].is_string())
      fail("{}: line {} needs a string field \"completion\"", source, line_no);
    if (j.contains("prompt") && !j["prompt"].is_string())
      fail("{}: line {}: \"prompt\" must be a string", source, line_no);
    std::string prompt = j.value("prompt", std::string());
    std::string completion = j["completion"].get<std::string>();
    // The completion followed the prompt's tokens when it was written: it comes after them, as
    // one encoding when that splits at the boundary, else as the two encodings joined.
    auto p = tok.encode(prompt, tok.vocab().add_bos);
    auto full = tok.encode(prompt + completion, tok.vocab().add_bos);
    if (!(full.size() >= p.size() && std::equal(p.begin(), p.end(), full.begin()))) {
      full = p;
      auto c = tok.encode(completion, false);
      full.insert(full.end(), c.begin(), c.end());
    }
    out.docs.push_back({std::move(full), p.size()});
  }
  return out;
}

Verdict detect_text(const Watermark& wm, const text::Tokenizer& tok, std::string_view input, std::string_view source,
                    double threshold_z) {
  GreenCounter counter(wm);
  auto enc = encode_text(tok, input, source);
  if (!enc.pairs) {
    const auto& ids = enc.docs[0].ids;
    int64_t tokens = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - wm.params().context);
    counter.add(ids);
    return verdict_of(counter, wm, threshold_z, "plain text", ids.empty() ? 0 : 1, tokens);
  }
  int64_t tokens = 0;
  for (const auto& d : enc.docs) {
    tokens += static_cast<int64_t>(d.ids.size() - d.from);
    counter.add(d.ids, d.from);
  }
  return verdict_of(counter, wm, threshold_z, "completions of prompt/completion pairs (prompts not scored)",
                    static_cast<int64_t>(enc.docs.size()), tokens);
}

}  // namespace lineage::protect
