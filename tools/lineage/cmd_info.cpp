// lineage info: what a model file is.
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "lineage/io/model_file.h"

namespace lineage::cli {

namespace {

uint64_t bytes_on_disk(const std::filesystem::path& p) {
  if (!std::filesystem::is_directory(p)) return std::filesystem::file_size(p);
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(p))
    if (e.is_regular_file()) total += e.file_size();
  return total;
}

}  // namespace

Run add_info(CLI::App& app) {
  struct Options {
    std::string path, tokenizer;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("info", "Architecture, parameters, dtype, tokenizer and size of a model");
  cmd->add_option("PATH", o->path, "Model: HF folder, .gguf, or llama2.c .bin")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer file, when the model has none beside it");
  cmd->add_flag("--json", o->json, "One JSON object instead of text");
  return [o] {
    auto m = io::read_model(o->path, o->tokenizer);
    const auto& c = m.config;
    nlohmann::json j = {{"path", o->path},
                        {"format", io::format_name(m.format)},
                        {"name", m.name},
                        {"config", model::to_json(c)},
                        {"parameters", c.num_parameters()},
                        {"dtype", m.stored_dtype},
                        {"file_bytes", bytes_on_disk(o->path)},
                        {"flops_per_token", c.flops_per_token(c.max_seq_len / 2)},
                        {"tokenizer", m.tokenizer ? m.tokenizer->describe() : "none"}};
    if (o->json) {
      std::cout << j.dump() << "\n";
      return;
    }
    std::cout << fmt::format(
        "model        {}\nformat       {}\narchitecture {} (dim {}, {} layers, {} heads, {} kv heads, mlp {}, vocab {}, "
        "context {}{}{})\nparameters   {}\ndtype        {}\nfile size    {} bytes\ntokenizer    {}\n",
        o->path, io::format_name(m.format), c.arch, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim,
        c.vocab_size, c.max_seq_len, c.tie_embeddings ? ", tied embeddings" : "", c.qkv_bias ? ", qkv bias" : "",
        c.num_parameters(), m.stored_dtype, j["file_bytes"].get<uint64_t>(), j["tokenizer"].get<std::string>());
  };
}

}  // namespace lineage::cli
