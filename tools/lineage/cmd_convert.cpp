// lineage convert: between llama2.c, Hugging Face safetensors folders and GGUF.
#include <iostream>

#include "commands.h"
#include "device.h"
#include "lineage/io/model_file.h"

namespace lineage::cli {

Run add_convert(CLI::App& app) {
  struct Options {
    std::string in, out, tokenizer, dtype = "f32";
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("convert", "Convert a model: OUT ending .gguf -> GGUF, .bin -> llama2.c, else HF folder");
  cmd->add_option("IN", o->in, "Model to read")->required();
  cmd->add_option("OUT", o->out, "Where to write")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer to carry along, when IN has none beside it");
  cmd->add_option("--dtype", o->dtype, "Stored precision: f32, f16, bf16 (HF only)")->capture_default_str();
  return [o] {
    auto m = io::read_model(o->in, o->tokenizer);
    io::write_model(m, o->out, {parse_dtype(o->dtype)});
    std::cerr << fmt::format("lineage: {} ({}) -> {} ({}, {}){}\n", o->in, io::format_name(m.format), o->out,
                             io::format_name(io::detect_format(o->out)), o->dtype,
                             m.tokenizer ? "" : "; no tokenizer carried (pass --tokenizer)");
  };
}

}  // namespace lineage::cli
