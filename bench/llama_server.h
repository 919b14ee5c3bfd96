// llama.cpp's server as a child process for the benches that compare with it (bench_serve,
// bench_speculative): spawned on a free loopback port, waited for until healthy, killed at scope end.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace lineage::bench {

// llama.cpp's server on `model`, `slots` parallel sequences of `ctx` tokens each, on a free port.
struct LlamaServer {
  pid_t pid = -1;
  int port = 0;
  LlamaServer(const std::string& exe, const std::string& model, int slots, int ctx, int threads, const std::string& log,
              const std::vector<std::string>& extra = {}) {
    // A free port: bind port 0, read it, release it.
    {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof a;
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
        throw std::runtime_error("cannot find a free port");
      port = ntohs(a.sin_port);
      ::close(fd);
    }
    std::vector<std::string> args = {exe, "-m", model, "--host", "127.0.0.1", "--port", std::to_string(port), "-np",
                                     std::to_string(slots), "-c", std::to_string(ctx * slots), "-t", std::to_string(threads),
                                     "-tb", std::to_string(threads), "--no-webui"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    if (pid < 0) throw std::runtime_error("cannot start " + exe);
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 600; ++i) {  // up to 60 s to load
      auto r = c.Get("/health");
      if (r && r->status == 200) return;
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        throw std::runtime_error("llama-server exited at start; see " + log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("llama-server did not become healthy in 60 s; see " + log);
  }
  ~LlamaServer() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

}  // namespace lineage::bench
