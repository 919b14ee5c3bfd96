// lineage distill: a student learns from a teacher, in one of four modes (an Objective each,
// src/distill/modes/), with the losses of distill/losses.h, through the run's trainer (run.h).
// This file holds the pipeline: the checks of a recipe, the student, and the comparison at the end.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "lineage/core/units.h"
#include "lineage/core/device.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/distill/compare.h"
#include "lineage/distill/data_parallel.h"
#include "lineage/distill/evaluate.h"
#include "lineage/distill/provenance.h"
#include "lineage/distill/jobs.h"
#include "lineage/distill/objective.h"
#include "lineage/distill/run.h"
#include "lineage/distill/run_common.h"
#include "lineage/distill/hidden_loss.h"
#include "lineage/distill/prune.h"
#include "lineage/distill/student.h"
#include "lineage/io/model_file.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::distill {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

void check_recipe(const Recipe& r, const teacher::Teacher& t) {
  if (r.data.empty()) fail("no data given (--data FILE...)");
  if (r.alpha < 0 || r.alpha > 1) fail("--alpha {} must be in [0, 1]", r.alpha);
  if (r.lambda < 0 || r.lambda > 1) fail("--lambda {} must be in [0, 1]", r.lambda);
  if (r.kd.beta < 0 || r.kd.beta > 1) fail("--beta {} must be in [0, 1]", r.kd.beta);
  if (!(r.kd.temperature > 0)) fail("--temperature {} must be positive", r.kd.temperature);
  if (r.top_k < 0 || r.top_k > t.info().vocab_size)
    fail("--top-k {} is out of range: the teacher's vocabulary has {} tokens", r.top_k, t.info().vocab_size);
  if (r.mode == Mode::kOffline && r.cache.empty()) fail("--mode offline needs --cache DIR (make one with `lineage cache`)");
  const teacher::Abilities can = t.abilities();
  const bool needs_top_k = (r.alpha > 0 && (r.mode == Mode::kOnline || r.mode == Mode::kSeqKD)) || r.mode == Mode::kOnPolicy;
  if (needs_top_k && !can.logits && !can.top_k)
    fail("teacher '{}' gives text only ({}): --mode {} needs its log-probabilities; use --mode seq_kd (cross-entropy on "
         "its completions)", r.teacher, can.describe(), mode_name(r.mode));
  if (needs_top_k && !can.logits && r.top_k == 0)
    fail("teacher '{}' gives top-k log-probabilities, not full logits ({}): set --top-k (at most {})", r.teacher,
         can.describe(), can.max_top_k);
  if (needs_top_k && !can.tail_draws && r.tail_samples > 0 && r.top_k > 0)
    fail("teacher '{}' cannot draw from its tail ({}): set --tail-samples 0 (one tail bucket)", r.teacher, can.describe());
  if (!r.init_from_teacher.empty() && !can.weights)
    fail("--init-from-teacher needs the teacher's weights; '{}' gives {}", r.teacher, can.describe());
  if (!r.hidden_loss.empty()) {
    parse_hidden_loss(r.hidden_loss);
    if (r.mode != Mode::kOnline) fail("--hidden-loss is for --mode online (the teacher's blocks run on every batch), not {}", mode_name(r.mode));
    if (!can.weights) fail("--hidden-loss needs the teacher's blocks; '{}' gives {}", r.teacher, can.describe());
    if (!(r.hidden_weight >= 0)) fail("--hidden-weight must not be negative, got {}", r.hidden_weight);
  }
  if ((r.mode == Mode::kSeqKD || r.mode == Mode::kOnPolicy) && r.gen_tokens < 1)
    fail("--gen-tokens {} must be at least 1", r.gen_tokens);
  model::validate(r.sampling);
}

