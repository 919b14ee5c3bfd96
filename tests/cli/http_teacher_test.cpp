// Black-box distillation on loopback: `lineage serve` serves the embedded teacher behind an API
// key, `lineage distill --teacher http://127.0.0.1:PORT/v1` distills a student from its answers
// (top-20 log-probabilities of every position through echo + logprobs), and the student comes out
// within 5% of the same recipe run with the teacher in-process. A second run with the first's
// journal asks the server nothing but the start-up probes; SIGTERM stops the server cleanly.
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;
using json = nlohmann::json;

// `lineage serve ...` as a child process; the port is read from what it prints.
struct ServeProcess {
  pid_t pid = -1;
  int port = 0;
  fs::path out, err;
  ServeProcess(const std::string& args, const TempDir& tmp) : out(tmp / "serve.out"), err(tmp / "serve.err") {
    std::string cmd = "exec " + quote(LINEAGE_BINARY) + " serve --port 0 " + args + " >" + quote(out.string()) + " 2>" + quote(err.string());
    pid = fork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::regex re("listening on http://127\\.0\\.0\\.1:([0-9]+)/v1");
    for (int i = 0; i < 600 && port == 0; ++i) {
      std::smatch m;
      std::string s = testing::slurp(out);
      if (std::regex_search(s, m, re)) port = std::stoi(m[1]);
      else std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  // SIGTERM; the exit status (-1 when it did not exit within 30 s).
  int stop() {
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 300; ++i) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    pid = -1;
    return -1;
  }
  ~ServeProcess() { stop(); }
};

int64_t logged_requests(const fs::path& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return -1;
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM requests", -1, &st, nullptr);
  int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

TEST(HttpTeacher, DistillsFromLineageServeWithin5PercentOfTheInProcessTeacher) {
  LINEAGE_REQUIRE_EMBEDDED_TEACHER_AND_KJV();
  TempDir tmp;
  std::string kjv = (tmp / "kjv.txt").string();
  ASSERT_TRUE(testing::write_kjv(kjv));
  auto keys = (tmp / "keys.json").string();
  auto add = run_lineage("serve --api-keys " + quote(keys) + " --add-key distiller");
  ASSERT_EQ(add.exit_code, 0) << add.err;
  std::string key = add.out.substr(0, add.out.find('\n'));
  auto log = tmp / "requests.db";
  ServeProcess server("--model " + quote(testing::embedded_teacher().string()) + " --api-keys " + quote(keys) + " --log " + quote(log.string()) +
                          " --no-log-text",
                      tmp);
  ASSERT_GT(server.port, 0) << testing::slurp(server.err);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port) + "/v1";

  const std::string recipe = " --data " + quote(kjv) + " --max-examples 300 --seq-len 256 --dim 96 --layers 4 --heads 4 --kv-heads 2"
                             " --hidden 288 --steps 80 --batch-size 8 --lr 3e-3 --min-lr 3e-4 --warmup 10 --eval-every 0"
                             " --eval-rows 32 --checkpoint-every 0 --seed 1 --mode online --loss forward_kl --alpha 1"
                             " --top-k 20 --tail-samples 0 ";
  auto local = run_lineage("distill --teacher " + quote(testing::embedded_teacher().string()) + recipe + "--out " + quote((tmp / "local").string()));
  ASSERT_EQ(local.exit_code, 0) << local.err;
  // Without the key the teacher refuses, and the run says so.
  auto refused = run_lineage("distill --teacher " + url + " --tokenizer " + quote(testing::embedded_teacher().string()) + recipe + "--out " +
                             quote((tmp / "nokey").string()));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("API key"), std::string::npos) << refused.err;

  const std::string http_args = "distill --teacher " + url + " --api-key " + key + " --tokenizer " + quote(testing::embedded_teacher().string()) +
                                " --concurrency 8" + recipe;
  auto remote = run_lineage(http_args + "--out " + quote((tmp / "http").string()));
  ASSERT_EQ(remote.exit_code, 0) << remote.err;
  EXPECT_NE(remote.err.find("token ids yes"), std::string::npos) << remote.err;
  double a = testing::student_perplexity(tmp / "local"), b = testing::student_perplexity(tmp / "http");
  std::printf("validation perplexity, top-20 KD: in-process teacher %.3f, teacher over HTTP %.3f (%+.2f%%)\n", a, b, 100 * (b - a) / a);
  EXPECT_LT(std::abs(b - a) / a, 0.05);
  for (const char* f : {"recipe.json", "lineage.json"})
    EXPECT_EQ(testing::slurp(tmp / "http" / f).find(key), std::string::npos) << "the key must not be stored in " << f;

