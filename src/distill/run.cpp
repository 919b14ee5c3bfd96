// A run directory's life for train and distill. See include/lineage/distill/run.h.
#include "lineage/distill/run.h"

#include "lineage/distill/data_parallel.h"
#include "lineage/distill/provenance.h"
#include "lineage/distill/run_common.h"

namespace lineage::distill {

Run::Run(const Recipe& r, std::string verb, std::string command, bool resume)
    : recipe_(r), verb_(std::move(verb)), command_(std::move(command)), resume_(resume), out_(r.out) {
  // In a data-parallel job rank 0 alone owns the run directory (the others may be on machines
  // that do not share it); it refuses to overwrite a run before any rank trains.
  DataParallel* dp = data_parallel();
  if (!dp || dp->writes()) prepare_run_dir(out_, r, resume);
  else std::filesystem::create_directories(out_);
}

Trainer& Run::start(model::Llama& model, const TokenRows& rows, const Dataset& data, const text::Tokenizer& tokenizer,
                    const teacher::TeacherInfo* teacher, std::shared_ptr<torch::nn::Module> extra) {
  trainer_ = std::make_unique<Trainer>(model, rows, recipe_.train, out_, std::move(extra));
  prov_ = make_provenance(verb_, command_, recipe_, data, tokenizer, teacher, model->config());
  DataParallel* dp = data_parallel();
  prov_["parallel"] = {{"world_size", dp ? dp->world_size() : 1}, {"backend", dp ? dp->backend() : "none"},
                       {"global_batch_rows", recipe_.train.batch_size * (dp ? dp->world_size() : 1)}};
  if (resume_) resume_provenance(out_, prov_, *trainer_);
  return *trainer_;
}

bool Run::train(const Trainer::LossFn& loss, const Trainer::EvalFn& eval) {
  Trainer& t = *trainer_;
  t.run(loss, eval, [&](int64_t step, const nlohmann::json& e) { save_provenance(out_, prov_, step, t.tokens_seen(), e, false); });
  if (t.step() < recipe_.train.steps) {
    if (data_parallel() && !data_parallel()->writes()) return false;
    std::fprintf(stderr, "stopped at step %lld; continue with --resume %s\n", static_cast<long long>(t.step()), out_.c_str());
    return false;
  }
  return true;
}

void Run::export_model(model::Llama& model, const std::shared_ptr<text::Tokenizer>& tokenizer, const std::vector<std::string>& paths) {
  if (data_parallel() && !data_parallel()->writes()) return;
  save_final();
  for (const auto& p : paths) distill::export_model(model, tokenizer, recipe_.export_options(), prov_, out_ / p);
}

void Run::save_final() {
  if (data_parallel() && !data_parallel()->writes()) return;
  save_provenance(out_, prov_, trainer_->step(), trainer_->tokens_seen(), trainer_->last_eval(), true);
}

}  // namespace lineage::distill
