// Everything a training or distillation run needs, in one struct that round-trips through JSON
// (the run directory's recipe.json, and `--recipe FILE` on the command line: keys are the long
// option names, with '-' or '_'). `lineage train` and `lineage distill` fill it from flags and hand
// it to run_train / run_distill (distill/jobs.h); the parts each consumer needs (KDOptions,
// DataOptions, TrainOptions, SamplingOptions, ExportOptions, teacher::TeacherSpec) come from it.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lineage/distill/options.h"
#include "lineage/model/config.h"
#include "lineage/model/sampler.h"

namespace lineage::distill {

// How the student learns from the teacher.
enum class Mode {
  kOnline,    // teacher in-process: full logits for every batch
  kOffline,   // top-k log-probabilities from a teacher cache (lineage cache)
  kSeqKD,     // the teacher writes completions for the prompts; the student learns them (Kim & Rush 2016)
  kOnPolicy,  // a fraction lambda of batches are the student's own samples, scored by the teacher (GKD)
};
Mode parse_mode(const std::string& name);  // online, offline, seq_kd, on_policy
const char* mode_name(Mode m);

// The export of a model: name and license written into it, and the dtype of its weights.
struct ExportOptions {
  std::string name;     // "" : the run directory's name
  std::string license;  // "" : the teacher's, when the provenance names one
  std::string dtype = "f16";
};

struct Recipe {
  // Inputs and outputs.
  std::vector<std::string> data;
  std::string out;               // run directory
  std::string teacher;           // distill: model path or http(s)://.../v1 URL
  std::string teacher_model;     // HTTP teacher: model id ("" : the first listed)
  int64_t concurrency = 8;       // HTTP teacher: requests in flight
  double teacher_max_retry_after = 300;  // HTTP teacher: a longer Retry-After fails the run, naming the server
  double teacher_retry_budget = 1800;    // HTTP teacher: seconds of retrying one request before failing
  std::string cache;             // offline: teacher cache directory
  std::string tokenizer;         // train: tokenizer file; empty: train one on the data. distill: the student's (HTTP teacher)
  int64_t vocab_size = 4096;     // train: size of the SentencePiece BPE trained on the data
  std::string name;              // model name written into exports
  std::string license;           // license written into exports; a student takes its teacher's when empty

  // The model trained (train) or the student (distill).
  int64_t dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, hidden_dim = 0;
  bool tie_embeddings = true;
  std::string init_from_teacher;  // distill: "" (fresh), "every:N", or layer list "0,2,4"
  std::string student;            // distill: start from this model file instead
  int64_t gen_examples = 512;     // seq_kd: completions the teacher writes (0: one per prompt)

  // Distillation.
  Mode mode = Mode::kOnline;
  KDOptions kd;
  double alpha = 1.0;            // loss = alpha * KD + (1 - alpha) * CE
  int64_t top_k = 0;             // online: restrict the teacher to its top-k (+ tail); 0 = full
  int64_t tail_samples = 6;      // with top-k (online, lineage cache): draws from the teacher's tail
  int64_t kd_chunk_rows = -1;    // rows per chunk of the KD objective (distill/chunked_loss.h); -1 auto, 0 off
  double lambda = 0.5;           // on_policy: share of batches sampled from the student
  // "distill", or "acceptance": a speculative draft's recipe (DistillSpec, Zhou et al. 2024) —
  // mode on_policy, lambda 1, loss tvd wherever those are not given (resolve_recipe)
  std::string objective = "distill";
  // Hidden-state distillation (online mode, a teacher in this process): "" (off), cosine or mse;
  // student:teacher block pairs ("" = every student block against its share of the teacher's); the
  // term's weight beside the logit loss.
  std::string hidden_loss, hidden_layers;
  double hidden_weight = 1.0;
  int64_t prompt_tokens = 32;    // on_policy / seq_kd with text data: prompt = first N tokens of a row
  int64_t gen_tokens = 64;       // new tokens per sampled completion
  model::SamplingOptions sampling{/*temperature=*/1.0f, /*top_k=*/0, /*top_p=*/1.0f, /*seed=*/0};

  // Data, optimisation and devices.
  DataOptions data_options;
  TrainOptions train;
  int64_t eval_rows = 64;        // validation rows per evaluation (0: all)
  std::string device = "cpu";
  std::string dtype = "f32";     // parameters on the device
  std::string export_dtype = "f16";

  nlohmann::json to_json() const;
  // Keys not named here are refused (a typo must not silently fall back to a default).
  static Recipe from_json(const nlohmann::json& j, const std::string& source);
  model::ModelConfig model_config(int64_t vocab_size) const;  // from dim, n_layers, ...
  ExportOptions export_options() const;
};

// Where a run's recipe comes from, highest precedence first: options given explicitly (JSON keys
// as in recipe.json, e.g. the flags typed on a command line), a recipe file, the run directory's
// recipe.json when resuming, then the defaults. A resumed run keeps its directory as `out`.
struct RecipeSources {
  nlohmann::json given = nlohmann::json::object();
  std::string recipe_file;  // "" : none
  std::string resume_dir;   // "" : a new run
};
Recipe resolve_recipe(const RecipeSources& sources);

}  // namespace lineage::distill

namespace lineage::distill {

// One recipe option: its key (JSON key; `--key-with-dashes` on the command line), help text, and
// which verbs take it. The CLI registers its flags from this table, so --help lists them all.
struct RecipeField {
  enum class Kind { kString, kInt, kDouble, kBool, kList };
  const char* key;
  Kind kind;
  bool train, distill;
  const char* help;
  std::function<nlohmann::json(const Recipe&)> get;
  std::function<void(Recipe&, const nlohmann::json&)> set;  // accepts JSON values or strings
};
const std::vector<RecipeField>& recipe_fields();

}  // namespace lineage::distill
