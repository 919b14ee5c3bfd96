// lineage prune: a teacher cut to a smaller width (and depth) by activation importance on
// calibration text (Minitron; distill/prune.h), written in the format OUT names.
#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "device.h"
#include "lineage/core/error.h"
#include "lineage/core/units.h"
#include "lineage/distill/dataset.h"
#include "lineage/distill/prune.h"
#include "lineage/io/model_file.h"

namespace lineage::cli {

Run add_prune(CLI::App& app) {
  struct Options {
    std::string model, out, calibration, dtype = "f32";
    distill::PruneTarget target;
    int64_t rows = 128, seq_len = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "prune", "Cut a model to a smaller width and depth by activation importance (Minitron): OUT ending .gguf -> GGUF, "
               ".bin -> llama2.c, else HF folder");
  cmd->add_option("--model,-m", o->model, "model to prune: HF folder, .gguf or llama2.c .bin")->required();
  cmd->add_option("--out,-o", o->out, "where to write the pruned model")->required();
  cmd->add_option("--calibration", o->calibration, "text or JSONL whose activations rank what to keep")->required();
  cmd->add_option("--dim", o->target.dim, "embedding channels to keep (heads x the head size; 0: all)");
  cmd->add_option("--heads", o->target.heads, "query heads to keep (0: dim / head size)");
  cmd->add_option("--kv-heads", o->target.kv_heads, "KV heads (groups) to keep (0: as many as the model has, at most heads)");
  cmd->add_option("--hidden", o->target.hidden, "MLP neurons to keep per layer (0: all)");
  cmd->add_option("--layers", o->target.layers, "layers to keep, by block importance (0: all)");
  cmd->add_option("--rows", o->rows, "calibration rows to read")->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "tokens per calibration row (0: the model's context, at most 256)");
  cmd->add_option("--dtype", o->dtype, "stored precision: f32, f16, bf16 (HF only)")->capture_default_str();
  return [o] {
    auto file = io::read_model(o->model);
    if (!file.tokenizer) fail("'{}' carries no tokenizer: the calibration text cannot be read into tokens", o->model);
    auto model = io::make_model(file);
    distill::DataOptions d;
    d.seq_len = o->seq_len > 0 ? o->seq_len : std::min<int64_t>(256, file.config.max_seq_len);
    d.valid_fraction = 0;
    auto data = distill::load_dataset({o->calibration}, *file.tokenizer, d);
    auto importance = distill::activation_importance(model, data.train, o->rows);
    auto plan = distill::plan_pruning(file.config, importance, o->target);
    io::ModelFile out = file;
    out.config = plan.config;
    out.weights = distill::prune_weights(file.config, file.weights, plan);
    out.provenance.clear();
    io::write_model(out, o->out, {parse_dtype(o->dtype)});
    std::cerr << fmt::format(
        "lineage prune: {} ({} parameters: dim {}, {} layers, {} heads / {} KV, hidden {}) -> {} ({} parameters: dim {}, {} "
        "layers, {} heads / {} KV, hidden {}); importance from {} rows of {} tokens of {}\n",
        o->model, group_digits(file.config.num_parameters()), file.config.dim, file.config.n_layers, file.config.n_heads,
        file.config.n_kv_heads, file.config.hidden_dim, o->out, group_digits(plan.config.num_parameters()), plan.config.dim,
        plan.config.n_layers, plan.config.n_heads, plan.config.n_kv_heads, plan.config.hidden_dim, importance.rows,
        d.seq_len, o->calibration);
  };
}

}  // namespace lineage::cli
