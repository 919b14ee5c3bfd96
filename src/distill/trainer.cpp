// The training loop, its schedule and its checkpoints (see trainer.h).
#include "lineage/core/json.h"
#include "lineage/distill/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <numbers>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/progress.h"
#include "lineage/distill/checkpoint.h"
#include "lineage/distill/data_parallel.h"

namespace lineage::distill {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

void fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) fail("cannot open '{}' to sync it", p.string());
  ::fsync(fd);
  ::close(fd);
}

void on_signal(int) { Trainer::stop_requested() = true; }

// Enables autocast for the forward pass on the model's device while alive.
class AutocastGuard {
 public:
  AutocastGuard(bool on, torch::Device device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
    if (cuda_) {
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
  }
  ~AutocastGuard() {
    if (!on_) return;
    if (cuda_) at::autocast::set_enabled(false);
    else at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }

 private:
  bool on_, cuda_;
};

}  // namespace

double learning_rate(const TrainOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  int64_t decay = std::max<int64_t>(1, o.steps - o.warmup);
  double progress = std::min(1.0, static_cast<double>(step - o.warmup) / static_cast<double>(decay));
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

std::atomic<bool>& Trainer::stop_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

std::vector<std::pair<std::string, torch::Tensor>> Trainer::trained() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model_->named_parameters()) out.push_back({"model/" + item.key(), item.value()});
  if (extra_)
    for (const auto& item : extra_->named_parameters()) out.push_back({"extra/" + item.key(), item.value()});
  return out;
}

Trainer::Trainer(model::Llama model, const TokenRows& train, TrainOptions options, fs::path run_dir,
                 std::shared_ptr<torch::nn::Module> extra)
    : model_(std::move(model)), extra_(std::move(extra)), train_(train), options_(std::move(options)), run_dir_(std::move(run_dir)) {
  if (options_.steps <= 0) fail("--steps must be positive, got {}", options_.steps);
  if (options_.batch_size <= 0) fail("--batch-size must be positive, got {}", options_.batch_size);
  if (options_.grad_accum <= 0) fail("--grad-accum must be positive, got {}", options_.grad_accum);
  if (!(options_.lr > 0)) fail("--lr must be positive, got {}", options_.lr);
  if (options_.warmup < 0) fail("--warmup must not be negative, got {}", options_.warmup);
  // Decay matrices only; norms (and biases) keep their scale, as in GPT-2/nanoGPT.
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& [name, p] : trained()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto base = torch::optim::AdamWOptions(options_.lr)
                  .betas({options_.beta1, options_.beta2})
                  .eps(options_.eps)
                  .weight_decay(options_.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(base));
  auto nd = base;
  nd.weight_decay(0.0);
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(nd));
  optimizer_ = std::make_unique<torch::optim::AdamW>(groups, base);
  cursor_.seed = options_.seed;
  fs::create_directories(run_dir_ / "checkpoints");
}

bool Trainer::resume() {
  // In a data-parallel job rank 0 reads the checkpoint and sends it to every rank: nodes need no
  // shared file system, and every rank starts from the same bytes.
  DataParallel* dp = data_parallel();
  fs::path dir;
  std::string state_bytes, trainer_text;
  if (!dp || dp->writes()) {
    remove_checkpoint_temporaries(run_dir_);
    dir = resume_checkpoint(run_dir_, options_.resume_previous);  // verified against its SHA256SUMS
    if (!dir.empty()) {
      state_bytes = read_file(dir / "state.pt");
      trainer_text = read_file(dir / "trainer.json");
    }
  }
  if (dp) {
    std::string name = dp->broadcast_bytes(dir.string());
    dir = name;
    state_bytes = dp->broadcast_bytes(state_bytes);
    trainer_text = dp->broadcast_bytes(trainer_text);
  }
  if (dir.empty()) return false;
  json tj = parse_json(trainer_text, (dir / "trainer.json").string());
  torch::serialize::InputArchive ar;
  {
    std::istringstream in(state_bytes);
    ar.load_from(in);
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [key, p] : trained()) {
      const std::string name = key.substr(key.find('/') + 1);
      torch::Tensor t;
      if (!ar.try_read(key, t))
        fail("checkpoint '{}' has no weight '{}' (a different model{}?)", dir.string(), name,
             key.rfind("extra/", 0) == 0 ? " or hidden-state setting" : "");
      if (t.sizes() != p.sizes())
        fail("checkpoint '{}': weight '{}' has shape {}, the model expects {}", dir.string(), name,
             c10::str(t.sizes()), c10::str(p.sizes()));
      p.copy_(t);
    }
  }
  torch::serialize::InputArchive opt;
  ar.read("optimizer", opt);
  optimizer_->load(opt);
  torch::Tensor rng;
  if (ar.try_read("rng_cpu", rng)) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(rng);
  }
  const std::string where = "checkpoint " + dir.string();
  step_ = need_json_int(tj.at("step"), where + ": step", 0);
  tokens_seen_ = need_json_int(tj.at("tokens_seen"), where + ": tokens_seen", 0);
  const json& cursor = tj.at("cursor");
  if (!cursor.at("seed").is_number_integer()) fail("{}: cursor.seed: expected an integer, found {}", where, cursor.at("seed").dump());
  cursor_.seed = cursor.at("seed").get<uint64_t>();
  cursor_.epoch = need_json_int(cursor.at("epoch"), where + ": cursor.epoch", 0);
  cursor_.position = need_json_int(cursor.at("position"), where + ": cursor.position", 0);
  elapsed_before_ = tj.value("elapsed_s", 0.0);
  last_eval_ = tj.value("last_eval", json::object());
  // metrics.jsonl goes back to the checkpoint: steps after it will be written again.
  fs::path metrics = run_dir_ / "metrics.jsonl";
  if ((!dp || dp->writes()) && fs::exists(metrics)) {
    std::istringstream in(read_file(metrics));
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json j;
      try {
        if (json_depth(line) > kMaxJsonDepth) break;
        j = json::parse(line);
      } catch (const json::exception&) {
        break;  // a line cut by the kill
      }
      if (j.value("step", int64_t{0}) <= step_) kept += line + "\n";
    }
    write_file_atomic(metrics, kept);
  }
  return true;
}

