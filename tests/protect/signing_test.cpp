// Signed lineage: a signed run verifies; one changed byte anywhere it covers, a missing or an added
// file, another key, or a rewritten record of hashes does not, and each says what.
#include <sys/stat.h>

#include "lineage/core/hash.h"
#include "lineage/protect/signing.h"
#include "test_util.h"

namespace lineage::protect {
namespace {
namespace fs = std::filesystem;

using testing::error_of;
using testing::slurp;
using testing::spit;
using testing::TempDir;

struct SignedRun {
  TempDir tmp;
  fs::path run = tmp / "run";
  fs::path key = tmp / "owner.key";
  SignedRun() {
    fs::create_directories(run / "student");
    spit(run / "lineage.json", "{\"teacher\": \"t.gguf\"}\n");
    spit(run / "student.gguf", std::string(1000, 'w'));
    spit(run / "student" / "model.safetensors", std::string(500, 's'));
    spit(run / "student" / "config.json", "{}\n");
    write_signing_key_pair(key);
    sign_run(run, key);
  }
  void flip_byte(const fs::path& p, size_t at) {
    auto b = slurp(p);
    b[at] ^= 1;
    spit(p, b);
  }
};

bool mentions(const Verification& v, const std::string& what) {
  for (const auto& p : v.problems)
    if (p.find(what) != std::string::npos) return true;
  return false;
}

TEST(Signing, ASignedRunVerifiesWithItsOwnersKey) {
  SignedRun s;
  struct stat st {};
  ASSERT_EQ(::stat(s.key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto v = verify_run(s.run, s.key.string() + ".pub");
  EXPECT_TRUE(v.ok) << (v.problems.empty() ? "" : v.problems[0]);
  EXPECT_TRUE(v.key_pinned);
  EXPECT_EQ(v.checked.size(), 4u);
}

TEST(Signing, OneChangedByteInTheWeightsOrTheRecordFails) {
  for (std::string target : {"student.gguf", "student/model.safetensors", "lineage.json"}) {
    SignedRun s;
    s.flip_byte(s.run / target, 3);
    auto v = verify_run(s.run, s.key.string() + ".pub");
    EXPECT_FALSE(v.ok) << target;
    EXPECT_TRUE(mentions(v, target + ": SHA-256")) << target;
  }
}

TEST(Signing, AnotherKeyARewrittenRecordAndMissingOrExtraFilesFail) {
  SignedRun s;
  TempDir other;
  write_signing_key_pair(other / "k");
  EXPECT_TRUE(mentions(verify_run(s.run, (other / "k.pub").string()), "not with the key in"));

  // Someone rewrites the hashes to match changed weights: the signature no longer verifies.
  s.flip_byte(s.run / "student.gguf", 10);
  auto sig = nlohmann::json::parse(slurp(s.run / "lineage.sig.json"));
  sig["files"]["student.gguf"] = hex(sha256_file(s.run / "student.gguf"));
  spit(s.run / "lineage.sig.json", sig.dump());
  auto v = verify_run(s.run, s.key.string() + ".pub");
  EXPECT_TRUE(mentions(v, "does not verify"));
  EXPECT_FALSE(mentions(v, "student.gguf: SHA-256"));

  SignedRun t;
  fs::remove(t.run / "student" / "config.json");
  spit(t.run / "student" / "extra.bin", "x");
  auto w = verify_run(t.run);
  EXPECT_TRUE(mentions(w, "student/config.json: missing"));
  EXPECT_TRUE(mentions(w, "student/extra.bin: not covered"));
}

TEST(Signing, BadKeysAndUnsignedRunsGiveClearErrors) {
  SignedRun s;
  ::chmod(s.key.c_str(), 0644);
  EXPECT_NE(error_of([&] { sign_run(s.run, s.key); }).find("can be read by others"), std::string::npos);
  EXPECT_NE(error_of([&] { write_signing_key_pair(s.key); }).find("already exists"), std::string::npos);
  fs::remove(s.run / "lineage.sig.json");
  EXPECT_NE(error_of([&] { verify_run(s.run); }).find("was not signed"), std::string::npos);
  TempDir empty;
  ::chmod(s.key.c_str(), 0600);
  EXPECT_NE(error_of([&] { sign_run(empty.path, s.key); }).find("no lineage.json"), std::string::npos);
}

}  // namespace
}  // namespace lineage::protect
