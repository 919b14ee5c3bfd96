// Private to protect: the models `lineage provenance` compares and its three tests.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "lineage/protect/provenance.h"
#include "lineage/teacher/teacher.h"
#include "lineage/text/tokenizer.h"

namespace lineage::protect::provenance {

struct Subject {
  std::string name;    // as the table shows it (the file name, or the URL)
  std::string source;  // path or URL
  std::unique_ptr<teacher::Teacher> teacher;
  // What it said, kept for the next suspect (the prompts and windows of one run do not change).
  std::vector<std::vector<int32_t>> continuations;
  torch::Tensor top1;  // (W, T) on the windows
};

struct Subjects {
  Subject suspect;
  std::vector<Subject> candidates, references;
};

// `count` prompts of `prompt_tokens` tokens of `ids` (the base tokenizer's), at seeded random places,
// as text (each model encodes them itself).
std::vector<std::string> sample_prompts(const std::vector<int32_t>& ids, const text::Tokenizer& base, int count,
                                        int prompt_tokens, uint64_t seed);

// Reads every model's top-1 on `windows` (W, T + 1) (once per model and run).
void read_top1(Subjects& s, const torch::Tensor& windows);

// One row per candidate; only the closest gets a p-value.
std::vector<ProvenanceRow> blackbox(Subjects& s, const std::vector<std::string>& prompts, const ProvenanceRequest& q,
                                    const text::Tokenizer& base);

// `windows` (W, T + 1) ids every model reads (one vocabulary). One row per candidate.
std::vector<ProvenanceRow> logprobs(Subjects& s, const torch::Tensor& windows, const ProvenanceRequest& q);

// One row per candidate; a candidate of another width does not apply.
std::vector<ProvenanceRow> weights(Subjects& s);

}  // namespace lineage::protect::provenance
