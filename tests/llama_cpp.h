// llama.cpp's prebuilt tools in ../shared/tools/llama.cpp, run as a user runs them: the external
// judge of Lineage's GGUF files, perplexity and HTTP teacher. Tests skip when they are absent.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <httplib.h>

#include "test_util.h"

namespace lineage::testing {

inline fs::path llama_cpp_bin(const std::string& tool) { return shared_dir() / "tools" / "llama.cpp" / "bin" / tool; }

// Skips the calling test when the llama.cpp tool is absent.
#define LINEAGE_REQUIRE_LLAMA_CPP(tool)                                                             \
  do {                                                                                              \
    if (!std::filesystem::exists(::lineage::testing::llama_cpp_bin(tool)))                          \
      GTEST_SKIP() << "../shared/tools/llama.cpp/bin/" << (tool) << " is absent: llama.cpp check skipped"; \
  } while (0)

inline int free_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

// Runs a shell command line; its exit status, stdout and stderr.
inline CliResult run_shell(const std::string& cmd) {
  TempDir tmp;
  std::string full = cmd + " >'" + (tmp / "out").string() + "' 2>'" + (tmp / "err").string() + "'";
  int status = std::system(full.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(tmp / "out"), slurp(tmp / "err")};
}

// llama.cpp's server as a child process, ready once /health answers 200 (port 0 when it never did).
struct LlamaServer {
  pid_t pid = -1;
  int port = 0;
  LlamaServer(const fs::path& bin, const fs::path& model, const fs::path& log, const std::string& extra = "")
      : port(free_port()) {
    std::string cmd = "exec " + quote(bin.string()) + " -m " + quote(model.string()) + " --host 127.0.0.1 --port " +
                      std::to_string(port) + " -t 2 -c 512 -np 2 " + extra + " >" + quote(log.string()) + " 2>&1";
    pid = fork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 300; ++i) {
      auto r = c.Get("/health");
      if (r && r->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    port = 0;
  }
  ~LlamaServer() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
  LlamaServer(const LlamaServer&) = delete;
};

}  // namespace lineage::testing
