// The trainer: its schedule, that it learns, that a stopped run resumed from its checkpoint gives
// bit-identical losses, and the recipe's JSON form and student layer selection.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "lineage/core/error.h"
#include "lineage/distill/losses.h"
#include "lineage/distill/recipe.h"
#include "lineage/distill/student.h"
#include "lineage/distill/trainer.h"
#include "test_util.h"
#include "tiny_teacher.h"

using namespace lineage;
namespace lt = lineage::testing;
using lt::error_of;
using lt::TempDir;
namespace fs = std::filesystem;

namespace {

model::ModelConfig small() {
  model::ModelConfig c;
  c.vocab_size = 260;
  c.dim = 32;
  c.hidden_dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 64;
  c.tie_embeddings = true;
  return c;
}

// Per-step training losses from metrics.jsonl.
std::vector<double> losses(const fs::path& run) {
  std::vector<double> out;
  std::istringstream in(lt::slurp(run / "metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("split")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

struct TinyRun {
  distill::TokenRows rows;
  TinyRun() {
    auto tok = text::make_tokenizer(lt::byte_vocab());
    TempDir tmp;
    lt::spit(tmp / "c.txt", lt::tiny_corpus(200));
    distill::DataOptions o;
    o.seq_len = 32;
    o.valid_fraction = 0;
    rows = distill::load_dataset({(tmp / "c.txt").string()}, *tok, o).train;
  }
  // Trains `steps` of a 12-step schedule; stops (like SIGTERM) after `stop_after` steps if > 0.
  void train(const fs::path& dir, bool resume, int64_t stop_after = 0) {
    torch::manual_seed(1);
    model::Llama m(small());
    m->init_weights();
    distill::TrainOptions o;
    o.steps = 12;
    o.batch_size = 4;
    o.warmup = 3;
    o.lr = 3e-3;
    o.checkpoint_every = 5;
    o.eval_every = 0;
    o.quiet = true;
    distill::Trainer t(m, rows, o, dir);
    if (resume) ASSERT_TRUE(t.resume());
    auto loss = [&](const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>&, int64_t step) {
      auto logits = m->forward(tok.slice(1, 0, -1));
      distill::StepResult r;
      r.loss = distill::ce_loss(logits.reshape({-1, 260}), tok.slice(1, 1).reshape({-1}), mask.slice(1, 1).reshape({-1}));
      r.tokens = tok.numel();
      if (stop_after > 0 && step + 1 == stop_after) distill::Trainer::stop_requested() = true;
      return r;
    };
    t.run(loss, {});
  }
};

}  // namespace

TEST(Schedule, LinearWarmupThenCosineToTheFloor) {
  distill::TrainOptions o;
  o.steps = 100;
  o.warmup = 10;
  o.lr = 1.0;
  o.min_lr = 0.1;
  EXPECT_DOUBLE_EQ(distill::learning_rate(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(distill::learning_rate(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(distill::learning_rate(o, 10), 1.0);
  EXPECT_NEAR(distill::learning_rate(o, 55), 0.55, 1e-12);  // half way down the cosine
  EXPECT_NEAR(distill::learning_rate(o, 100), 0.1, 1e-12);
}

TEST(Trainer, LearnsAndResumesBitIdentically) {
  TinyRun run;
  TempDir tmp;
  run.train(tmp / "whole", false);
  auto whole = losses(tmp / "whole");
  ASSERT_EQ(whole.size(), 12u);
  EXPECT_LT(whole.back(), whole.front() - 0.5);  // it learns
  // Stopped after step 7: the checkpoint is at 7 (a stop writes one), resumed to the end.
  run.train(tmp / "split", false, /*stop_after=*/7);
  EXPECT_EQ(losses(tmp / "split").size(), 7u);
  EXPECT_EQ(lt::slurp(tmp / "split" / "checkpoints" / "latest"), "step-0000007\n");
  run.train(tmp / "split", true);
  EXPECT_EQ(losses(tmp / "split"), whole);
  // Only whole checkpoints remain, the newest `keep_checkpoints` of them.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp / "split" / "checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-0000010", "step-0000012"}));
}

// Flags given > recipe file > the resumed run's recipe.json > defaults; a resumed run keeps its
// directory.
TEST(Recipe, ResolvesGivenOptionsOverTheFileOverTheResumedRun) {
  TempDir tmp;
  distill::Recipe old;
  old.out = "somewhere/else";
  old.train.lr = 1e-3;
  old.train.steps = 100;
  old.dim = 64;
  fs::create_directories(tmp / "run");
  lt::spit(tmp / "run" / "recipe.json", old.to_json().dump());
  lt::spit(tmp / "file.json", R"({"steps": 300, "grad_accum": 2})");
  distill::RecipeSources src;
  src.resume_dir = (tmp / "run").string();
  src.recipe_file = (tmp / "file.json").string();
  src.given = {{"grad-accum", "4"}};
  auto r = distill::resolve_recipe(src);
  EXPECT_EQ(r.out, (tmp / "run").string());
  EXPECT_DOUBLE_EQ(r.train.lr, 1e-3);  // from the run
  EXPECT_EQ(r.dim, 64);
  EXPECT_EQ(r.train.steps, 300);       // the file over the run
  EXPECT_EQ(r.train.grad_accum, 4);    // the flag over the file
  EXPECT_EQ(distill::resolve_recipe({}).to_json(), distill::Recipe().to_json());
  lt::spit(tmp / "bad.json", "[1, 2]");
  src.recipe_file = (tmp / "bad.json").string();
  EXPECT_NE(error_of([&] { distill::resolve_recipe(src); }).find("expected a JSON object"), std::string::npos);
  EXPECT_EQ(distill::Recipe().export_options().dtype, "f16");
}

// --objective acceptance: DistillSpec's draft recipe where mode, lambda and loss are not given;
// what is given stays; anything but distill or acceptance is refused.
TEST(Recipe, TheAcceptanceObjectiveIsDistillSpecsRecipeUnlessToldOtherwise) {
  distill::RecipeSources src;
  src.given = {{"objective", "acceptance"}};
  auto r = distill::resolve_recipe(src);
  EXPECT_EQ(r.objective, "acceptance");
  EXPECT_EQ(r.mode, distill::Mode::kOnPolicy);
  EXPECT_DOUBLE_EQ(r.lambda, 1.0);
  EXPECT_EQ(r.kd.divergence, distill::Divergence::kTVD);
  src.given = {{"objective", "acceptance"}, {"loss", "forward_kl"}, {"lambda", "0.5"}};
  r = distill::resolve_recipe(src);
  EXPECT_EQ(r.mode, distill::Mode::kOnPolicy);
  EXPECT_DOUBLE_EQ(r.lambda, 0.5);
  EXPECT_EQ(r.kd.divergence, distill::Divergence::kForwardKL);
  EXPECT_EQ(distill::resolve_recipe({}).mode, distill::Recipe().mode);
  src.given = {{"objective", "speed"}};
  EXPECT_NE(error_of([&] { distill::resolve_recipe(src); }).find("distill or acceptance"), std::string::npos);
}

TEST(Recipe, RoundTripsThroughJsonAndRefusesUnknownKeys) {
  distill::Recipe r;
  r.data = {"a.txt", "b.jsonl"};
  r.mode = distill::Mode::kOnPolicy;
  r.kd.divergence = distill::Divergence::kJSD;
  r.kd.beta = 0.3;
  r.train.lr = 5e-4;
  r.data_options.seq_len = 128;
  auto j = r.to_json();
  auto back = distill::Recipe::from_json(j, "test");
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.mode, distill::Mode::kOnPolicy);
  // Keys with underscores, values as strings (the command line's form) are accepted.
  auto s = distill::Recipe::from_json({{"grad_accum", "4"}, {"bf16", "true"}, {"loss", "reverse_kl"}}, "test");
  EXPECT_EQ(s.train.grad_accum, 4);
  EXPECT_TRUE(s.train.bf16);
  EXPECT_EQ(s.kd.divergence, distill::Divergence::kReverseKL);
  EXPECT_NE(error_of([] { distill::Recipe::from_json({{"learning_rate", 1}}, "r.json"); }).find("unknown option 'learning_rate'"),
            std::string::npos);
  EXPECT_NE(error_of([] { distill::Recipe::from_json({{"steps", "many"}}, "r.json"); }).find("expected a number"),
            std::string::npos);
  EXPECT_NE(error_of([] { distill::Recipe::from_json({{"mode", "telepathy"}}, "r.json"); }).find("unknown distillation mode"),
            std::string::npos);
}

TEST(Student, LayerSelectionKeepsTheChosenTeacherLayers) {
  EXPECT_EQ(distill::parse_layer_selection("every:2", 6), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(distill::parse_layer_selection("0,3,5", 6), (std::vector<int64_t>{0, 3, 5}));
  EXPECT_NE(error_of([] { distill::parse_layer_selection("0,7", 6); }).find("layer 7 does not exist"), std::string::npos);
  EXPECT_NE(error_of([] { distill::parse_layer_selection("3,1", 6); }).find("increasing"), std::string::npos);
  EXPECT_NE(error_of([] { distill::parse_layer_selection("half", 6); }).find("every:N"), std::string::npos);
  auto c = small();
  c.n_layers = 4;
  torch::manual_seed(2);
  model::Llama teacher(c);
  auto w = distill::select_layers_weights(teacher->weights(), {1, 3});
  model::Llama student(distill::select_layers_config(c, {1, 3}));
  student->load_weights(w, "selected");
  auto tw = teacher->weights();
  auto sw = student->weights();
  EXPECT_TRUE(torch::equal(sw.at("layers.0.attention.wq.weight"), tw.at("layers.1.attention.wq.weight")));
  EXPECT_TRUE(torch::equal(sw.at("layers.1.feed_forward.w2.weight"), tw.at("layers.3.feed_forward.w2.weight")));
  EXPECT_TRUE(torch::equal(sw.at("tok_embeddings.weight"), tw.at("tok_embeddings.weight")));
}

// Issue 32: a resume verifies the checkpoint's SHA256SUMS before it loads anything. Every mutant
// of every checkpoint file — bit flips, 8-byte overwrites, truncations — is refused naming a file
// of the checkpoint; --resume-previous (and only it) falls back to the newest older whole one; a
// lost `latest` resumes the newest folder; leftovers of a save cut short are removed.
TEST(Trainer, ResumeRefusesACheckpointWithAnyByteChanged) {
  TinyRun run;
  TempDir tmp;
  const fs::path pristine = tmp / "pristine";
  run.train(pristine, false, /*stop_after=*/7);  // checkpoints at steps 5 and 7
  const fs::path ck = pristine / "checkpoints" / "step-0000007";
  ASSERT_TRUE(fs::exists(ck / "SHA256SUMS"));
  auto resume = [&](const fs::path& dir, bool previous) {
    torch::manual_seed(1);
    model::Llama m(small());
    distill::TrainOptions o;
    o.steps = 12;
    o.batch_size = 4;
    o.quiet = true;
    o.resume_previous = previous;
    distill::Trainer t(m, run.rows, o, dir);
    EXPECT_TRUE(t.resume());
    return t.step();
  };
  EXPECT_EQ(resume(pristine, false), 7);

  std::mt19937 rng(11);
  int mutants = 0, refused = 0;
  for (const char* file : {"state.pt", "trainer.json", "SHA256SUMS"}) {
    const std::string bytes = lt::slurp(ck / file);
    ASSERT_GT(bytes.size(), 16u);
    std::vector<std::string> variants;
    for (int i = 0; i < 10; ++i) {  // one bit flipped
      std::string m = bytes;
      m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
      variants.push_back(m);
    }
    for (int i = 0; i < 5; ++i) {  // 8 bytes overwritten, every one of them changed
      std::string m = bytes;
      size_t at = rng() % (m.size() - 8);
      for (int k = 0; k < 8; ++k) m[at + k] ^= static_cast<char>(1 + rng() % 255);
      variants.push_back(m);
    }
    for (size_t keep : {size_t{0}, bytes.size() / 2, bytes.size() - 1}) variants.push_back(bytes.substr(0, keep));
    for (const auto& m : variants) {
      const fs::path dir = tmp / ("mutant-" + std::to_string(mutants++));
      fs::copy(pristine, dir, fs::copy_options::recursive);
      lt::spit(dir / "checkpoints" / "step-0000007" / file, m);
      std::string what = error_of([&] { resume(dir, false); });
      refused += what != "(no error)";
      EXPECT_NE(what.find("step-0000007"), std::string::npos) << file << ": " << what;
      EXPECT_NE(what.find("--resume-previous"), std::string::npos) << what;
      fs::remove_all(dir);
    }
  }
  EXPECT_EQ(refused, mutants);
  std::printf("checkpoint mutants refused: %d/%d\n", refused, mutants);

  // --resume-previous: the damaged latest is skipped for the whole step 5.
  const fs::path damaged = tmp / "damaged";
  fs::copy(pristine, damaged, fs::copy_options::recursive);
  std::string state = lt::slurp(damaged / "checkpoints" / "step-0000007" / "state.pt");
  state[state.size() / 3] ^= 0x10;
  lt::spit(damaged / "checkpoints" / "step-0000007" / "state.pt", state);
  EXPECT_EQ(resume(damaged, true), 5);
  // `latest` lost: the newest folder; a save cut short (step-*.tmp) is never chosen, and removed.
  const fs::path lost = tmp / "lost";
  fs::copy(pristine, lost, fs::copy_options::recursive);
  fs::remove(lost / "checkpoints" / "latest");
  fs::create_directories(lost / "checkpoints" / "step-0000009.tmp");
  lt::spit(lost / "checkpoints" / "step-0000009.tmp" / "state.pt", "cut short");
  EXPECT_EQ(resume(lost, false), 7);
  EXPECT_FALSE(fs::exists(lost / "checkpoints" / "step-0000009.tmp"));
}
