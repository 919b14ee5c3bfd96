// Tokenizer speed on adversarial and ordinary text, one JSON line: a tokenizer file (default:
// Llama 3's tokenizer.json, which scripts/llama3_tokenizer.sh unpacks into .cache/) encodes a run of
// N copies of one letter (one pre-token of N bytes: the shape a hostile prompt takes) and a piece of
// ordinary text of the same size; seconds each, and tokens/s.
//   bench_tokenize [TOKENIZER] [--repeat N] [--text FILE]
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bench_common.h"
#include "lineage/text/tokenizer.h"

int main(int argc, char** argv) {
  std::string path = std::string(LINEAGE_SOURCE_DIR) + "/.cache/npm/tokenizer-llama3/package/models/tokenizer.json";
  std::string text_file = std::string(LINEAGE_SOURCE_DIR) + "/../shared/data/text/wikitext2_test.txt";
  size_t repeat = 100000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--repeat" && i + 1 < argc) repeat = std::stoull(argv[++i]);
    else if (a == "--text" && i + 1 < argc) text_file = argv[++i];
    else path = a;
  }
  if (!std::filesystem::exists(path)) {
    lineage::bench::emit({{"bench", "tokenize"}, {"skipped", "needs " + path + " (scripts/llama3_tokenizer.sh)"}});
    return 0;
  }
  try {
    double t0 = lineage::bench::now_s();
    auto tok = lineage::text::load_tokenizer_file(path);
    const double load_s = lineage::bench::now_s() - t0;
    auto time_encode = [&](const std::string& text, size_t& n) {
      double s = lineage::bench::now_s();
      n = tok->encode(text, false).size();
      return lineage::bench::now_s() - s;
    };
    size_t n_run = 0, n_text = 0;
    const double run_s = time_encode(std::string(repeat, 'x'), n_run);
    std::string text;
    if (std::ifstream in(text_file); in) {
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str().substr(0, repeat);
    }
    const double text_s = text.empty() ? 0.0 : time_encode(text, n_text);
    lineage::bench::emit({{"bench", "tokenize"}, {"tokenizer", path}, {"load_s", load_s}, {"bytes", repeat},
                          {"one_letter_s", run_s}, {"one_letter_tokens", n_run},
                          {"text_file", text.empty() ? "" : text_file}, {"text_s", text_s}, {"text_tokens", n_text},
                          {"text_tokens_per_s", text_s > 0 ? static_cast<double>(n_text) / text_s : 0.0}});
    return 0;
  } catch (const std::exception& e) {
    lineage::bench::emit({{"bench", "tokenize"}, {"error", e.what()}});
    return 1;
  }
}
