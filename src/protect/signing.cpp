// Signed lineage (ed25519 over file hashes). See include/lineage/protect/signing.h.
#include "lineage/core/json.h"
#include "lineage/protect/signing.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/hash.h"
#include "protect/key_file.h"

namespace lineage::protect {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kSignatureFile = "lineage.sig.json";

void init_sodium() {
  if (sodium_init() < 0) fail("libsodium could not be initialised");
}

std::string to_hex(const unsigned char* b, size_t n) {
  std::string s(2 * n + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), b, n);
  s.pop_back();
  return s;
}

std::vector<unsigned char> from_hex(std::string text, size_t n, const std::string& what) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::vector<unsigned char> out(n);
  size_t len = 0;
  if (text.size() != 2 * n || sodium_hex2bin(out.data(), n, text.data(), text.size(), nullptr, &len, nullptr) != 0 || len != n)
    fail("{} must hold {} hex digits", what, 2 * n);
  return out;
}

// The files a signature covers, relative to the run: the record and the exported student.
std::vector<std::string> student_files(const fs::path& run) {
  std::vector<std::string> files;
  for (const char* f : {"lineage.json", "student.gguf"})
    if (fs::is_regular_file(run / f)) files.push_back(f);
  if (fs::is_directory(run / "student"))
    for (const auto& e : fs::recursive_directory_iterator(run / "student"))
      if (e.is_regular_file()) files.push_back(fs::relative(e.path(), run).generic_string());
  std::sort(files.begin(), files.end());
  return files;
}

std::string signed_message(const json& sig) {
  json m = {{"algorithm", sig.at("algorithm")}, {"files", sig.at("files")}, {"public_key", sig.at("public_key")}};
  return m.dump();  // compact; object keys in sorted order
}

}  // namespace

fs::path write_signing_key_pair(const fs::path& secret) {
  init_sodium();
  fs::path pub = secret.string() + ".pub";
  if (fs::exists(pub)) fail("public key file '{}' already exists", pub.string());
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  write_private_hex(secret, sk, sizeof sk);
  sodium_memzero(sk, sizeof sk);
  write_file_atomic(pub, to_hex(pk, sizeof pk) + "\n");
  return pub;
}

fs::path sign_run(const fs::path& run, const fs::path& secret_key) {
  init_sodium();
  auto sk = read_private_hex(secret_key, crypto_sign_SECRETKEYBYTES, "signing key");
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(pk, sk.data());
  auto files = student_files(run);
  if (std::find(files.begin(), files.end(), "lineage.json") == files.end())
    fail("'{}' has no lineage.json: sign a finished run directory", run.string());
  if (files.size() < 2) fail("'{}' has no exported student (student.gguf or student/) to sign", run.string());
  json sig = {{"algorithm", "ed25519"}, {"public_key", to_hex(pk, sizeof pk)}, {"files", json::object()}};
  for (const auto& f : files) sig["files"][f] = hex(sha256_file(run / f));
  auto msg = signed_message(sig);
  unsigned char s[crypto_sign_BYTES];
  crypto_sign_detached(s, nullptr, reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), sk.data());
  sodium_memzero(sk.data(), sk.size());
  sig["signature"] = to_hex(s, sizeof s);
  write_file_atomic(run / kSignatureFile, sig.dump(2) + "\n");
  return run / kSignatureFile;
}

Verification verify_run(const fs::path& run, const fs::path& public_key_file) {
  init_sodium();
  Verification v;
  const fs::path sig_path = run / kSignatureFile;
  if (!fs::is_regular_file(sig_path)) fail("'{}' has no {}: the run was not signed (lineage distill --sign-key)", run.string(), kSignatureFile);
  json sig;
  try {
    std::string text = read_file(sig_path);
    check_json_depth(text, "'" + sig_path.string() + "'");
    sig = json::parse(text);
    if (sig.at("algorithm") != "ed25519") fail("{}: algorithm '{}', expected ed25519", sig_path.string(), sig.at("algorithm").dump());
    sig.at("files").get<std::map<std::string, std::string>>();
    sig.at("public_key").get<std::string>();
    sig.at("signature").get<std::string>();
  } catch (const json::exception& e) {
    fail("'{}' is not a signature record: {}", sig_path.string(), e.what());
  }
  v.public_key = sig["public_key"].get<std::string>();
  auto pk = from_hex(v.public_key, crypto_sign_PUBLICKEYBYTES, sig_path.string() + ": public_key");
  if (!public_key_file.empty()) {
    auto pinned = from_hex(read_file(public_key_file), crypto_sign_PUBLICKEYBYTES, "public key '" + public_key_file.string() + "'");
    v.key_pinned = true;
    if (pinned != pk) {
      v.problems.push_back(fmt::format("signed with key {}, not with the key in '{}'", v.public_key, public_key_file.string()));
      pk = pinned;  // the signature must verify under the pinned key
    }
  }
  auto s = from_hex(sig["signature"].get<std::string>(), crypto_sign_BYTES, sig_path.string() + ": signature");
  auto msg = signed_message(sig);
  if (crypto_sign_verify_detached(s.data(), reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), pk.data()) != 0)
    v.problems.push_back(fmt::format("the signature in {} does not verify: the record of hashes was changed or signed by another key",
                                     sig_path.string()));
  for (const auto& [f, want] : sig["files"].items()) {
    fs::path p = run / f;
    if (!fs::is_regular_file(p)) {
      v.problems.push_back(fmt::format("{}: missing (signed with SHA-256 {})", f, want.get<std::string>()));
      continue;
    }
    auto got = hex(sha256_file(p));
    if (got != want.get<std::string>())
      v.problems.push_back(fmt::format("{}: SHA-256 {} but {} was signed", f, got, want.get<std::string>()));
    else
      v.checked.push_back(f);
  }
  for (const auto& f : student_files(run))
    if (!sig["files"].contains(f)) v.problems.push_back(fmt::format("{}: not covered by the signature", f));
  v.ok = v.problems.empty();
  return v;
}

}  // namespace lineage::protect
