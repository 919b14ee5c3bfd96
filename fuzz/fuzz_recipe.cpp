// A recipe file (lineage distill --recipe FILE): resolved as the CLI resolves it (file, then the
// defaults), every option checked, written back to JSON, and the student's model configuration
// made from it.
#include "fuzz_common.h"
#include "lineage/distill/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lineage::fuzz::as_file(data, size, "recipe.json");
  return lineage::fuzz::refusing_is_fine([&] {
    lineage::distill::RecipeSources sources;
    sources.recipe_file = path;
    lineage::distill::Recipe r = lineage::distill::resolve_recipe(sources);
    auto again = lineage::distill::Recipe::from_json(r.to_json(), "round trip");
    if (again.to_json() != r.to_json()) __builtin_trap();  // a recipe must survive its own JSON
    r.model_config(512).validate("recipe");
  });
}
