// lineage train: pre-train a model with cross-entropy (how the embedded default teacher is made).
#include "commands.h"
#include "lineage/distill/jobs.h"
#include "recipe_flags.h"

namespace lineage::cli {

Run add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "pre-train a language model on text (cross-entropy)");
  auto flags = std::make_shared<RecipeFlags>();
  flags->add(sub, /*distill=*/false);
  return [flags] {
    bool resume = false;
    distill::Recipe r = flags->recipe(resume);
    distill::run_train(r, command_line(), resume);
  };
}

}  // namespace lineage::cli
