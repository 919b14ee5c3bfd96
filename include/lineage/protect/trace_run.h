// `lineage trace` as a library call: open the suspect (a model file or an OpenAI-compatible URL),
// choose how to read it, read it, score it against our key and, on request, calibrate against
// wrong keys. The CLI (tools/lineage/cmd_trace.cpp) only parses flags and prints.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lineage/protect/detect.h"
#include "lineage/protect/trace.h"

namespace lineage::protect {

struct TraceRequest {
  std::string suspect;      // model path or http(s):// URL
  std::string key;          // our watermark key file
  std::string text;         // plain text the suspect reads or is prompted with
  std::string reference;    // weights/logprobs: our own model without the watermark ("" : none)
  std::string tokenizer;    // our tokenizer, the watermark's ("" : the suspect's; required for a URL)
  std::vector<std::string> ours;  // files of our own watermarked outputs, never scored
  // auto, weights, logprobs, predictions or text. auto: weights for a model file; for a URL,
  // logprobs when it returns prompt log-probabilities, else text.
  std::string method = "auto";
  WatermarkParams params;
  TraceOptions trace;
  int64_t max_tokens = 200000;  // weights/predictions: tokens of `text` read at most
  int top_logprobs = 20, window = 256;  // logprobs: alternatives per position, tokens per request
  int wrong_keys = 0;                   // weights/logprobs: random keys scored for calibration
  int samples = 200, prompt_tokens = 16, gen_tokens = 64;  // text
  float temperature = 1.0f;
  uint64_t seed = 0;
  std::string api_key;  // URL suspect ("" : $LINEAGE_API_KEY); never written anywhere
  int concurrency = 8;
  std::string device = "cpu";
};

struct TraceResult {
  Verdict verdict;
  std::string method;                      // the method that ran (auto resolved)
  std::optional<Calibration> calibration;  // with wrong_keys > 0
  nlohmann::json to_json() const;
  std::string describe() const;  // the lines `lineage trace` prints
};

// Fails, naming the flag, on a combination that cannot work (a URL with --method weights, a
// reference of another vocabulary, ...), before reading anything from the suspect.
TraceResult run_trace(const TraceRequest& request);

}  // namespace lineage::protect
