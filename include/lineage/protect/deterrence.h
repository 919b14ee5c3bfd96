// What `lineage serve` and `lineage generate` are asked to do against distillation beyond the
// watermark: antidistillation sampling and antidistillation fingerprints (antidistill.h holds the
// mechanism). Plain options, free of libtorch, for the command line and the server's options.
#pragma once

#include <cstdint>
#include <string>

namespace lineage::protect {

struct DeterrenceOptions {
  // Antidistillation sampling (Savani et al. 2025): off when `antidistill_proxy` is "".
  std::string antidistill_proxy;  // a model with the teacher's tokenizer
  std::string antidistill_data;   // held-out text the proxy's loss is taken on ("": the teacher's own samples)
  double antidistill_lambda = 1.0, antidistill_epsilon = 1e-2;
  // Antidistillation fingerprints (Xu et al. 2026): off when `fingerprint_key` is "".
  std::string fingerprint_key;    // a watermark key file (lineage keygen); detect and trace test it
  std::string fingerprint_proxy;  // "": the antidistillation proxy
  std::string fingerprint_data;   // "": as antidistill_data
  double fingerprint_lambda = 4.0, fingerprint_epsilon = 1e-2;
  double fingerprint_gamma = 0.25;
  int fingerprint_context = 1;
  // Both: held-out windows per gradient, their length, requests between fresh gradients (0: never).
  int rows = 32, seq_len = 128, refresh_every = 0;
  uint64_t seed = 0;

  bool any() const { return !antidistill_proxy.empty() || !fingerprint_key.empty(); }
};

}  // namespace lineage::protect
