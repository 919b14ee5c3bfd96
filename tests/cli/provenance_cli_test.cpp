// `lineage provenance` against an API nobody here wrote: llama.cpp's llama-server serves the
// embedded teacher (Lineage's own GGUF export), and the black-box test, asking it over
// /v1/completions, attributes it to the teacher's file and not to an unrelated model; the JSON
// carries the table. Bad flags fail naming the flag.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include <httplib.h>

#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

int free_port() {
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

// llama.cpp's server as a child process, ready once /health answers 200.
struct LlamaServer {
  pid_t pid = -1;
  int port = 0;
  LlamaServer(const fs::path& bin, const fs::path& model, const fs::path& log) : port(free_port()) {
    std::string cmd = "exec " + quote(bin.string()) + " -m " + quote(model.string()) + " --host 127.0.0.1 --port " +
                      std::to_string(port) + " -t 2 -c 512 -np 2 >" + quote(log.string()) + " 2>&1";
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
};

TEST(ProvenanceCli, ATeacherServedByLlamaCppIsAttributedToItsOwnFile) {
  const fs::path server = testing::shared_dir() / "tools" / "llama.cpp" / "bin" / "llama-server";
  if (!fs::exists(server)) GTEST_SKIP() << "../shared/tools/llama.cpp is missing: llama.cpp's server is the API under test";
  if (!fs::exists(testing::embedded_teacher())) GTEST_SKIP() << "models/lineage-kjv-5m.gguf is missing";
  TempDir tmp;
  const std::string teacher = testing::embedded_teacher().string();
  testing::write_tiny_teacher(tmp / "unrelated.gguf", 7, 32, 2, 0.5);
  testing::write_tiny_teacher(tmp / "control.gguf", 8, 32, 2, 0.5);
  testing::spit(tmp / "text.txt", testing::tiny_corpus(300));
  LlamaServer llama(server, teacher, tmp / "llama.log");
  ASSERT_GT(llama.port, 0) << testing::slurp(tmp / "llama.log");
  const std::string url = "http://127.0.0.1:" + std::to_string(llama.port) + "/v1";
  auto r = run_lineage("provenance -q --suspect " + url + " --tokenizer " + quote(teacher) + " --candidate " + quote(teacher) +
                       " --candidate " + quote((tmp / "unrelated.gguf").string()) + " --reference " +
                       quote((tmp / "control.gguf").string()) + " --text " + quote((tmp / "text.txt").string()) +
                       " --queries 60 --prompt-tokens 8 --gen-tokens 16 --outputs-decide --json " + quote((tmp / "v.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto v = nlohmann::json::parse(testing::slurp(tmp / "v.json"));
  EXPECT_EQ(v["verdict"], "lineage-kjv-5m.gguf") << r.out;
  for (const auto& row : v["rows"])
    if (row["candidate"] == "lineage-kjv-5m.gguf" && row["method"] == "blackbox") {
      EXPECT_GT(row["value"].get<double>(), 0.6) << r.out;  // llama.cpp's greedy text and ours, token by token
      EXPECT_LT(row["p_value"].get<double>(), 1e-6) << r.out;
      EXPECT_EQ(row["queries_or_tokens"].get<int64_t>(), 60);
    }
  EXPECT_NE(r.out.find("verdict: derived from lineage-kjv-5m.gguf"), std::string::npos) << r.out;

  auto bad = run_lineage("provenance --suspect " + quote(teacher) + " --candidate " + quote(teacher) + " --text " +
                         quote((tmp / "text.txt").string()) + " --alpha 2");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--alpha 2"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace lineage
