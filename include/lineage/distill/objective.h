// How a distillation mode turns a batch into a loss. One Objective per mode, one file each under
// src/distill/modes/ (online, offline, seq_kd, on_policy); make_objective picks it. A new mode is
// one new file and one line in make_objective.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "lineage/distill/dataset.h"
#include "lineage/distill/hidden_loss.h"
#include "lineage/distill/recipe.h"
#include "lineage/distill/trainer.h"
#include "lineage/model/llama.h"
#include "lineage/teacher/teacher.h"

namespace lineage::distill {

// What a mode works with. References: the caller keeps them alive for the objective's life.
struct ObjectiveContext {
  const Recipe& recipe;
  model::Llama student;             // shares the module with the caller's holder
  teacher::Teacher& teacher;
  const Dataset& data;
  std::function<int64_t()> step;    // the trainer's step count (seeds that repeat on resume)
  HiddenDistill hidden{nullptr};    // --hidden-loss: the hidden-state term and its projections
};

class Objective {
 public:
  virtual ~Objective() = default;
  // Work that writes into the run directory (seq_kd: the teacher's completions), done once the
  // run directory is prepared.
  virtual void prepare(const std::filesystem::path& out) {}
  // The rows this mode trains on: the data's training split, or what prepare() made of it.
  virtual const TokenRows& train_rows() const = 0;
  // Weights the objective trains beside the student (null: none).
  virtual std::shared_ptr<torch::nn::Module> trainable() { return nullptr; }
  // The loss of one micro-batch: tokens (B, T+1) int64, mask (B, T+1) bool, the batch's row
  // indices in train_rows(), the optimizer step.
  virtual StepResult loss(const torch::Tensor& tokens, const torch::Tensor& mask, const std::vector<int64_t>& rows,
                          int64_t step) = 0;
};

// The recipe's mode. Checks what the mode needs (a cache that matches the teacher and data) and
// fails before anything is written.
std::unique_ptr<Objective> make_objective(const ObjectiveContext& c);

}  // namespace lineage::distill
