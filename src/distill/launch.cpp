// The worker's place from torchrun's environment, and the --nproc launcher (see launch.h).
#include "lineage/distill/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <csignal>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "lineage/core/error.h"

namespace lineage::distill {

namespace {

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v, &end, 10);
  if (errno || *end || x < lo || x > hi) fail("environment variable {}='{}': expected an integer in [{}, {}]", name, v, lo, hi);
  return static_cast<int>(x);
}

volatile sig_atomic_t g_forward_signal = 0;
void remember_signal(int sig) { g_forward_signal = sig; }

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + ::strsignal(WTERMSIG(status));
  return "stopped";
}

}  // namespace

int free_local_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("cannot open a socket to find a free port: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    fail("cannot find a free port on 127.0.0.1: {}", std::strerror(errno));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

WorldInfo world_from_env() {
  WorldInfo w;
  w.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  if (w.world_size == 1) return w;
  if (!std::getenv("RANK")) fail("WORLD_SIZE={} is set but RANK is not: each worker needs its RANK (0..{})", w.world_size, w.world_size - 1);
  w.rank = env_int("RANK", 0, 0, w.world_size - 1);
  w.local_rank = env_int("LOCAL_RANK", w.rank, 0, w.world_size - 1);
  w.local_world_size = env_int("LOCAL_WORLD_SIZE", w.world_size, 1, w.world_size);
  const char* addr = std::getenv("MASTER_ADDR");
  if (addr && *addr) w.master_addr = addr;
  if (!std::getenv("MASTER_PORT")) fail("WORLD_SIZE={} is set but MASTER_PORT is not: rank 0's rendezvous port is needed", w.world_size);
  w.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  return w;
}

int launch_workers(const LaunchOptions& o, const std::vector<std::string>& args) {
  if (o.nproc < 1) fail("--nproc {} must be at least 1", o.nproc);
  if (o.nnodes < 1) fail("--nnodes {} must be at least 1", o.nnodes);
  if (o.node_rank < 0 || o.node_rank >= o.nnodes) fail("--node-rank {} must be in [0, {}]", o.node_rank, o.nnodes - 1);
  // Several nodes must agree on the port without talking first: torchrun's default then.
  const int port = o.master_port > 0 ? o.master_port : (o.nnodes == 1 ? free_local_port() : 29500);
  const int world = o.nnodes * o.nproc;
  std::fprintf(stderr, "launch: %d worker%s on this node (node %d of %d, world size %d), rendezvous %s:%d\n", o.nproc,
               o.nproc == 1 ? "" : "s", o.node_rank, o.nnodes, world, o.master_addr.c_str(), port);
  std::vector<pid_t> pids;
  for (int local = 0; local < o.nproc; ++local) {
    const int rank = o.node_rank * o.nproc + local;
    pid_t pid = ::fork();
    if (pid < 0) fail("cannot start worker {}: fork failed: {}", rank, std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(o.node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      // As torchrun: workers share the cores instead of each taking all of them (libtorch and
      // OpenBLAS both read OMP_NUM_THREADS), unless the user chose.
      if (!std::getenv("OMP_NUM_THREADS")) {
        long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
        ::setenv("OMP_NUM_THREADS", std::to_string(std::max<long>(1, cores / o.nproc)).c_str(), 1);
      }
      std::vector<char*> argv;
      std::string self = "/proc/self/exe";
      argv.push_back(self.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "launch: cannot start worker %d: %s\n", rank, std::strerror(errno));
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  auto old_int = std::signal(SIGINT, remember_signal);
  auto old_term = std::signal(SIGTERM, remember_signal);
  std::vector<bool> done(pids.size(), false);
  int result = 0;
  size_t left = pids.size();
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  while (left > 0) {
    if (g_forward_signal) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i]) ::kill(pids[i], g_forward_signal);
      g_forward_signal = 0;
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (pids[i] != pid || done[i]) continue;
        done[i] = true;
        --left;
        const int rank = o.node_rank * o.nproc + static_cast<int>(i);
        bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (failed && !stopping) {
          std::fprintf(stderr, "launch: worker rank %d %s; stopping the other workers\n", rank, describe_status(status).c_str());
          result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          stopping = true;
          stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          for (size_t j = 0; j < pids.size(); ++j)
            if (!done[j]) ::kill(pids[j], SIGTERM);
        }
      }
      continue;
    }
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) {
      for (size_t j = 0; j < pids.size(); ++j)
        if (!done[j]) ::kill(pids[j], SIGKILL);
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  return result;
}

}  // namespace lineage::distill