// Sequence-level KD needs only the teacher's text (Kim & Rush 2016), so one rule serves every
// teacher: what it gives beside the text is used, and nothing more is asked for. A teacher that
// completes but cannot score given text (llama.cpp's server, most hosted APIs): the student learns
// the completions with cross-entropy alone (the recipe records alpha 0). One that scores with top-k
// log-probabilities (`lineage serve`, vLLM) and no --top-k: as many as it gives (the recipe records
// the k).
void fit_seq_kd_to_teacher(Recipe& r, const teacher::Teacher& t) {
  const teacher::Abilities can = t.abilities();
  if (r.mode != Mode::kSeqKD || r.alpha == 0 || can.logits) return;
  if (!can.top_k) {
    std::fprintf(stderr, "seq_kd: teacher %s gives text only (%s): the student learns its completions with cross-entropy "
                 "(alpha %g -> 0)\n", r.teacher.c_str(), can.describe().c_str(), r.alpha);
    r.alpha = 0;
  } else if (r.top_k == 0) {
    std::fprintf(stderr, "seq_kd: teacher %s gives top-k log-probabilities, not full logits (%s): its top %lld beside "
                 "the completions (--top-k)\n", r.teacher.c_str(), can.describe().c_str(),
                 static_cast<long long>(can.max_top_k));
    r.top_k = can.max_top_k;
    if (!can.tail_draws) r.tail_samples = 0;  // one tail bucket: a server cannot draw from its tail
  }
}

// Calibration rows of the training data that --init-from-teacher prune:... measures importance on.
constexpr int64_t kPruneCalibrationRows = 128;

// The student model on `device`: from a file, from teacher layers or the teacher pruned to its
// width, or fresh from the recipe.
model::Llama make_student(const Recipe& r, teacher::Teacher& t, const TokenRows& calibration, torch::Device device,
                          torch::Dtype dtype) {
  if (!r.student.empty()) {
    io::ModelFile sf = io::read_model(r.student);
    if (sf.config.vocab_size != t.info().vocab_size)
      fail("student '{}' has a vocabulary of {} tokens, the teacher '{}' has {}: distillation over logits needs the same "
           "vocabulary", r.student, sf.config.vocab_size, t.info().source, t.info().vocab_size);
    if (sf.tokenizer && hex(text::vocab_digest(sf.tokenizer->vocab())) != t.info().tokenizer_sha256)
      fail("student '{}' uses another tokenizer than the teacher '{}' (same size, different tokens)", r.student, t.info().source);
    return io::make_model(sf, device, dtype);
  }
  torch::manual_seed(r.train.seed);
  model::Llama* tm = t.model();
  if (!tm) {  // a teacher known only through its answers: a fresh student on the student's tokenizer
    model::ModelConfig c = r.model_config(t.info().vocab_size);
    c.max_seq_len = std::max<int64_t>(c.max_seq_len, r.data_options.seq_len);
    model::Llama m(c);
    m->init_weights();
    m->to(device, dtype);
    return m;
  }
  const auto& tc = (*tm)->config();
  if (r.init_from_teacher.rfind("prune:", 0) == 0) {  // Minitron: the teacher cut to the student's width
    auto target = parse_prune_spec(r.init_from_teacher.substr(6));
    auto plan = plan_pruning(tc, activation_importance(*tm, calibration, kPruneCalibrationRows), target);
    model::Llama m(plan.config);
    m->load_weights(prune_weights(tc, *t.weights(), plan), "the teacher pruned to " + r.init_from_teacher);
    m->to(device, dtype);
    return m;
  }
  if (!r.init_from_teacher.empty()) {
    auto layers = parse_layer_selection(r.init_from_teacher, tc.n_layers);
    model::Llama m(select_layers_config(tc, layers));
    m->load_weights(select_layers_weights(*t.weights(), layers), "the teacher's selected layers");
    m->to(device, dtype);
    return m;
  }
  model::ModelConfig c = r.model_config(tc.vocab_size);
  c.max_seq_len = std::max(c.max_seq_len, tc.max_seq_len);
  c.rope_theta = tc.rope_theta;
  model::Llama m(c);
  m->init_weights();
  m->to(device, dtype);
  return m;
}

// Before anything is written: the student fits the teacher's vocabulary and the data's context.
void check_student(const Recipe& r, model::Llama& student, const teacher::Teacher& t) {
  const auto& sc = student->config();
  if (sc.vocab_size != t.info().vocab_size)
    fail("the student's vocabulary ({}) differs from the teacher's ({})", sc.vocab_size, t.info().vocab_size);
  if (sc.max_seq_len < r.data_options.seq_len)
    fail("--seq-len {} is longer than the student's context ({})", r.data_options.seq_len, sc.max_seq_len);
}

