// A run directory's life, the same for `lineage train` and `lineage distill`: recipe.json (a run
// is never overwritten, and only a run with a checkpoint is resumed), the trainer, provenance
// (lineage.json) at every checkpoint, the message when a run stops early, the final provenance
// and the exports.
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/distill/dataset.h"
#include "lineage/distill/recipe.h"
#include "lineage/distill/trainer.h"
#include "lineage/model/llama.h"
#include "lineage/teacher/teacher.h"
#include "lineage/text/tokenizer.h"

namespace lineage::distill {

class Run {
 public:
  // Prepares the recipe's run directory (r.out): refuses to overwrite a run, or to resume one
  // without a checkpoint; a new run's recipe.json is written.
  Run(const Recipe& r, std::string verb, std::string command, bool resume);
  const std::filesystem::path& out() const { return out_; }

  // The trainer for `model` on `rows`, with its provenance (data, tokenizer, teacher when there is
  // one), resumed from the latest checkpoint when the run was opened to resume.
  Trainer& start(model::Llama& model, const TokenRows& rows, const Dataset& data, const text::Tokenizer& tokenizer,
                 const teacher::TeacherInfo* teacher, std::shared_ptr<torch::nn::Module> extra = nullptr);
  Trainer& trainer() { return *trainer_; }
  nlohmann::json& provenance() { return prov_; }

  // Trains to the recipe's last step, provenance rewritten at every checkpoint. False when it
  // stopped before (SIGINT/SIGTERM): a checkpoint is kept and the message says how to continue.
  bool train(const Trainer::LossFn& loss, const Trainer::EvalFn& eval);

  // Marks the provenance final and writes `model` to each of `paths` (.gguf, or an HF folder),
  // recording every export in the provenance.
  void export_model(model::Llama& model, const std::shared_ptr<text::Tokenizer>& tokenizer, const std::vector<std::string>& paths);
  // Rewrites the final provenance (after adding to provenance()).
  void save_final();

 private:
  const Recipe& recipe_;
  std::string verb_, command_;
  bool resume_;
  std::filesystem::path out_;
  std::unique_ptr<Trainer> trainer_;
  nlohmann::json prov_;
};

}  // namespace lineage::distill