void Trainer::append_metrics(const json& line) {
  if (data_parallel() && !data_parallel()->writes()) return;
  std::ofstream out(run_dir_ / "metrics.jsonl", std::ios::app);
  out << line.dump() << "\n";
  out.flush();
  if (!out) fail("cannot append to '{}': {}", (run_dir_ / "metrics.jsonl").string(), std::strerror(errno));
}

void Trainer::save_checkpoint() {
  DataParallel* dp = data_parallel();
  if (dp && !dp->writes()) return;
  fs::path ckdir = run_dir_ / "checkpoints";
  std::string name = fmt::format("step-{:07}", step_);
  fs::path tmp = ckdir / (name + ".tmp");
  fs::path dst = ckdir / name;
  remove_checkpoint_temporaries(run_dir_);
  fs::create_directories(tmp);
  torch::serialize::OutputArchive ar;
  for (const auto& [key, p] : trained()) ar.write(key, p.detach().cpu());
  torch::serialize::OutputArchive opt;
  optimizer_->save(opt);
  ar.write("optimizer", opt);
  ar.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  // Serialized in memory and written by our own writer: libtorch's file writer throws from its
  // destructor when the disk is full, which ends the process instead of failing the step.
  std::ostringstream state;
  ar.save_to(state);
  write_file_atomic(tmp / "state.pt", state.str());
  json tj = {{"step", step_},
             {"tokens_seen", tokens_seen_},
             {"cursor", {{"seed", cursor_.seed}, {"epoch", cursor_.epoch}, {"position", cursor_.position}}},
             {"elapsed_s", elapsed_before_},
             {"world_size", dp ? dp->world_size() : 1},
             {"options", options_.to_json()},
             {"last_eval", last_eval_}};
  write_file_atomic(tmp / "trainer.json", tj.dump(2) + "\n");
  fsync_path(tmp / "state.pt", false);
  fsync_path(tmp / "trainer.json", false);
  // Last: the SHA-256 of each file, which a resume checks before it loads anything.
  write_checkpoint_sums(tmp, {"state.pt", "trainer.json"});
  fsync_path(tmp, true);
  fs::remove_all(dst);
  fs::rename(tmp, dst);
  fsync_path(ckdir, true);
  write_file_atomic(ckdir / "latest", name + "\n");
  // Older checkpoints beyond the ones to keep.
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(ckdir))
    if (e.is_directory() && e.path().filename().string().starts_with("step-") && e.path().extension() != ".tmp")
      all.push_back(e.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + std::max(1, options_.keep_checkpoints) < all.size(); ++i) fs::remove_all(all[i]);
}

