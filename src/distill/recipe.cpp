// The recipe table: every option of `lineage train` / `lineage distill`, its JSON form and help.
#include "lineage/core/json.h"
#include "lineage/distill/recipe.h"

#include <fmt/format.h>

#include <filesystem>

#include "lineage/core/error.h"
#include "lineage/core/file.h"

namespace lineage::distill {
using json = nlohmann::json;
using Kind = RecipeField::Kind;

Mode parse_mode(const std::string& name) {
  if (name == "online") return Mode::kOnline;
  if (name == "offline") return Mode::kOffline;
  if (name == "seq_kd" || name == "seq-kd") return Mode::kSeqKD;
  if (name == "on_policy" || name == "on-policy") return Mode::kOnPolicy;
  fail("unknown distillation mode '{}': expected online, offline, seq_kd or on_policy", name);
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kOnline: return "online";
    case Mode::kOffline: return "offline";
    case Mode::kSeqKD: return "seq_kd";
    case Mode::kOnPolicy: return "on_policy";
  }
  return "?";
}

static const char* divergence_name(Divergence d) {
  switch (d) {
    case Divergence::kForwardKL: return "forward_kl";
    case Divergence::kReverseKL: return "reverse_kl";
    case Divergence::kJSD: return "jsd";
    case Divergence::kTVD: return "tvd";
  }
  return "?";
}

namespace {

std::string as_string(const json& v, const char* key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array() && v.size() == 1 && v[0].is_string()) return v[0].get<std::string>();
  fail("recipe option '{}': expected a string, found {}", key, v.dump());
}

double as_double(const json& v, const char* key) {
  if (v.is_number()) return v.get<double>();
  std::string s = as_string(v, key);
  try {
    size_t used = 0;
    double d = std::stod(s, &used);
    if (used == s.size()) return d;
  } catch (const std::exception&) {
  }
  fail("recipe option '{}': expected a number, found '{}'", key, s);
}

int64_t as_int(const json& v, const char* key) {
  double d = as_double(v, key);
  if (!is_whole_int64(d)) fail("recipe option '{}': expected an integer, found {}", key, d);
  return static_cast<int64_t>(d);
}

bool as_bool(const json& v, const char* key) {
  if (v.is_boolean()) return v.get<bool>();
  std::string s = as_string(v, key);
  if (s == "true" || s == "1" || s == "on" || s == "yes") return true;
  if (s == "false" || s == "0" || s == "off" || s == "no") return false;
  fail("recipe option '{}': expected true or false, found '{}'", key, s);
}

std::vector<std::string> as_list(const json& v, const char* key) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) fail("recipe option '{}': expected a list of strings, found {}", key, v.dump());
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(as_string(e, key));
  return out;
}

#define FIELD(KEY, KIND, TRAIN, DISTILL, HELP, MEMBER, CONV)                                       \
  RecipeField {                                                                                    \
    KEY, KIND, TRAIN, DISTILL, HELP, [](const Recipe& r) { return json(r.MEMBER); },               \
        [](Recipe& r, const json& v) { r.MEMBER = CONV(v, KEY); }                                   \
  }

