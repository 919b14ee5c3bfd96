// lineage.json: where a model came from — teacher (source, content hash, license), tokenizer hash,
// data files with hashes, the full recipe, the command, tokens seen, start/update/end times, the tool
// version and the latest evaluation. Rewritten atomically at every checkpoint and at the end; the
// exported GGUF / HF files carry a copy (io::ModelFile::provenance).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "lineage/distill/dataset.h"
#include "lineage/distill/recipe.h"
#include "lineage/model/config.h"
#include "lineage/teacher/teacher.h"
#include "lineage/text/tokenizer.h"

namespace lineage::distill {

// The record at the start of a run. `kind` is "train" or "distill"; teacher may be null.
nlohmann::json make_provenance(const std::string& kind, const std::string& command, const Recipe& recipe,
                               const Dataset& data, const text::Tokenizer& tokenizer,
                               const teacher::TeacherInfo* teacher, const model::ModelConfig& model);

// Stamps progress (step, tokens seen, latest evaluation, update time; end time when `finished`)
// into `p` and writes run_dir/lineage.json atomically.
void save_provenance(const std::filesystem::path& run_dir, nlohmann::json& p, int64_t step, int64_t tokens_seen,
                     const nlohmann::json& eval, bool finished);

// "2026-11-22T14:03:51Z"
std::string utc_now();

}  // namespace lineage::distill