void Trainer::run(const LossFn& loss_fn, const EvalFn& eval, const CheckpointFn& on_checkpoint) {
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  stop_requested() = false;
  torch::Device device = model_->device();
  DataParallel* dp = data_parallel();
  const bool writes = !dp || dp->writes();
  const int world = dp ? dp->world_size() : 1;
  Progress progress("train", options_.steps, step_);
  progress.set_quiet(options_.quiet || !writes);
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return elapsed_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<torch::Tensor> params;
  for (auto& [key, p] : trained()) params.push_back(p);
  if (dp) {
    // Every rank starts from rank 0's weights (a resume has already given all of them the same
    // checkpoint), and reduces its gradients through the bucket hooks.
    {
      torch::NoGradGuard no_grad;
      dp->broadcast(params);
    }
    dp->attach(params);
  }
  auto do_eval = [&] {
    if (!eval) return;
    model_->eval();
    json e = eval(step_);
    model_->train();
    e["step"] = step_;
    e["split"] = "valid";
    e["tokens_seen"] = tokens_seen_;
    last_eval_ = e;
    append_metrics(e);
  };
  auto checkpoint = [&] {
    double before = elapsed_before_;
    elapsed_before_ = elapsed();
    save_checkpoint();
    elapsed_before_ = before;
    if (on_checkpoint && writes) on_checkpoint(step_, last_eval_);
  };
  model_->train();
  bool stop = false;
  while (step_ < options_.steps && !stop) {
    auto step_t0 = std::chrono::steady_clock::now();
    double lr = learning_rate(options_, step_);
    for (auto& g : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    optimizer_->zero_grad();
    // The step's rows: one global draw of world x batch rows per micro-batch, of which this rank
    // takes its slice. Each rank's loss is a mean over its loss tokens; scaled by its share of the
    // global count, the sum over ranks is the global batch's mean (exact when counts differ).
    std::vector<std::vector<int64_t>> micro_rows;
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      auto global = cursor_.next(options_.batch_size * world, train_.rows());
      micro_rows.push_back(dp ? rank_slice(global, dp->rank(), world) : global);
    }
    std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
    torch::Tensor counts = torch::zeros({options_.grad_accum}, torch::kFloat64);  // (grad_accum) loss tokens
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      batches.push_back(batch_of(train_, micro_rows[micro], device));
      counts[micro] = batches.back().second.slice(1, 1).sum().item<double>();
    }
    torch::Tensor shares = torch::ones({options_.grad_accum}, torch::kFloat64);
    if (dp) {
      torch::Tensor global = counts.clone();
      dp->all_reduce_sum(global);
      shares = torch::where(global > 0, counts / global.clamp_min(1), torch::full_like(counts, 1.0 / world));
    }
    double loss_sum = 0;
    int64_t tokens = 0;
    std::map<std::string, double> stats;
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      const auto& rows = micro_rows[micro];
      const auto& [tok, mask] = batches[micro];
      const double share = shares[micro].item<double>();
      if (dp) dp->arm(micro + 1 == options_.grad_accum);
      StepResult r;
      {
        AutocastGuard autocast(options_.bf16, device);
        r = loss_fn(tok, mask, rows, step_);
      }
      if (!r.loss.defined() || r.loss.numel() != 1) fail("the loss function returned no scalar loss");
      (r.loss * (share / static_cast<double>(options_.grad_accum))).backward();
      double l = r.loss.item<double>();
      if (!std::isfinite(l)) fail("loss is {} at step {} (lower --lr, or check the data)", l, step_ + 1);
      loss_sum += l * share;
      tokens += r.tokens;
      for (const auto& [k, v] : r.stats) stats[k] += v * share / static_cast<double>(options_.grad_accum);
    }
    if (dp) {
      dp->finish();
      // One message for what every rank logs: loss, stats, tokens, and whether any rank was asked
      // to stop (all ranks stop after the same step).
      std::vector<double> v = {loss_sum, static_cast<double>(tokens), stop_requested() ? 1.0 : 0.0};
      for (const auto& [k, x] : stats) v.push_back(x);
      torch::Tensor t = torch::tensor(v, torch::kFloat64);
      dp->all_reduce_sum(t);
      loss_sum = t[0].item<double>();
      tokens = static_cast<int64_t>(std::llround(t[1].item<double>()));
      stop = t[2].item<double>() > 0;
      size_t i = 3;
      for (auto& [k, x] : stats) x = t[static_cast<int64_t>(i++)].item<double>();
    } else {
      stop = stop_requested();
    }
    double grad_norm = options_.clip > 0 ? torch::nn::utils::clip_grad_norm_(params, options_.clip)
                                         : torch::nn::utils::clip_grad_norm_(params, 1e30);
    optimizer_->step();
    ++step_;
    tokens_seen_ += tokens;
    double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_t0).count();
    double loss = loss_sum / static_cast<double>(options_.grad_accum);
    json line = {{"step", step_}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                 {"tokens", tokens_seen_}, {"tok_per_s", std::round(tokens / step_s)},
                 {"elapsed_s", std::round(elapsed() * 10) / 10}};
    if (dp) line["allreduce_wait_s"] = dp->take_wait_seconds();
    for (const auto& [k, v] : stats) line[k] = v;
    append_metrics(line);
    progress.update(step_, tokens, {{"loss", loss}});
    if (dp && dp->options().check_every > 0 && step_ % dp->options().check_every == 0) dp->check_identical(params, step_);
    bool last = step_ == options_.steps;
    if (last || (options_.eval_every > 0 && step_ % options_.eval_every == 0)) do_eval();
    if (last || stop || (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0)) checkpoint();
  }
  if (dp && step_ == options_.steps) dp->check_identical(params, step_);
  progress.finish();
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
}

}  // namespace lineage::distill
