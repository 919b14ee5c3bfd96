// lineage detect: is this text watermarked with our key? (Kirchenbauer et al. 2023.)
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/protect/detect.h"

namespace lineage::cli {

Run add_detect(CLI::App& app) {
  struct Options {
    std::string key, tokenizer, input, json_out;
    protect::WatermarkParams params;
    double threshold = 4;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("detect", "Tell whether text carries our watermark: green tokens, z-score, exact p-value");
  sub->add_option("--key", o->key, "watermark key file")->required();
  sub->add_option("--tokenizer,-m,--model", o->tokenizer,
                  "the watermarked model's tokenizer: a tokenizer file or the model (GGUF/HF/llama2.c)")->required();
  sub->add_option("input", o->input, "plain text, or JSONL of {\"prompt\", \"completion\"} (prompts not scored); - for stdin")
      ->required();
  sub->add_option("--gamma", o->params.gamma, "green share the text was watermarked with")->capture_default_str();
  sub->add_option("--context", o->params.context, "h the text was watermarked with")->capture_default_str();
  sub->add_option("--threshold", o->threshold, "z above which the text is called watermarked")->capture_default_str();
  sub->add_option("--json", o->json_out, "write the verdict as JSON here");
  return [o] {
    protect::Watermark wm(protect::WatermarkKey::read(o->key), o->params);
    auto tok = io::load_tokenizer(o->tokenizer);
    std::string text;
    if (o->input == "-")
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    else
      text = read_file(o->input);
    auto v = protect::detect_text(wm, *tok, text, o->input == "-" ? "stdin" : o->input, o->threshold);
    std::cout << protect::describe(v) << "\n";
    if (!o->json_out.empty()) write_file_atomic(o->json_out, protect::to_json(v).dump(2) + "\n");
  };
}

}  // namespace lineage::cli
