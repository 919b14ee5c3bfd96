// A distillation step at a real vocabulary: V = 128,256 (Llama 3's), student C 512 x 4 layers,
// in-process teacher C 768 x 6 layers, 8 x 512 tokens, online forward KL over the full
// vocabulary + AdamW — unchunked (the (N, V) logits of both models, their softmaxes and
// gradients) against the chunked objective (distill/chunked_loss.h) at several chunk sizes.
// Each configuration runs in a fresh process (this binary again) so that its peak resident
// memory is its own; a process that runs out of memory is reported as such.
// Prints one JSON line per configuration and a ratio line.
//   bench_chunked_kd [--steps N] [--chunks 0,256,512,1024,2048] [--vocab V] [--threads T]
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.h"
#include "lineage/core/threads.h"
#include "lineage/distill/chunked_loss.h"
#include "lineage/distill/losses.h"
#include "lineage/model/llama.h"

extern char** environ;

namespace {

using namespace lineage;
using json = nlohmann::json;

model::ModelConfig config(int64_t vocab, int64_t dim, int64_t layers, int64_t hidden, int64_t context) {
  model::ModelConfig c;
  c.vocab_size = vocab;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.hidden_dim = hidden;
  c.max_seq_len = context;
  c.tie_embeddings = true;
  return c;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// One configuration: `chunk` rows per chunk (0: unchunked). Prints its JSON line.
int worker(int64_t chunk, int steps, int64_t vocab) {
  const int64_t B = 8, T = 512;
  torch::manual_seed(0);
  model::Llama student(config(vocab, 512, 4, 1408, T));
  model::Llama teacher(config(vocab, 768, 6, 2048, T));
  student->init_weights();
  teacher->init_weights();
  teacher->eval();
  auto data = torch::randint(0, vocab, {B, T + 1}, torch::kLong);
  auto x = data.narrow(1, 0, T), y = data.narrow(1, 1, T).reshape({-1});
  auto mask = torch::ones({B * T}, torch::kBool);
  torch::optim::AdamW opt(student->parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.1));
  distill::KDOptions kd;
  const double base_mb = peak_rss_mb();
  double total_s = 0, loss = 0;
  for (int s = 0; s <= steps; ++s) {
    double t0 = bench::now_s();
    opt.zero_grad();
    torch::Tensor l;
    if (chunk == 0) {
      auto logits = student->forward(x).reshape({-1, vocab});  // (B*T, V)
      torch::Tensor t;
      {
        torch::NoGradGuard no_grad;
        t = teacher->forward(x).reshape({-1, vocab});  // (B*T, V)
      }
      l = distill::kd_loss(logits, t, mask, kd);
    } else {
      auto h = student->hidden(x).reshape({B * T, -1});  // (B*T, C)
      torch::Tensor th;
      {
        torch::NoGradGuard no_grad;
        th = teacher->hidden(x).reshape({B * T, -1});  // (B*T, Ct)
      }
      torch::Tensor thead = teacher->head_weight();
      distill::ChunkTeacher ct;
      ct.logits = [&](int64_t b, int64_t e) { return torch::matmul(th.narrow(0, b, e - b), thead.t()); };
      l = distill::chunked_kd_and_ce(h, student->head_weight(), y, mask, ct, kd, 1.0, chunk).loss;
    }
    l.backward();
    opt.step();
    loss = l.item<double>();
    if (s > 0) total_s += bench::now_s() - t0;  // the first step is a warm-up
  }
  bench::emit({{"bench", "chunked_kd_step"}, {"vocab", vocab}, {"tokens", B * T}, {"chunk_rows", chunk},
               {"student_params", student->config().num_parameters()}, {"teacher_params", teacher->config().num_parameters()},
               {"threads", torch::get_num_threads()}, {"steps", steps}, {"tok_per_s", std::round(B * T * steps / total_s * 10) / 10},
               {"step_s", std::round(total_s / steps * 100) / 100}, {"peak_rss_mb", std::round(peak_rss_mb())},
               {"peak_rss_mb_before_steps", std::round(base_mb)}, {"loss", loss}});
  return 0;
}

json run_config(const char* self, int64_t chunk, int steps, int64_t vocab, int threads) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  std::vector<std::string> args = {self, "--worker", std::to_string(chunk), "--steps", std::to_string(steps),
                                   "--vocab", std::to_string(vocab), "--threads", std::to_string(threads)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  pid_t pid = -1;
  posix_spawn(&pid, self, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("{", 0) == 0) return json::parse(line);
  return {{"bench", "chunked_kd_step"}, {"vocab", vocab}, {"chunk_rows", chunk},
          {"failed", WIFSIGNALED(status) ? std::string("killed by signal ") + strsignal(WTERMSIG(status)) + " (out of memory?)"
                                         : "exit status " + std::to_string(WEXITSTATUS(status)) + " (out of memory?)"}};
}

}  // namespace

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  int steps = 2, threads = 2;
  int64_t vocab = 128256, worker_chunk = -1;
  std::string chunks = "0,256,512,1024,2048";
  for (int i = 1; i + 1 < argc; ++i) {
    std::string a = argv[i];
    if (a == "--steps") steps = std::atoi(argv[++i]);
    else if (a == "--chunks") chunks = argv[++i];
    else if (a == "--vocab") vocab = std::atoll(argv[++i]);
    else if (a == "--threads") threads = std::atoi(argv[++i]);
    else if (a == "--worker") worker_chunk = std::atoll(argv[++i]);
  }
  torch::set_num_threads(threads);
  if (worker_chunk >= 0) return worker(worker_chunk, steps, vocab);
  std::vector<json> lines;
  std::istringstream in(chunks);
  for (std::string c; std::getline(in, c, ',');) {
    lines.push_back(run_config(argv[0], std::atoll(c.c_str()), steps, vocab, threads));
    bench::emit(lines.back());
  }
  if (lines.size() > 1 && lines[0].value("chunk_rows", -1) == 0) {
    json r = {{"bench", "chunked_kd_ratio"}, {"vocab", vocab}};
    for (size_t i = 1; i < lines.size(); ++i) {
      const std::string k = std::to_string(lines[i]["chunk_rows"].get<int64_t>());
      if (!lines[i].contains("peak_rss_mb")) continue;
      if (lines[0].contains("peak_rss_mb")) {
        r["peak_share_chunk_" + k] = std::round(1000 * lines[i]["peak_rss_mb"].get<double>() / lines[0]["peak_rss_mb"].get<double>()) / 1000;
        r["speed_ratio_chunk_" + k] = std::round(100 * lines[i]["tok_per_s"].get<double>() / lines[0]["tok_per_s"].get<double>()) / 100;
      } else {
        r["unchunked"] = lines[0]["failed"];
      }
    }
    bench::emit(r);
  }
  return 0;
}
