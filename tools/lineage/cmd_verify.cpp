// lineage verify: check a student's signed lineage (signature and every file hash).
#include <iostream>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/protect/signing.h"

namespace lineage::cli {

Run add_verify(CLI::App& app) {
  auto run = std::make_shared<std::string>();
  auto pubkey = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("verify", "Check a signed student: the ed25519 signature and every file's SHA-256");
  sub->add_option("student", *run, "the run directory (lineage.json, lineage.sig.json, student.gguf, student/)")->required();
  sub->add_option("--pubkey", *pubkey, "the owner's public key (FILE.pub from lineage keygen --sign); without it only integrity is checked");
  return [run, pubkey] {
    auto v = protect::verify_run(*run, *pubkey);
    for (const auto& f : v.checked) std::cout << "ok        " << f << "\n";
    for (const auto& p : v.problems) std::cout << "MISMATCH  " << p << "\n";
    if (!v.ok) fail("'{}' does not verify: {} problem(s) above", *run, v.problems.size());
    std::cout << "verified: " << v.checked.size() << " files, signed by " << v.public_key
              << (v.key_pinned ? " (the key given)" : " (the key the record names: pass --pubkey to check whose it is)") << "\n";
  };
}

}  // namespace lineage::cli
