// lineage eval: quality and cost of a model, beside its teacher's when given.
#include <torch/torch.h>

#include <iostream>
#include <memory>

#include "commands.h"
#include "lineage/eval/eval_run.h"
#include "lineage/model/cpu_decoder.h"

namespace lineage::cli {

Run add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "perplexity, teacher agreement, benchmarks and cost; teacher and model side by side");
  auto o = std::make_shared<eval::EvalOptions>();
  auto threads = std::make_shared<int>(0);
  auto no_cost = std::make_shared<bool>(false);
  sub->add_option("-m,--model", o->model, "model: HF folder, .gguf or llama2.c .bin")->required();
  sub->add_option("--teacher", o->teacher, "a second model to compare with (its column, KL and agreement)");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer for models without one (llama2.c)");
  sub->add_option("--task", o->tasks,
                  "benchmark file(s): JSONL {query, choices, gold} (multiple choice), JSONL {context, continuation} "
                  "(cloze), or llama.cpp's HellaSwag text (6 lines per item); the kind is detected")
      ->expected(1, -1);
  sub->add_option("--text", o->text, "text file for perplexity (and agreement with --teacher)");
  sub->add_option("--json", o->json_out, "write the results here (JSON)");
  sub->add_option("--limit", o->limit, "first N items of each task (0: all)")->capture_default_str();
  sub->add_option("--text-limit", o->text_limit, "first N tokens of the text (0: all)")->capture_default_str();
  sub->add_option("--window", o->window, "perplexity window in tokens (0: the model's context)")->capture_default_str();
  sub->add_option("--ppl-method", o->ppl_method,
                  "sliding: every token scored once with a sliding window; chunks: llama-perplexity's method "
                  "(non-overlapping windows, BOS first, second half of each scored) to compare with llama.cpp's figures")
      ->capture_default_str();
  sub->add_option("--stride", o->stride, "perplexity stride (0: half the window), as llama-perplexity --ppl-stride")
      ->capture_default_str();
  sub->add_option("--batch-tokens", o->max_batch_tokens, "padded tokens per forward pass when scoring tasks")
      ->capture_default_str();
  sub->add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_option("--dtype", o->dtype, "f32, f16 or bf16")->capture_default_str();
  sub->add_option("--threads", *threads, "CPU threads for OpenBLAS and libtorch together; 0 = the libraries' defaults")->capture_default_str();
  sub->add_flag("--no-cost", *no_cost, "skip the speed and memory measurements");
  sub->add_flag("-q,--quiet", o->quiet, "no progress output");
  return [o, threads, no_cost] {
    model::set_cpu_threads(*threads);
    o->cost = !*no_cost;
    auto result = eval::run_eval(*o);
    std::cout << eval::format_eval(result);
    if (!o->json_out.empty()) std::cout << "results: " << o->json_out << "\n";
  };
}

}  // namespace lineage::cli
