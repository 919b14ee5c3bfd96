// What `lineage train` and `lineage distill` share around the trainer: the run directory
// (recipe.json, refusing to overwrite a run), provenance on resume, and the export of the result.
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "lineage/distill/recipe.h"
#include "lineage/distill/trainer.h"
#include "lineage/model/llama.h"
#include "lineage/teacher/teacher.h"
#include "lineage/text/tokenizer.h"

namespace lineage::distill {

// The recipe's teacher through teacher::open: a model file run in-process, or an OpenAI-compatible
// URL (speaking the student's tokenizer from --tokenizer or --student, its answers journaled in
// `journal_dir`/teacher-answers.db); in offline mode wrapped around the recipe's --cache.
// `api_key` is never written anywhere (empty: the HTTP teacher falls back to $LINEAGE_API_KEY).
std::unique_ptr<teacher::Teacher> open_recipe_teacher(const Recipe& r, const std::filesystem::path& journal_dir,
                                                      const std::string& api_key = "");

// Creates `out` and writes recipe.json. Without `resume`, a folder that already holds a run is
// refused (pass --resume to continue it); with it, one without a checkpoint is.
void prepare_run_dir(const std::filesystem::path& out, const Recipe& r, bool resume);

// Loads the checkpoint into `trainer` and takes start time and earlier fields from the run's
// lineage.json into `prov`.
void resume_provenance(const std::filesystem::path& out, nlohmann::json& prov, Trainer& trainer);

// Writes `model` with its tokenizer and provenance to `path` (.gguf, or an HF folder) in
// e.dtype, and records the file and its hash under prov["exports"].
void export_model(model::Llama& model, const std::shared_ptr<text::Tokenizer>& tokenizer, const ExportOptions& e,
                  nlohmann::json& prov, const std::filesystem::path& path);

}  // namespace lineage::distill
