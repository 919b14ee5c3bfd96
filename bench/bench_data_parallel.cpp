// Data-parallel step on the 10.4M bench config (vocab 4096, global batch 8 x 256, full-vocab
// forward KL to a fixed random teacher distribution, AdamW): one rank with 2 threads, and with 1,
// against two ranks with 1 thread each over Gloo on loopback, with and without overlapping the bucketed
// all-reduce with backward. Each configuration runs in fresh processes (this binary started again
// as its workers, with torchrun's environment). Prints one JSON line per configuration and one
// with the ratios.   bench_data_parallel [--steps N]
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "lineage/core/threads.h"
#include "lineage/distill/data_parallel.h"
#include "lineage/distill/launch.h"
#include "lineage/distill/losses.h"
#include "lineage/model/llama.h"

extern char** environ;

namespace {

using namespace lineage;
using json = nlohmann::json;

constexpr int64_t kGlobalBatch = 8, kContext = 256;

// A worker: `steps` timed steps after one untimed; rank 0 prints its figures as one JSON line.
int worker(int steps) {
  distill::WorldInfo w = distill::world_from_env();
  const int threads = std::atoi(std::getenv("BENCH_THREADS"));
  torch::set_num_threads(threads);
  distill::ParallelOptions po;
  po.overlap = std::string(std::getenv("BENCH_OVERLAP")) == "1";
  std::unique_ptr<distill::DataParallel> dp;
  if (w.world_size > 1) dp = std::make_unique<distill::DataParallel>(w, po, torch::kCPU);
  torch::manual_seed(0);
  const model::ModelConfig c = bench::step_bench_config(kContext);
  auto data = torch::randint(0, c.vocab_size, {kGlobalBatch, kContext + 1}, torch::kLong);  // (8, T+1) the global batch
  auto teacher = torch::randn({kGlobalBatch, kContext, c.vocab_size}) * 3;                  // (8, T, V)
  const int64_t B = kGlobalBatch / w.world_size;
  auto mine = data.narrow(0, w.rank * B, B);
  auto x = mine.narrow(1, 0, kContext);
  auto t = teacher.narrow(0, w.rank * B, B).reshape({-1, c.vocab_size});
  auto mask = torch::ones({B * kContext}, torch::kBool);
  model::Llama net(c);
  net->init_weights();
  net->train();
  auto params = net->parameters();
  if (dp) dp->attach(params);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(3e-4).weight_decay(0.1));
  distill::KDOptions kd;
  double wait_s = 0, total_s = 0, loss = 0;
  for (int s = 0; s <= steps; ++s) {
    double t0 = bench::now_s();
    opt.zero_grad();
    if (dp) dp->arm(true);
    auto logits = net->forward(x).reshape({-1, c.vocab_size});  // (B*T, V)
    auto l = distill::kd_loss(logits, t, mask, kd);
    (l * (1.0 / w.world_size)).backward();
    if (dp) dp->finish();
    opt.step();
    loss = l.item<double>();
    double dt = bench::now_s() - t0;
    double waited = dp ? dp->take_wait_seconds() : 0;
    if (s == 0) continue;  // warm-up
    total_s += dt;
    wait_s += waited;
  }
  if (w.rank == 0)
    bench::emit({{"bench", "data_parallel_step"}, {"params", c.num_parameters()}, {"ranks", w.world_size},
                 {"threads_per_rank", threads}, {"overlap", dp ? json(po.overlap) : json(nullptr)},
                 {"global_batch", kGlobalBatch}, {"context", kContext}, {"steps", steps},
                 {"tok_per_s", std::round(kGlobalBatch * kContext * steps / total_s)},
                 {"step_ms", std::round(1000 * total_s / steps * 10) / 10},
                 {"allreduce_wait_share", std::round(1000 * wait_s / total_s) / 1000}, {"last_loss", loss}});
  return 0;
}

// Runs one configuration in fresh processes; returns rank 0's JSON line.
json run_config(const char* self, int ranks, int threads, bool overlap, int steps) {
  const int port = distill::free_local_port();
  std::vector<pid_t> pids;
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  for (int r = 0; r < ranks; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.push_back(*e);
    for (const std::string& kv : std::vector<std::string>{"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(ranks), std::string("MASTER_ADDR=127.0.0.1"),
                           "MASTER_PORT=" + std::to_string(port), "BENCH_THREADS=" + std::to_string(threads),
                           "OMP_NUM_THREADS=" + std::to_string(threads), "OPENBLAS_NUM_THREADS=" + std::to_string(threads),
                           "BENCH_OVERLAP=" + std::string(overlap ? "1" : "0")})
      env.push_back(kv);
    std::vector<char*> envp;
    for (auto& v : env) envp.push_back(v.data());
    envp.push_back(nullptr);
    std::string steps_s = std::to_string(steps), flag = "--steps";
    std::vector<char*> argv = {const_cast<char*>(self), flag.data(), steps_s.data(), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    pid_t pid = -1;
    posix_spawn(&pid, self, &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    pids.push_back(pid);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("{", 0) == 0) return json::parse(line);
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  int steps = 8;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--steps") steps = std::atoi(argv[i + 1]);
  if (std::getenv("WORLD_SIZE")) return worker(steps);
  json one = run_config(argv[0], 1, 2, false, steps);
  json one1 = run_config(argv[0], 1, 1, false, steps);
  json two = run_config(argv[0], 2, 1, true, steps);
  json two_no = run_config(argv[0], 2, 1, false, steps);
  for (const json& j : {one, one1, two, two_no}) bench::emit(j);
  auto tps = [](const json& j) { return j["tok_per_s"].get<double>(); };
  if (one.contains("tok_per_s") && one1.contains("tok_per_s") && two.contains("tok_per_s") && two_no.contains("tok_per_s"))
    bench::emit({{"bench", "data_parallel_ratio"},
                 {"two_ranks_1_thread_vs_one_rank_2_threads", std::round(100 * tps(two) / tps(one)) / 100},
                 {"two_ranks_1_thread_vs_one_rank_1_thread", std::round(100 * tps(two) / tps(one1)) / 100},
                 {"overlap_vs_no_overlap", std::round(100 * tps(two) / tps(two_no)) / 100},
                 {"allreduce_wait_share_overlap", two["allreduce_wait_share"]},
                 {"allreduce_wait_share_no_overlap", two_no["allreduce_wait_share"]}});
  return 0;
}
