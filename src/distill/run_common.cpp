// Run directories, resume and export shared by train and distill (see run_common.h).
#include "lineage/core/json.h"
#include "lineage/distill/run_common.h"

#include "lineage/core/device.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/hash.h"
#include "lineage/distill/provenance.h"
#include "lineage/io/model_file.h"
#include "lineage/distill/checkpoint.h"
#include "lineage/teacher/open.h"

namespace lineage::distill {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::unique_ptr<teacher::Teacher> open_recipe_teacher(const Recipe& r, const fs::path& journal_dir, const std::string& api_key) {
  if (r.teacher.empty()) fail("no teacher given (--teacher MODEL or URL)");
  teacher::TeacherSpec spec;
  spec.source = r.teacher;
  spec.device = parse_device(r.device);
  if (r.mode == Mode::kOffline) spec.cache = r.cache;
  if (teacher::is_url(r.teacher)) {
    auto& ho = spec.http;
    ho.model = r.teacher_model;
    ho.api_key = api_key;
    ho.concurrency = static_cast<int>(std::max<int64_t>(1, r.concurrency));
    ho.max_retry_after_s = r.teacher_max_retry_after;
    ho.retry_budget_s = r.teacher_retry_budget;
    if (!r.tokenizer.empty()) ho.tokenizer = io::load_tokenizer(r.tokenizer);
    else if (!r.student.empty()) ho.tokenizer = io::read_model(r.student).tokenizer;
    fs::create_directories(journal_dir);
    ho.journal = (journal_dir / "teacher-answers.db").string();
  }
  return teacher::open(spec);
}

void prepare_run_dir(const fs::path& out, const Recipe& r, bool resume) {
  fs::create_directories(out);
  bool has_run = has_checkpoint(out);
  if (resume && !has_run) fail("cannot resume '{}': it holds no checkpoint", out.string());
  if (!resume && has_run)
    fail("'{}' already holds a run; continue it with --resume {}, or choose another --out", out.string(), out.string());
  if (!resume) {
    fs::remove(out / "metrics.jsonl");
    write_file_atomic(out / "recipe.json", r.to_json().dump(2) + "\n");
  }
}

void resume_provenance(const fs::path& out, json& prov, Trainer& trainer) {
  if (!trainer.resume()) fail("cannot resume '{}': it holds no checkpoint", out.string());
  // The command that started the run stays the run's command; each resume is listed with its own.
  const std::string resume_command = prov.value("command", std::string());
  json resumes = json::array();
  if (fs::exists(out / "lineage.json")) {
    json old = parse_json_or_discarded(read_file(out / "lineage.json"));
    if (old.is_object()) {
      if (old.contains("started_at")) prov["started_at"] = old["started_at"];
      if (old.contains("command") && old["command"].is_string()) prov["command"] = old["command"];
      if (old.contains("resumed") && old["resumed"].is_array()) resumes = old["resumed"];
    }
  }
  resumes.push_back({{"step", trainer.step()}, {"time", utc_now()}, {"command", resume_command}});
  prov["resumed"] = resumes;
  std::fprintf(stderr, "resuming '%s' at step %lld\n", out.c_str(), static_cast<long long>(trainer.step()));
}

void export_model(model::Llama& model, const std::shared_ptr<text::Tokenizer>& tokenizer, const ExportOptions& e, json& prov,
                  const fs::path& path) {
  io::ModelFile mf;
  mf.config = model->config();
  for (const auto& [name, t] : model->weights()) mf.weights[name] = t.detach().to(torch::kCPU, torch::kFloat32);
  mf.tokenizer = tokenizer;
  mf.name = e.name;
  mf.path = path.string();
  if (!e.license.empty())
    mf.license = e.license;
  else if (prov.contains("teacher") && prov["teacher"].is_object() && prov["teacher"]["license"].is_string())
    mf.license = prov["teacher"]["license"].get<std::string>();
  prov["license"] = mf.license.empty() ? json(nullptr) : json(mf.license);
  mf.provenance = prov.dump(2);
  io::WriteOptions wo;
  wo.dtype = parse_dtype(e.dtype);
  io::write_model(mf, path.string(), wo);
  prov["exports"][path.filename().string()] = {{"path", path.string()}, {"sha256", hex(sha256_file(path))},
                                               {"dtype", e.dtype}};
}

}  // namespace lineage::distill
