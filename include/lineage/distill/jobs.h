// The three jobs of the distill module, each from a Recipe (distill/recipe.h): `lineage train`,
// `lineage distill` and `lineage cache`.
#pragma once
#include <cstdint>
#include <string>

#include "lineage/distill/recipe.h"

namespace lineage::distill {

// lineage train: plain pre-training with cross-entropy. Resumes when `resume` (the run directory
// must hold a checkpoint). `command` is recorded in lineage.json.
void run_train(Recipe recipe, const std::string& command, bool resume);

// lineage distill: open teacher -> make student -> objective -> Run -> export.
// `api_key`: an HTTP teacher's key, never written to the run (empty: $LINEAGE_API_KEY).
void run_distill(Recipe recipe, const std::string& command, bool resume, const std::string& api_key = "");

// lineage cache: the teacher's top-k (r.top_k) for every row of the train and validation splits
// of r.data (split and packed by r.data_options, as `lineage distill` will), written to r.out.
void run_cache(const Recipe& r, int64_t rows_per_shard, const std::string& api_key = "");

}  // namespace lineage::distill