  // The journal: the same run again asks only the probes.
  int64_t before = logged_requests(log);
  fs::create_directories(tmp / "again");
  fs::copy_file(tmp / "http" / "teacher-answers.db", tmp / "again" / "teacher-answers.db");
  auto again = run_lineage(http_args + "--out " + quote((tmp / "again").string()));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  int64_t after = logged_requests(log);
  EXPECT_LE(after - before, 10) << "a journaled run asked the teacher again";
  EXPECT_NEAR(testing::student_perplexity(tmp / "again"), b, 1e-6 * b);

  // Sequence-level KD from the teacher's text, and on-policy KD scored through echo, run end to end.
  const std::string short_run = " --data " + quote(kjv) + " --max-examples 40 --seq-len 128 --dim 64 --layers 2 --heads 2"
                                " --steps 4 --batch-size 4 --eval-every 0 --eval-rows 4 --checkpoint-every 0 --seed 3 ";
  auto seq = run_lineage("distill --teacher " + url + " --api-key " + key + " --tokenizer " + quote(testing::embedded_teacher().string()) +
                         short_run + "--mode seq_kd --alpha 0 --gen-examples 12 --gen-tokens 24 --out " + quote((tmp / "seq").string()));
  EXPECT_EQ(seq.exit_code, 0) << seq.err;
  std::istringstream lines(testing::slurp(tmp / "seq" / "seq_kd.jsonl"));
  int completions = 0;
  for (std::string line; std::getline(lines, line);) completions += !json::parse(line)["completion"].empty();
  EXPECT_EQ(completions, 12);
  auto onp = run_lineage("distill --teacher " + url + " --api-key " + key + " --tokenizer " + quote(testing::embedded_teacher().string()) +
                         short_run + "--mode on_policy --lambda 1 --top-k 20 --tail-samples 0 --gen-tokens 16 --out " +
                         quote((tmp / "onp").string()));
  EXPECT_EQ(onp.exit_code, 0) << onp.err;

  EXPECT_EQ(server.stop(), 0) << testing::slurp(server.err);
  EXPECT_NE(testing::slurp(server.err).find("stopped"), std::string::npos);
  EXPECT_GT(logged_requests(log), 600);  // the log survives the shutdown, whole
}

// Two data-parallel workers harvest an HTTP teacher together: each asks for its own rows only,
// into one journal, so the job asks what one process asks (a few probes aside), and trains alike.
TEST(HttpTeacher, TwoWorkersShareTheHarvestWithoutAskingARowTwice) {
  LINEAGE_REQUIRE_EMBEDDED_TEACHER_AND_KJV();
  TempDir tmp;
  std::string kjv = (tmp / "kjv.txt").string();
  ASSERT_TRUE(testing::write_kjv(kjv));
  auto log = tmp / "requests.db";
  ServeProcess server("--model " + quote(testing::embedded_teacher().string()) + " --log " + quote(log.string()) + " --no-log-text", tmp);
  ASSERT_GT(server.port, 0) << testing::slurp(server.err);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port) + "/v1";
  const std::string recipe = "distill --teacher " + url + " --tokenizer " + quote(testing::embedded_teacher().string()) +
                             " --data " + quote(kjv) + " --max-examples 200 --seq-len 128 --dim 64 --layers 2 --heads 2"
                             " --steps 12 --eval-every 0 --eval-rows 8 --checkpoint-every 0 --seed 2 --mode online --alpha 1"
                             " --top-k 20 --tail-samples 0 --concurrency 4 ";
  int64_t before = logged_requests(log);
  auto one = run_lineage(recipe + "--batch-size 8 --out " + quote((tmp / "one").string()));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  int64_t asked_one = logged_requests(log) - before;
  before = logged_requests(log);
  auto two = run_lineage(recipe + "--batch-size 4 --nproc 2 --out " + quote((tmp / "two").string()));
  ASSERT_EQ(two.exit_code, 0) << two.err;
  int64_t asked_two = logged_requests(log) - before;
  std::printf("requests to the teacher: one process %lld, two workers %lld\n", static_cast<long long>(asked_one),
              static_cast<long long>(asked_two));
  EXPECT_GT(asked_one, 12 * 8 / 2);
  EXPECT_LE(asked_two, asked_one + 10) << "the workers asked rows twice";
  EXPECT_TRUE(fs::exists(tmp / "two" / "teacher-answers.db"));
  EXPECT_NEAR(testing::student_perplexity(tmp / "one"), testing::student_perplexity(tmp / "two"),
              1e-3 * testing::student_perplexity(tmp / "one"));
}

}  // namespace
}  // namespace lineage