std::vector<RecipeField> make_fields() {
  std::vector<RecipeField> f = {
      FIELD("data", Kind::kList, true, true, "training data files: JSONL (prompt/completion, text, messages) or plain text", data, as_list),
      FIELD("out", Kind::kString, true, true, "run directory (checkpoints, metrics.jsonl, lineage.json, exports)", out, as_string),
      FIELD("teacher", Kind::kString, false, true, "teacher model: HF folder, .gguf, llama2.c .bin, or an OpenAI-compatible http(s)://.../v1 URL", teacher, as_string),
      FIELD("teacher-model", Kind::kString, false, true, "HTTP teacher: the model id to ask for (default: the first /models lists)", teacher_model, as_string),
      FIELD("concurrency", Kind::kInt, false, true, "HTTP teacher: requests in flight at once", concurrency, as_int),
      FIELD("teacher-max-retry-after", Kind::kDouble, false, true,
            "HTTP teacher: the longest Retry-After (seconds) waited for; a server asking more fails the run, naming it",
            teacher_max_retry_after, as_double),
      FIELD("teacher-retry-budget", Kind::kDouble, false, true,
            "HTTP teacher: seconds one request may spend retrying (429, 5xx, lost connections) before the run fails",
            teacher_retry_budget, as_double),
      FIELD("cache", Kind::kString, false, true, "offline mode: teacher cache directory made by `lineage cache`", cache, as_string),
      FIELD("tokenizer", Kind::kString, true, true, "tokenizer file; train: without one a SentencePiece BPE is trained on the data; distill: the student's, needed with an HTTP teacher", tokenizer, as_string),
      FIELD("vocab-size", Kind::kInt, true, false, "size of the tokenizer trained on the data", vocab_size, as_int),
      FIELD("name", Kind::kString, true, true, "model name written into the exported files", name, as_string),
      FIELD("license", Kind::kString, true, true,
            "license written into the exported files (SPDX id, e.g. CC0-1.0); a student takes its teacher's when unset",
            license, as_string),
      FIELD("dim", Kind::kInt, true, true, "hidden size of the model (student)", dim, as_int),
      FIELD("layers", Kind::kInt, true, true, "number of transformer blocks", n_layers, as_int),
      FIELD("heads", Kind::kInt, true, true, "attention heads", n_heads, as_int),
      FIELD("kv-heads", Kind::kInt, true, true, "key/value heads (grouped-query attention); 0: same as heads", n_kv_heads, as_int),
      FIELD("hidden", Kind::kInt, true, true, "SwiGLU inner size; 0: 8/3 of dim rounded up to 32", hidden_dim, as_int),
      FIELD("tie-embeddings", Kind::kBool, true, true, "output projection shares the token embedding", tie_embeddings, as_bool),
      FIELD("init-from-teacher", Kind::kString, false, true, "initialise the student from the teacher: its layers 'every:2' or '0,2,4' (width = teacher's), or the teacher pruned "
            "by activation importance 'prune:dim=128,kv-heads=2,hidden=384[,heads=H,layers=L]' (Minitron; 128 training rows "
            "calibrate it)", init_from_teacher, as_string),
      FIELD("student", Kind::kString, false, true, "start from this student model file (its vocabulary must be the teacher's)", student, as_string),
      FIELD("gen-examples", Kind::kInt, false, true, "seq_kd: completions the teacher writes (0: one per prompt)", gen_examples, as_int),
      FIELD("seq-len", Kind::kInt, true, true, "context length of training rows", data_options.seq_len, as_int),
      FIELD("valid-fraction", Kind::kDouble, true, true, "share of examples held out for validation", data_options.valid_fraction, as_double),
      FIELD("split-seed", Kind::kInt, true, true, "seed of the train/validation split", data_options.split_seed, as_int),
      FIELD("pack", Kind::kBool, true, true, "pack examples end to end into rows (false: one example per row, padded)", data_options.pack, as_bool),
      FIELD("max-examples", Kind::kInt, true, true, "use at most this many examples per file (0: all)", data_options.max_examples, as_int),
      FIELD("steps", Kind::kInt, true, true, "optimizer steps", train.steps, as_int),
      FIELD("batch-size", Kind::kInt, true, true, "rows per micro-batch", train.batch_size, as_int),
      FIELD("grad-accum", Kind::kInt, true, true, "micro-batches per optimizer step", train.grad_accum, as_int),
      FIELD("lr", Kind::kDouble, true, true, "peak learning rate (AdamW)", train.lr, as_double),
      FIELD("min-lr", Kind::kDouble, true, true, "learning rate at the end of the cosine decay", train.min_lr, as_double),
      FIELD("warmup", Kind::kInt, true, true, "steps of linear warmup", train.warmup, as_int),
      FIELD("weight-decay", Kind::kDouble, true, true, "AdamW decoupled weight decay (matrices only)", train.weight_decay, as_double),
      FIELD("beta1", Kind::kDouble, true, true, "AdamW beta1", train.beta1, as_double),
      FIELD("beta2", Kind::kDouble, true, true, "AdamW beta2", train.beta2, as_double),
      FIELD("clip", Kind::kDouble, true, true, "max global gradient norm (0: no clipping)", train.clip, as_double),
      FIELD("seed", Kind::kInt, true, true, "seed of weight init, data order and sampling", train.seed, as_int),
      FIELD("eval-every", Kind::kInt, true, true, "evaluate on the validation split every N steps (0: at the end)", train.eval_every, as_int),
      FIELD("eval-rows", Kind::kInt, true, true, "validation rows per evaluation (0: all)", eval_rows, as_int),
      FIELD("checkpoint-every", Kind::kInt, true, true, "checkpoint every N steps (0: at the end)", train.checkpoint_every, as_int),
      FIELD("keep-checkpoints", Kind::kInt, true, true, "checkpoints kept on disk", train.keep_checkpoints, as_int),
      FIELD("bf16", Kind::kBool, true, true, "autocast the forward pass to bfloat16", train.bf16, as_bool),
      FIELD("alpha", Kind::kDouble, false, true, "loss = alpha * KD + (1 - alpha) * CE on the true tokens", alpha, as_double),
      FIELD("top-k", Kind::kInt, false, true, "online: use only the teacher's top-k tokens plus a tail bucket (0: full vocabulary)", top_k, as_int),
      FIELD("tail-samples", Kind::kInt, false, true,
            "online with --top-k: tokens drawn from the teacher's tail per position (Random-Sampling KD; 0: one tail bucket)",
            tail_samples, as_int),
      FIELD("kd-chunk-rows", Kind::kInt, false, true,
            "rows per chunk of the loss: logits never (rows x vocabulary) at once (-1: auto, chunked past 256 MiB of logits; 0: off)",
            kd_chunk_rows, as_int),
      FIELD("lambda", Kind::kDouble, false, true, "on_policy: share of batches sampled from the student (GKD's lambda)", lambda, as_double),
      FIELD("hidden-loss", Kind::kString, false, true,
            "online mode: also match the student's block outputs to the teacher's: cosine or mse (through a learned "
            "projection when the widths differ, saved as hidden_projection.pt)",
            hidden_loss, as_string),
      FIELD("hidden-layers", Kind::kString, false, true,
            "--hidden-loss: student:teacher block pairs, e.g. '1:2,3:5' (default: every student block against its "
            "share of the teacher's, the last against the last)",
            hidden_layers, as_string),
      FIELD("hidden-weight", Kind::kDouble, false, true, "--hidden-loss: weight of the hidden-state term", hidden_weight,
            as_double),
      FIELD("objective", Kind::kString, false, true,
            "distill, or acceptance: train a speculative draft as DistillSpec does (mode on_policy, lambda 1, loss tvd "
            "unless given); every evaluation logs the acceptance rate",
            objective, as_string),
      FIELD("prompt-tokens", Kind::kInt, false, true, "seq_kd/on_policy on text data: prompt = first N tokens of a row", prompt_tokens, as_int),
      FIELD("gen-tokens", Kind::kInt, false, true, "seq_kd/on_policy: new tokens per generated completion", gen_tokens, as_int),
      FIELD("gen-temperature", Kind::kDouble, false, true, "seq_kd/on_policy: sampling temperature (0: greedy)", sampling.temperature, as_double),
      FIELD("gen-top-k", Kind::kInt, false, true, "seq_kd/on_policy: sample among the top k (0: all)", sampling.top_k, as_int),
      FIELD("gen-top-p", Kind::kDouble, false, true, "seq_kd/on_policy: nucleus sampling threshold", sampling.top_p, as_double),
      FIELD("device", Kind::kString, true, true, "cpu, cuda or cuda:N", device, as_string),
      FIELD("dtype", Kind::kString, true, true, "parameter dtype on the device: f32, bf16", dtype, as_string),
      FIELD("export-dtype", Kind::kString, true, true, "dtype of the exported GGUF / HF files: f32 or f16", export_dtype, as_string),
  };
  f.push_back({"mode", Kind::kString, false, true, "online (teacher logits per batch), offline (teacher cache), seq_kd, on_policy",
               [](const Recipe& r) { return json(mode_name(r.mode)); },
               [](Recipe& r, const json& v) { r.mode = parse_mode(as_string(v, "mode")); }});
  f.push_back({"loss", Kind::kString, false, true, "forward_kl, reverse_kl, jsd or tvd",
               [](const Recipe& r) { return json(divergence_name(r.kd.divergence)); },
               [](Recipe& r, const json& v) { r.kd.divergence = parse_divergence(as_string(v, "loss")); }});
  f.push_back({"beta", Kind::kDouble, false, true, "JSD mixture weight: 0 = forward KL, 1 = reverse KL",
               [](const Recipe& r) { return json(r.kd.beta); },
               [](Recipe& r, const json& v) { r.kd.beta = as_double(v, "beta"); }});
  f.push_back({"temperature", Kind::kDouble, false, true, "distillation temperature tau (loss scaled by tau^2)",
               [](const Recipe& r) { return json(r.kd.temperature); },
               [](Recipe& r, const json& v) { r.kd.temperature = as_double(v, "temperature"); }});
  return f;
}
#undef FIELD

}  // namespace

