// The deterrence flags of `lineage serve` and `lineage generate` (protect/deterrence.h):
// antidistillation sampling and antidistillation fingerprints.
#pragma once

#include <CLI/CLI.hpp>

#include "lineage/protect/deterrence.h"

namespace lineage::cli {

inline void add_deterrence_flags(CLI::App* sub, protect::DeterrenceOptions& o) {
  sub->add_option("--antidistill", o.antidistill_proxy,
                  "antidistillation sampling (Savani et al. 2025): nudge every token towards those whose learning "
                  "raises this proxy student's held-out loss (a model with the teacher's tokenizer)");
  sub->add_option("--antidistill-lambda", o.antidistill_lambda, "weight of the proxy's directional derivative on the logits")
      ->capture_default_str();
  sub->add_option("--antidistill-epsilon", o.antidistill_epsilon,
                  "finite-difference step along the proxy's unit gradient")->capture_default_str();
  sub->add_option("--antidistill-data", o.antidistill_data,
                  "held-out text the proxy's loss is taken on (default: samples the teacher writes itself)");
  sub->add_option("--antidistill-refresh", o.refresh_every,
                  "a fresh proxy gradient, from a new draw of held-out windows, every N requests (0: never)")
      ->capture_default_str();
  sub->add_option("--antidistill-rows", o.rows, "held-out windows per proxy gradient")->capture_default_str();
  sub->add_option("--fingerprint-key", o.fingerprint_key,
                  "antidistillation fingerprint (Xu et al. 2026): nudge every token towards those whose learning raises "
                  "a student's green-list mass under this key file (lineage keygen); lineage detect and trace test it");
  sub->add_option("--fingerprint-proxy", o.fingerprint_proxy, "proxy student of the fingerprint (default: --antidistill's)");
  sub->add_option("--fingerprint-lambda", o.fingerprint_lambda, "weight of the fingerprint's directional derivative")
      ->capture_default_str();
  sub->add_option("--fingerprint-data", o.fingerprint_data,
                  "text the proxy's green mass is taken on (default: --antidistill-data, else the teacher's samples)");
  sub->add_option("--fingerprint-gamma", o.fingerprint_gamma, "green share of the fingerprint's lists")->capture_default_str();
  sub->add_option("--fingerprint-context", o.fingerprint_context, "h: previous tokens that seed the fingerprint's lists")
      ->capture_default_str();
}

}  // namespace lineage::cli
