// The training loop shared by `lineage train` (plain cross-entropy) and `lineage distill` (any
// loss): AdamW with decoupled weight decay (Loshchilov & Hutter 2019) on matrices only, linear
// warmup then cosine decay to a floor, global-norm gradient clipping, gradient accumulation,
// optional bf16 autocast, evaluation and checkpoints every N steps.
//
// A run directory holds
//   metrics.jsonl                 one line per step ({"step", "loss", "lr", ...}) and per evaluation
//   checkpoints/step-NNNNNNN/     state.pt (weights, AdamW moments, torch RNG) + trainer.json (step,
//                                 data cursor, tokens seen); written as step-N.tmp and renamed, so a
//                                 kill at any moment leaves only whole checkpoints
//   checkpoints/latest            the name of the newest whole checkpoint (replaced atomically)
// Resuming loads the latest checkpoint and cuts metrics.jsonl back to its step: on the CPU the
// losses of every later step are bit-identical to those of an uninterrupted run.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lineage/distill/batch.h"
#include "lineage/distill/dataset.h"
#include "lineage/distill/options.h"
#include "lineage/model/llama.h"

namespace lineage::distill {

// Learning rate at `step` (0-based) of `o.steps`.
double learning_rate(const TrainOptions& o, int64_t step);

// What one micro-batch contributes.
struct StepResult {
  torch::Tensor loss;                    // scalar, differentiable
  int64_t tokens = 0;                    // positions processed (for tokens/s)
  std::map<std::string, double> stats;   // logged as they are (e.g. "kd", "ce")
};

class Trainer {
 public:
  // tokens (B, T+1) int64, mask (B, T+1) bool for one micro-batch at optimizer step `step`.
  // `rows` are the indices of the batch's rows in the training split (a teacher cache is keyed by them).
  using LossFn = std::function<StepResult(const torch::Tensor& tokens, const torch::Tensor& mask,
                                          const std::vector<int64_t>& rows, int64_t step)>;
  using EvalFn = std::function<nlohmann::json(int64_t step)>;
  // Called after each checkpoint is in place (provenance is updated there).
  using CheckpointFn = std::function<void(int64_t step, const nlohmann::json& last_eval)>;

  // `extra`: more trainable weights beside the model's (a hidden-state projection), optimised with
  // it and kept in its checkpoints (null: none).
  Trainer(model::Llama model, const TokenRows& train, TrainOptions options, std::filesystem::path run_dir,
          std::shared_ptr<torch::nn::Module> extra = nullptr);

  // Loads checkpoints/latest when there is one; false when the run has none.
  bool resume();
  void run(const LossFn& loss, const EvalFn& eval, const CheckpointFn& on_checkpoint = {});

  int64_t step() const { return step_; }
  int64_t tokens_seen() const { return tokens_seen_; }
  const nlohmann::json& last_eval() const { return last_eval_; }
  const TrainOptions& options() const { return options_; }
  torch::optim::AdamW& optimizer() { return *optimizer_; }

  // SIGINT/SIGTERM make run() stop after the current step with a checkpoint.
  static std::atomic<bool>& stop_requested();

 private:
  model::Llama model_;
  std::shared_ptr<torch::nn::Module> extra_;
  const TokenRows& train_;
  TrainOptions options_;
  std::filesystem::path run_dir_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  DataCursor cursor_;
  int64_t step_ = 0, tokens_seen_ = 0;
  double elapsed_before_ = 0;  // seconds spent before a resume
  nlohmann::json last_eval_;

  void save_checkpoint();
  // Every trained weight by its checkpoint name: "model/..." and "extra/...".
  std::vector<std::pair<std::string, torch::Tensor>> trained() const;
  void append_metrics(const nlohmann::json& line);
};

}  // namespace lineage::distill
