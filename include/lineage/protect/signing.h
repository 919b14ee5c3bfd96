// Signed lineage: an ed25519 signature (libsodium's crypto_sign) over the SHA-256 of a run's
// lineage.json and of every file of the exported student, so anyone with the owner's public key can
// check that the weights are the ones the record describes and that neither was changed.
//
//   RUN/lineage.sig.json  {"algorithm": "ed25519", "public_key": hex,
//                          "files": {"lineage.json": sha256, "student.gguf": sha256, "student/...": ...},
//                          "signature": hex over the compact JSON of {"algorithm", "files", "public_key"}}
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lineage::protect {

// Writes a new secret key to `secret` (mode 600, 128 hex digits) and its public key to
// `secret`.pub (64 hex digits); fails if either exists. Returns the public key's path.
std::filesystem::path write_signing_key_pair(const std::filesystem::path& secret);

// Signs a finished run (lineage.json, student.gguf and student/ as found). Returns the
// signature file's path.
std::filesystem::path sign_run(const std::filesystem::path& run_dir, const std::filesystem::path& secret_key);

struct Verification {
  bool ok = false;
  bool key_pinned = false;              // checked against a public key the caller gave
  std::string public_key;               // hex
  std::vector<std::string> checked;     // files whose hash matched
  std::vector<std::string> problems;    // one line each: what does not match, and how
};

// Checks the signature (against `public_key_file` when given, else the key the file names) and
// every listed file's hash, and reports files of the student that the signature does not cover.
Verification verify_run(const std::filesystem::path& run_dir, const std::filesystem::path& public_key_file = {});

}  // namespace lineage::protect