// The side-by-side comparison on the validation rows, into the provenance and summary.json.
void compare_and_summarise(Run& run, const Recipe& r, teacher::Teacher& t, model::Llama& student, const Dataset& data) {
  const fs::path gguf = run.out() / "student.gguf";
  auto [tf, sf] = compare_models(t, student, gguf, data.valid, r.eval_rows);
  json summary = {{"teacher", tf.to_json()}, {"student", sf.to_json()}, {"mode", mode_name(r.mode)},
                  {"steps", run.trainer().step()}, {"tokens_seen", run.trainer().tokens_seen()}};
  run.provenance()["comparison"] = summary;
  run.save_final();
  write_file_atomic(run.out() / "summary.json", summary.dump(2) + "\n");
  std::printf("\n%s\n", format_comparison(tf, sf).c_str());
  std::printf("student: %s (GGUF), %s (HF); run record: %s\n", gguf.c_str(), (run.out() / "student").c_str(),
              (run.out() / "lineage.json").c_str());
}

}  // namespace

// open teacher -> make student -> objective -> Run -> export.
void run_distill(Recipe r, const std::string& command, bool resume, const std::string& api_key) {
  if (r.out.empty()) fail("no run directory given (--out DIR)");
  if (r.teacher.empty()) fail("no teacher given (--teacher MODEL)");
  // Everything that can be wrong with the inputs is found before the first step. An HTTP
  // teacher's answers go to the run directory as they arrive: a resumed run does not ask again.
  auto teacher = open_recipe_teacher(r, r.out, api_key);
  fit_seq_kd_to_teacher(r, *teacher);
  check_recipe(r, *teacher);
  auto tokenizer = std::shared_ptr<text::Tokenizer>(text::make_tokenizer(teacher->tokenizer().vocab()));
  Dataset data = load_dataset(r.data, *tokenizer, r.data_options);
  model::Llama student = make_student(r, *teacher, data.train, parse_device(r.device), parse_dtype(r.dtype));
  check_student(r, student, *teacher);
  std::unique_ptr<Run> run;
  auto objective = make_objective({r, student, *teacher, data, [&] { return run->trainer().step(); }});

  run = std::make_unique<Run>(r, "distill", command, resume);
  // Work a mode does before training (seq_kd's teacher completions, journaled in the run): rank 0
  // first, then the others find it done.
  DataParallel* dp = data_parallel();
  if (dp && !dp->writes()) dp->barrier();
  objective->prepare(run->out());
  if (dp && dp->writes()) dp->barrier();
  std::fprintf(stderr, "distill (%s, %s): teacher %s (%s parameters) -> student %s parameters; %lld training rows of %lld tokens\n",
               mode_name(r.mode), r.to_json()["loss"].get<std::string>().c_str(), teacher->info().source.c_str(),
               group_digits(teacher->info().parameters).c_str(), group_digits(student->config().num_parameters()).c_str(),
               static_cast<long long>(objective->train_rows().rows()), static_cast<long long>(r.data_options.seq_len));
  run->start(student, objective->train_rows(), data, *tokenizer, &teacher->info(), objective->trainable());
  // An HTTP teacher is not asked during evaluations (its answers cost); the end compares both.
  teacher::Teacher* scorer = teacher->has_logits() ? teacher.get() : nullptr;
  auto eval = [&](int64_t) { return evaluate_lm(student, data.valid, scorer, r.eval_rows, 8, dp).to_json(); };
  auto loss = [&](const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>& rows, int64_t step) {
    return objective->loss(tok, mask, rows, step);
  };
  if (!run->train(loss, eval)) return;
  if (dp && !dp->writes()) return;  // rank 0 exports, compares and reports
  run->export_model(student, tokenizer, {"student.gguf", "student"});
  if (auto extra = objective->trainable()) {  // the hidden-state projections: beside the student, not in it
    torch::serialize::OutputArchive ar;
    for (const auto& p : extra->named_parameters()) ar.write(p.key(), p.value().detach().cpu());
    std::ostringstream bytes;
    ar.save_to(bytes);
    write_file_atomic(run->out() / "hidden_projection.pt", bytes.str());
  }
  compare_and_summarise(*run, r, *teacher, student, data);
}

}  // namespace lineage::distill
