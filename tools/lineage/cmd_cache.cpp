// lineage cache: precompute a teacher's top-k log-probabilities for offline distillation.
#include <memory>

#include <cstdlib>

#include "commands.h"
#include "lineage/distill/jobs.h"
#include "parallel_flags.h"

namespace lineage::cli {

Run add_cache(CLI::App& app) {
  auto* sub = app.add_subcommand("cache", "precompute the teacher's top-k log-probabilities over the data (offline KD)");
  auto r = std::make_shared<distill::Recipe>();
  auto rows_per_shard = std::make_shared<int64_t>(1024);
  auto api_key = std::make_shared<std::string>();
  r->top_k = 20;
  sub->add_option("--teacher", r->teacher, "teacher model: HF folder, .gguf, llama2.c .bin, or an OpenAI-compatible http(s)://.../v1 URL")->required();
  sub->add_option("--tokenizer", r->tokenizer, "HTTP teacher: the student's tokenizer (answers are mapped onto it)");
  sub->add_option("--teacher-model", r->teacher_model, "HTTP teacher: model id (default: the first listed)");
  sub->add_option("--concurrency", r->concurrency, "HTTP teacher: requests in flight")->capture_default_str();
  sub->add_option("--api-key", *api_key, "HTTP teacher: API key (default: $LINEAGE_API_KEY)");
  sub->add_option("--data", r->data, "data files, as for lineage distill")->required()->expected(1, -1);
  sub->add_option("--top-k", r->top_k, "tokens kept per position, with their log-probabilities")->capture_default_str();
  sub->add_option("--tail-samples", r->tail_samples,
                  "tokens drawn per position from the teacher's distribution beyond the top k, each standing for 1/m of "
                  "that mass: unbiased KD (Random-Sampling KD, Anshumann et al. 2025); 0: the rest is one tail bucket")
      ->capture_default_str();
  sub->add_option("--seed", r->train.seed, "seed of the tail draws")->capture_default_str();
  sub->add_option("--out", r->out, "cache directory")->required();
  sub->add_option("--seq-len", r->data_options.seq_len, "context length of the rows (must match distill)")->capture_default_str();
  sub->add_option("--valid-fraction", r->data_options.valid_fraction, "validation share (must match distill)")->capture_default_str();
  sub->add_option("--split-seed", r->data_options.split_seed, "split seed (must match distill)")->capture_default_str();
  sub->add_flag("--pack,!--no-pack", r->data_options.pack, "pack examples into rows (must match distill)");
  sub->add_option("--max-examples", r->data_options.max_examples, "examples per file (0: all; must match distill)");
  sub->add_option("--batch-size", r->train.batch_size, "rows per teacher forward pass")->capture_default_str();
  sub->add_option("--rows-per-shard", *rows_per_shard, "rows per shard file")->capture_default_str();
  sub->add_option("--device", r->device, "cpu, cuda or cuda:N")->capture_default_str();
  auto parallel = std::make_shared<ParallelFlags>();
  parallel->add(sub, /*training=*/false);
  return [r, rows_per_shard, api_key, parallel] {
    if (parallel->launched()) return;
    auto job = parallel->join(r->device);
    distill::run_cache(*r, *rows_per_shard, *api_key);  // the key is never written into a file
  };
}

}  // namespace lineage::cli
