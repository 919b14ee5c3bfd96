// Helpers shared by the test binaries: where ../shared is (tests that need it skip with a message
// when it is absent), scratch folders, and running the lineage binary as a user would.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lineage/core/error.h"

namespace lineage::testing {

namespace fs = std::filesystem;

inline fs::path shared_dir() { return fs::path(LINEAGE_SOURCE_DIR).parent_path() / "shared"; }

inline fs::path stories_dir() { return shared_dir() / "models" / "stories260K"; }

// Skips the calling test when ../shared is absent (a user's fresh machine has none; CI has it).
#define LINEAGE_REQUIRE_SHARED()                                                                   \
  do {                                                                                             \
    if (!std::filesystem::exists(::lineage::testing::stories_dir() / "stories260K.bin"))           \
      GTEST_SKIP() << "../shared/models/stories260K is absent: real-model test skipped";           \
  } while (0)

// A fresh folder under the system temp dir, removed when the object dies.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("lineage-test-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& name) const { return path / name; }
};

// The message of the lineage::Error that f throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void spit(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary);
  out << data;
}

struct CliResult {
  int exit_code;
  std::string out, err;
};

// Runs `lineage <args>` through the shell (args are shell words, quote as needed).
inline CliResult run_lineage(const std::string& args) {
  TempDir tmp;
  std::string cmd = std::string("'") + LINEAGE_BINARY + "' " + args + " >'" + (tmp / "out").string() + "' 2>'" +
                    (tmp / "err").string() + "'";
  int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(tmp / "out"), slurp(tmp / "err")};
}

// One record of tests/data/stories260K_llama2c_reference.txt (dumped from llama2.c's run.c):
// the prompt, its ids from run.c's encode (BOS first), the text run.c printed, and its -n steps.
struct Llama2cReference {
  std::string prompt, text;
  std::vector<int32_t> ids;
  int steps = 0;
};

// Records are PROMPT, IDS, TEXT, STEPS lines, tab-separated; TEXT escapes newlines as \n.
inline std::vector<Llama2cReference> load_llama2c_reference() {
  std::ifstream in(std::string(LINEAGE_SOURCE_DIR) + "/tests/data/stories260K_llama2c_reference.txt");
  std::vector<Llama2cReference> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PROMPT\t", 0) == 0) {
      out.push_back({line.substr(7)});
    } else if (line.rfind("IDS\t", 0) == 0) {
      std::istringstream ss(line.substr(4));
      int id;
      while (ss >> id) out.back().ids.push_back(id);
    } else if (line.rfind("TEXT\t", 0) == 0) {
      std::string t = line.substr(5);
      for (size_t i = 0; i < t.size(); ++i) {
        if (t[i] == '\\' && i + 1 < t.size()) out.back().text += (t[++i] == 'n') ? '\n' : t[i];
        else out.back().text += t[i];
      }
    } else if (line.rfind("STEPS\t", 0) == 0) {
      out.back().steps = std::stoi(line.substr(6));
    }
  }
  return out;
}

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The embedded default teacher, and the King James Bible as text (scripts/kjv_text.sh, from
// Debian's bible-kjv) for the tests that distill from it.
inline fs::path embedded_teacher() { return fs::path(LINEAGE_SOURCE_DIR) / "models" / "lineage-kjv-5m.gguf"; }

#define LINEAGE_REQUIRE_EMBEDDED_TEACHER_AND_KJV()                                                         \
  do {                                                                                                     \
    if (!std::filesystem::exists(::lineage::testing::embedded_teacher()))                                  \
      GTEST_SKIP() << "models/lineage-kjv-5m.gguf is missing";                                             \
    if (std::system("command -v bible >/dev/null 2>&1") != 0)                                              \
      GTEST_SKIP() << "the 'bible' program (Debian package bible-kjv, installed by scripts/setup.sh) is missing"; \
  } while (0)

// Writes the KJV text to `path` (true on success).
inline bool write_kjv(const fs::path& path) {
  return std::system((quote(std::string(LINEAGE_SOURCE_DIR) + "/scripts/kjv_text.sh") + " " + quote(path.string())).c_str()) == 0;
}

// The student's validation perplexity a finished distillation run wrote to summary.json.
inline double student_perplexity(const fs::path& run) {
  return nlohmann::json::parse(slurp(run / "summary.json"))["student"]["perplexity"].get<double>();
}

}  // namespace lineage::testing
