// Checkpoint manifests (SHA256SUMS) and the choice of the checkpoint a resume loads. See
// include/lineage/distill/checkpoint.h.
#include "lineage/distill/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/hash.h"

namespace lineage::distill {

namespace fs = std::filesystem;

namespace {

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Every step-* folder (no .tmp), oldest first.
std::vector<fs::path> checkpoint_folders(const fs::path& ckdir) {
  std::vector<fs::path> all;
  std::error_code ec;
  if (!fs::is_directory(ckdir, ec)) return all;
  for (const auto& e : fs::directory_iterator(ckdir)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.starts_with("step-") && e.path().extension() != ".tmp") all.push_back(e.path());
  }
  std::sort(all.begin(), all.end());
  return all;
}

const std::vector<std::string>& required_files() {
  static const std::vector<std::string> files{"state.pt", "trainer.json"};
  return files;
}

}  // namespace

void write_checkpoint_sums(const fs::path& dir, const std::vector<std::string>& files) {
  std::vector<std::string> names = files;
  std::sort(names.begin(), names.end());
  std::string text;
  for (const auto& n : names) text += hex(sha256_file(dir / n)) + "  " + n + "\n";
  write_file_atomic(dir / kCheckpointSums, text);
}

void verify_checkpoint(const fs::path& dir, const std::vector<std::string>& required) {
  const fs::path sums = dir / kCheckpointSums;
  if (!fs::exists(sums))
    fail("checkpoint '{}' has no {} (its save did not finish, or it was written by a Lineage before 0.1 checked "
         "checkpoints); it cannot be verified", dir.string(), kCheckpointSums);
  const std::string text = read_file(sums);
  std::set<std::string> listed;
  size_t at = 0;
  int line = 0;
  while (at < text.size()) {
    ++line;
    const size_t end = text.find('\n', at);
    if (end == std::string::npos)
      fail("checkpoint file '{}' is damaged: line {} does not end with a newline", sums.string(), line);
    const std::string_view l(text.data() + at, end - at);
    at = end + 1;
    // "<64 lowercase hex>  <name>", the name a plain file name.
    if (l.size() < 67 || !std::all_of(l.begin(), l.begin() + 64, is_hex_lower) || l.substr(64, 2) != "  ")
      fail("checkpoint file '{}' is damaged: line {} is not '<64 hex digits>  <file name>'", sums.string(), line);
    const std::string name(l.substr(66));
    if (name.find('/') != std::string::npos || name == "." || name == ".." || name == kCheckpointSums ||
        name.find_first_of(std::string("\0\r\t ", 4)) != std::string::npos)
      fail("checkpoint file '{}' is damaged: line {} names '{}', not a file of the checkpoint", sums.string(), line, name);
    if (!listed.insert(name).second)
      fail("checkpoint file '{}' is damaged: '{}' is listed twice", sums.string(), name);
    const fs::path file = dir / name;
    if (!fs::is_regular_file(file))
      fail("checkpoint '{}': '{}' is listed in {} but missing", dir.string(), name, kCheckpointSums);
    const std::string want(l.substr(0, 64)), got = hex(sha256_file(file));
    if (got != want)
      fail("checkpoint file '{}' does not match the SHA-256 its {} gives (the file's is {}, the list says {}): "
           "one of them changed after the save; nothing is loaded", file.string(), kCheckpointSums, got, want);
  }
  for (const auto& r : required)
    if (!listed.count(r))
      fail("checkpoint file '{}' is damaged: it does not list '{}'", sums.string(), r);
}

fs::path resume_checkpoint(const fs::path& run_dir, bool previous) {
  const fs::path ckdir = run_dir / "checkpoints", latest = ckdir / "latest";
  auto folders = checkpoint_folders(ckdir);
  fs::path chosen;
  if (fs::exists(latest)) {
    std::string name = read_file(latest);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (name.empty() || name.find('/') != std::string::npos || !name.starts_with("step-") || name.ends_with(".tmp"))
      fail("'{}' does not name a checkpoint folder (found '{}')", latest.string(), name);
    chosen = ckdir / name;
    if (!fs::is_directory(chosen) && !previous)
      fail("checkpoint '{}' named by '{}' is missing; resume with --resume-previous to use the newest older one",
           chosen.string(), latest.string());
  } else if (!folders.empty()) {
    chosen = folders.back();  // `latest` lost (its own write cut short, or deleted): the newest folder
  } else {
    return {};
  }
  // Candidates: the chosen one, then (with `previous`) every older folder, newest first.
  std::vector<fs::path> candidates{chosen};
  if (previous)
    for (auto it = folders.rbegin(); it != folders.rend(); ++it)
      if (*it < chosen) candidates.push_back(*it);
  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      if (!fs::is_directory(candidates[i])) fail("checkpoint '{}' is missing", candidates[i].string());
      verify_checkpoint(candidates[i], required_files());
      if (i > 0)
        std::fprintf(stderr, "resuming from the older checkpoint %s (--resume-previous)\n", candidates[i].c_str());
      return candidates[i];
    } catch (const Error& e) {
      if (!previous) throw Error(fmt::format("{}; resume with --resume-previous to use the newest older checkpoint that is "
                                             "whole", e.what()));
      std::fprintf(stderr, "skipping checkpoint %s: %s\n", candidates[i].c_str(), e.what());
    }
  }
  fail("no checkpoint of '{}' is whole ({} tried; see above)", run_dir.string(), candidates.size());
}

bool has_checkpoint(const fs::path& run_dir) {
  return fs::exists(run_dir / "checkpoints" / "latest") || !checkpoint_folders(run_dir / "checkpoints").empty();
}

void remove_checkpoint_temporaries(const fs::path& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir / "checkpoints", ec)) return;
  for (const auto& e : fs::directory_iterator(run_dir / "checkpoints"))
    if (e.is_directory() && e.path().extension() == ".tmp") fs::remove_all(e.path(), ec);
}

}  // namespace lineage::distill
