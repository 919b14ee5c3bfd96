// lineage.json (see provenance.h).
#include "lineage/distill/provenance.h"

#include <ctime>

#include "lineage/core/file.h"
#include "lineage/core/hash.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::distill {
using json = nlohmann::json;

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json make_provenance(const std::string& kind, const std::string& command, const Recipe& recipe, const Dataset& data,
                     const text::Tokenizer& tokenizer, const teacher::TeacherInfo* teacher,
                     const model::ModelConfig& model) {
  json files = json::array();
  for (const auto& f : data.files)
    files.push_back({{"path", f.path}, {"sha256", f.sha256}, {"format", f.format}, {"examples", f.examples}, {"bytes", f.bytes}});
  json p = {
      {"lineage_format", 1},
      {"kind", kind},
      {"tool", {{"name", "lineage"}, {"version", LINEAGE_VERSION}}},
      {"command", command},
      {"teacher", teacher ? teacher->to_json() : json(nullptr)},
      {"tokenizer", {{"sha256", hex(text::vocab_digest(tokenizer.vocab()))}, {"vocab_size", tokenizer.vocab_size()},
                     {"description", tokenizer.describe()}}},
      {"data", {{"files", files},
                {"train_examples", data.train_examples},
                {"valid_examples", data.valid_examples},
                {"train_rows", data.train.rows()},
                {"valid_rows", data.valid.rows()},
                {"train_target_tokens", data.train.target_tokens()}}},
      {"recipe", recipe.to_json()},
      {"model", {{"config", model::to_json(model)}, {"parameters", model.num_parameters()}}},
      {"started_at", utc_now()},
      {"finished_at", nullptr},
  };
  return p;
}

void save_provenance(const std::filesystem::path& run_dir, json& p, int64_t step, int64_t tokens_seen, const json& eval,
                     bool finished) {
  p["steps_done"] = step;
  p["tokens_seen"] = tokens_seen;
  p["updated_at"] = utc_now();
  if (!eval.is_null() && !eval.empty()) p["evaluation"] = eval;
  if (finished) p["finished_at"] = utc_now();
  write_file_atomic(run_dir / "lineage.json", p.dump(2) + "\n");
}

}  // namespace lineage::distill
