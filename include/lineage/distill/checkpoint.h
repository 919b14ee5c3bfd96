// What makes a checkpoint folder whole and unchanged: SHA256SUMS, written last (atomically) beside
// the files it covers, in sha256sum's format ("<64 hex>  <name>" per line, names in order), so
// `sha256sum -c SHA256SUMS` checks it by hand too. A resume verifies it before anything is loaded;
// any changed, missing or truncated byte — in a covered file or in SHA256SUMS itself, which is
// parsed strictly — is refused naming the file.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lineage::distill {

inline constexpr const char* kCheckpointSums = "SHA256SUMS";

// Writes `dir`/SHA256SUMS over `files` (names inside `dir`), atomically.
void write_checkpoint_sums(const std::filesystem::path& dir, const std::vector<std::string>& files);

// Fails naming the file when `dir` lacks SHA256SUMS, when SHA256SUMS is malformed or does not list
// every name in `required`, or when a listed file is missing or its bytes do not match.
void verify_checkpoint(const std::filesystem::path& dir, const std::vector<std::string>& required);

// The checkpoint a resume loads ("" when the run has none): the one `checkpoints/latest` names
// or, when `latest` is missing, the newest step-* folder; verified. When it fails verification and
// `previous` is set, older checkpoints are tried newest first, each one skipped named on stderr;
// without `previous` the failure is the error (never a silent fallback). Leftover *.tmp folders
// (a save cut short) are never chosen.
std::filesystem::path resume_checkpoint(const std::filesystem::path& run_dir, bool previous);

// Whether the run has any checkpoint folder or `latest` at all, whole or not.
bool has_checkpoint(const std::filesystem::path& run_dir);

// Removes *.tmp folders under `run_dir`/checkpoints (saves cut short by a kill).
void remove_checkpoint_temporaries(const std::filesystem::path& run_dir);

}  // namespace lineage::distill