const std::vector<RecipeField>& recipe_fields() {
  static const std::vector<RecipeField> fields = make_fields();
  return fields;
}

json Recipe::to_json() const {
  json j = json::object();
  for (const auto& f : recipe_fields()) j[f.key] = f.get(*this);
  return j;
}

Recipe Recipe::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("recipe '{}': expected a JSON object", source);
  Recipe r;
  for (const auto& [key, value] : j.items()) {
    std::string k = key;
    std::replace(k.begin(), k.end(), '_', '-');
    auto it = std::find_if(recipe_fields().begin(), recipe_fields().end(), [&](const RecipeField& f) { return k == f.key; });
    if (it == recipe_fields().end()) fail("recipe '{}': unknown option '{}'", source, key);
    it->set(r, value);
  }
  return r;
}

model::ModelConfig Recipe::model_config(int64_t vocab) const {
  model::ModelConfig c;
  c.arch = "llama";
  c.vocab_size = vocab;
  c.dim = dim;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads > 0 ? n_kv_heads : n_heads;
  c.hidden_dim = hidden_dim > 0 ? hidden_dim : ((dim * 8 / 3 + 31) / 32) * 32;
  c.max_seq_len = data_options.seq_len;
  c.tie_embeddings = tie_embeddings;
  if (dim <= 0 || n_layers <= 0 || n_heads <= 0)
    fail("the model needs --dim, --layers and --heads (got dim {}, layers {}, heads {})", dim, n_layers, n_heads);
  c.validate("the recipe");
  return c;
}

