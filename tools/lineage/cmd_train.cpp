// lineage train: pre-train a model with cross-entropy (how the embedded default teacher is made).
#include "commands.h"
#include "lineage/distill/jobs.h"
#include "parallel_flags.h"
#include "recipe_flags.h"

namespace lineage::cli {

Run add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "pre-train a language model on text (cross-entropy)");
  auto flags = std::make_shared<RecipeFlags>();
  flags->add(sub, /*distill=*/false);
  auto parallel = std::make_shared<ParallelFlags>();
  parallel->add(sub, /*training=*/true);
  return [flags, parallel] {
    bool resume = false;
    distill::Recipe r = flags->recipe(resume);
    if (parallel->launched()) return;
    auto job = parallel->join(r.device);
    distill::run_train(r, command_line(), resume);
  };
}

}  // namespace lineage::cli
