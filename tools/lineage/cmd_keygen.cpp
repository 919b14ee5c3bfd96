// lineage keygen: a private watermark key (or, with --sign, an ed25519 signing key pair).
#include <iostream>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/protect/signing.h"
#include "lineage/protect/watermark.h"

namespace lineage::cli {

Run add_keygen(CLI::App& app) {
  auto watermark = std::make_shared<std::string>();
  auto sign = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("keygen", "Create a watermark key or an ed25519 signing key pair (files of mode 600)");
  sub->add_option("--watermark", *watermark, "write a new 32-byte watermark key to this file (for serve/generate/detect/trace)");
  sub->add_option("--sign", *sign, "write a new ed25519 secret key to this file and its public key to FILE.pub");
  return [watermark, sign] {
    if (watermark->empty() == sign->empty()) fail("lineage keygen needs exactly one of --watermark FILE or --sign FILE");
    if (!watermark->empty()) {
      auto key = protect::WatermarkKey::random();
      key.write(*watermark);
      std::cerr << "watermark key " << key.fingerprint() << " written to " << *watermark << " (mode 600; keep it secret)\n";
    } else {
      auto pub = protect::write_signing_key_pair(*sign);
      std::cerr << "ed25519 secret key written to " << *sign << " (mode 600), public key to " << pub.string() << "\n";
    }
  };
}

}  // namespace lineage::cli