ExportOptions Recipe::export_options() const {
  ExportOptions e;
  e.name = name;
  if (e.name.empty() && !out.empty()) e.name = std::filesystem::absolute(out).lexically_normal().filename().string();
  e.license = license;
  e.dtype = export_dtype;
  return e;
}

Recipe resolve_recipe(const RecipeSources& s) {
  json j = json::object();
  if (!s.resume_dir.empty()) {
    const std::string path = s.resume_dir + "/recipe.json";
    j = parse_json(read_file(path), path);
    if (!j.is_object()) fail("'{}' is not a JSON object", path);
  }
  auto merge = [&](const json& over) {
    for (auto& [k, v] : over.items()) {
      std::string key = k;
      std::replace(key.begin(), key.end(), '_', '-');
      j[key] = v;
    }
  };
  if (!s.recipe_file.empty()) {
    auto file = parse_json(read_file(s.recipe_file), "recipe '" + s.recipe_file + "'");
    if (!file.is_object()) fail("recipe '{}': expected a JSON object of options", s.recipe_file);
    merge(file);
  }
  merge(s.given);
  if (!s.resume_dir.empty()) j["out"] = s.resume_dir;
  if (j.contains("objective")) {
    const std::string objective = j["objective"].is_string() ? j["objective"].get<std::string>() : "";
    if (objective != "distill" && objective != "acceptance")
      fail("--objective must be distill or acceptance, got {}", j["objective"].dump());
    if (objective == "acceptance") {  // DistillSpec: the draft's own samples, a divergence bounding acceptance
      if (!j.contains("mode")) j["mode"] = "on_policy";
      if (!j.contains("lambda")) j["lambda"] = 1.0;
      if (!j.contains("loss")) j["loss"] = "tvd";
    }
  }
  return Recipe::from_json(j, s.recipe_file.empty() ? "the command line" : s.recipe_file);
}

}  // namespace lineage::distill
