// lineage provenance: was a suspect model derived from one of the candidates, without any
// watermark? The work is protect::run_provenance (protect/provenance.h); this file is its flags.
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lineage/core/file.h"
#include "lineage/protect/provenance.h"

namespace lineage::cli {

Run add_provenance(CLI::App& app) {
  struct Options : protect::ProvenanceRequest {
    std::string json_out;
    std::vector<std::string> suspects;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("provenance",
                                 "Test whether a suspect model was derived from a candidate parent (no watermark needed)");
  sub->add_option("--suspect", o->suspects,
                  "the suspect: a model file or an OpenAI-compatible http(s)://.../v1 URL; repeat to test several against the "
                  "same candidates (their answers are computed once)")
      ->required();
  sub->add_option("--candidate", o->candidates, "a candidate parent (ours among them), file or URL; repeat for each")
      ->required();
  sub->add_option("--reference", o->references,
                  "a model known to be independent of every candidate (same data and size is best); repeat for each: "
                  "the controls the suspect must be closer than");
  sub->add_option("--text", o->text, "text the prompts and windows come from (not the suspect's training text, ideally)")
      ->required();
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer for URLs (their answers are mapped onto it)");
  sub->add_option("--method", o->method, "auto (every test the models allow), blackbox, logprobs or weights")
      ->capture_default_str();
  sub->add_option("--alpha", o->alpha, "significance level of the verdict")->capture_default_str();
  sub->add_option("--queries", o->queries, "blackbox: prompts asked of the suspect (and of each candidate)")->capture_default_str();
  sub->add_option("--prompt-tokens", o->prompt_tokens, "blackbox: tokens per prompt")->capture_default_str();
  sub->add_option("--gen-tokens", o->gen_tokens, "blackbox: greedy tokens compared per prompt")->capture_default_str();
  sub->add_option("--seed", o->seed, "which prompts are drawn")->capture_default_str();
  sub->add_option("--windows", o->windows, "logprobs: windows of the text read")->capture_default_str();
  sub->add_option("--window", o->window, "logprobs: tokens per window")->capture_default_str();
  sub->add_option("--permutations", o->permutations, "logprobs: sign flips of the permutation test")->capture_default_str();
  sub->add_flag("--outputs-decide", o->outputs_decide,
                "let the blackbox and logprobs tests decide the verdict too (not calibrated on the zoo: see README)");
  sub->add_option("--api-key", o->api_key, "URLs: API key (default: $LINEAGE_API_KEY)");
  sub->add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
  sub->add_flag("-q,--quiet", o->quiet, "no progress on stderr");
  sub->add_option("--json", o->json_out, "write the table and verdict as JSON here (an array for several suspects)");
  sub->footer(
      "Examples:\n"
      "  lineage provenance --suspect their.gguf --candidate ours.gguf --candidate other.gguf --reference indep.gguf --text t.txt\n"
      "  lineage provenance --suspect http://host:8080/v1 --tokenizer ours.gguf --candidate ours.gguf --candidate other.gguf "
      "--text t.txt --queries 2000");
  return [o] {
    auto results = protect::run_provenance(*o, o->suspects);
    nlohmann::json all = nlohmann::json::array();
    for (const auto& r : results) {
      if (results.size() > 1) std::cout << "suspect: " << r.suspect << "\n";
      std::cout << r.table() << (results.size() > 1 ? "\n" : "");
      all.push_back(r.to_json());
    }
    if (!o->json_out.empty()) write_file_atomic(o->json_out, (results.size() == 1 ? all[0] : all).dump(2) + "\n");
  };
}

}  // namespace lineage::cli
