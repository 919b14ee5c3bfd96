// Child processes and this process's memory, for the tests that kill runs and watch for leaks.
#pragma once

#include <fcntl.h>
#include <spawn.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

extern char** environ;

namespace lineage::testing {

// Starts the lineage binary with `args` (no shell), stdout and stderr to `log` (appended, or the
// file started afresh), in this process's environment or `env` ("NAME=value" each); returns its pid.
inline pid_t spawn_lineage(const std::vector<std::string>& args, const std::filesystem::path& log, bool append = false,
                           const std::vector<std::string>* env = nullptr) {
  std::vector<std::string> all = {LINEAGE_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = -1;
  std::vector<std::string> env_copy = env ? *env : std::vector<std::string>{};
  std::vector<char*> envp;
  for (auto& v : env_copy) envp.push_back(v.data());
  envp.push_back(nullptr);
  EXPECT_EQ(posix_spawn(&pid, LINEAGE_BINARY, &fa, nullptr, argv.data(), env ? envp.data() : environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// This process's resident memory in KiB (Linux /proc): now (VmRSS), or its peak (VmHWM) since the
// start or the last reset_peak_resident().
inline int64_t status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size()));
  return 0;
}
inline int64_t resident_kb() { return status_kb("VmRSS"); }
inline int64_t peak_resident_kb() { return status_kb("VmHWM"); }
// Sets the peak back to the present resident size (Linux: "5" to /proc/self/clear_refs). False
// where the kernel does not allow it.
inline bool reset_peak_resident() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace lineage::testing
