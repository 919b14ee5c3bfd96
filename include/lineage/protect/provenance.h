// `lineage provenance`: was a suspect model derived from one of ours — with no watermark in place?
// Three tests, each giving every candidate parent a p-value under the null "the suspect was not
// derived from this candidate":
//
//   blackbox  (Nikolic, Baluta & Saxena, "Model Provenance Testing for Large Language Models",
//             NeurIPS 2025) prompts cut from a text, greedy continuations of the suspect, of each
//             candidate and of each reference, per-prompt token-match rates. The closest candidate
//             must beat every other candidate and every reference in the suspect's match rate, and
//             every reference in its own match rate with the suspect: one-sided paired tests over
//             prompts (the prompt is the unit: tokens of one continuation are not independent
//             trials), Holm–Bonferroni over the comparisons. Without references nobody is
//             attributed: closeness between models grows with their quality and training, so only
//             independent models of comparable kind (same data, sizes and training lengths around
//             the suspect's) say how close is close.
//   logprobs  the same design on the top-1 agreement of next-token distributions over windows of a
//             text (model files, or APIs with echo + top logprobs, one vocabulary), with paired
//             sign-flip permutation tests over windows (p >= 1/(draws + 1)).
//   weights   (Zhu, Ahmed, Kuditipudi & Liang, "Independence Tests for Language Models", ICML 2025)
//             open weights of the same width: hidden units of each MLP matched between the two
//             models (Hungarian algorithm on the cosine similarity of their gate, up and down
//             weights), the Spearman correlation of the matched indices with the identity (for
//             independently initialised models the matching is a uniformly random permutation, so
//             its null is exact), the best candidate layer for each suspect layer (Bonferroni over
//             layers), Fisher's combination over suspect layers. It shows a model initialised from
//             our layers or layer-pruned (e.g. --init-from-teacher), which output tests can miss;
//             widths must match.
// The verdict counts the weights test always and the output tests only with outputs_decide: their
// closeness measures quality and training stage as much as ancestry (README, Protection).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lineage::protect {

struct ProvenanceRequest {
  std::string suspect;                  // model path or http(s):// URL
  std::vector<std::string> candidates;  // candidate parents (ours among them): paths or URLs
  std::vector<std::string> references;  // models known independent of every candidate (controls)
  std::string text;                     // prompts and held-out windows come from this text
  std::string tokenizer;                // for URLs: the tokenizer their ids are mapped onto
  std::string method = "auto";          // auto (every test the sources allow), blackbox, logprobs, weights
  double alpha = 0.01;
  // blackbox
  int queries = 1000;       // prompts, each asked once of the suspect (and of every candidate)
  int prompt_tokens = 16;
  int gen_tokens = 24;
  uint64_t seed = 0;        // which prompts
  // logprobs
  int windows = 64, window = 128;
  int permutations = 20000;
  // Let the output tests (blackbox, logprobs) decide the verdict. Off by default: on the zoo an
  // undertrained student of one teacher matched a weak unrelated teacher better than its own and
  // better than every reference, in both directions (README, Protection); their p-values are
  // shown either way. The weights test's null is exact and always counts.
  bool outputs_decide = false;
  std::string api_key;      // for URLs (never written anywhere)
  std::string device = "cpu";
  bool quiet = false;
};

// One test of one candidate.
struct ProvenanceRow {
  std::string candidate, method;
  std::string statistic;   // what was measured, in words with its value
  double value = 0;        // the statistic itself
  double p_value = 1;
  double log10_p = 0;      // the same, for p-values below what a double holds
  int64_t queries = 0;     // requests to the suspect (blackbox) or tokens read (logprobs, weights)
  std::string note;        // why a test did not apply, or what it compared against
  bool applies = true;
};

struct ProvenanceResult {
  std::string suspect;
  bool outputs_decide = false;
  std::vector<ProvenanceRow> rows;
  std::string verdict_candidate;  // "" : none at alpha
  double verdict_p = 1;           // its p-value, Bonferroni-adjusted over the tests that count
  double verdict_log10_p = 0;     // the same, below what a double holds
  double alpha = 0.01;
  nlohmann::json to_json() const;
  std::string table() const;      // what the CLI prints
};

// Tests request.suspect. Prompts and windows are cut with --tokenizer, else the first candidate's.
ProvenanceResult run_provenance(const ProvenanceRequest& request);
// Tests each of `suspects` against the same candidates and references (their answers computed once).
std::vector<ProvenanceResult> run_provenance(const ProvenanceRequest& request, const std::vector<std::string>& suspects);

// The pieces, public for tests and for other callers.

// Minimum-cost perfect assignment of an n×n cost matrix (row-major): assignment[row] = column.
// O(n³) (shortest augmenting paths with potentials).
std::vector<int> hungarian(const std::vector<double>& cost, int n);

// One-sided p-value of the Spearman correlation between 0..n-1 and `perm` (a permutation) under
// a uniformly random permutation: rho and its upper tail (normal approximation with the exact
// null variance 1/(n-1)).
struct SpearmanTest {
  double rho = 0, log_p = 0;  // natural log of the p-value (p-values far below 1e-300 stay exact)
};
SpearmanTest spearman_identity(const std::vector<int>& perm);

// log of the upper tail of the standard normal at z, accurate far into the tail.
double log_normal_upper(double z);

// Fisher's combination of independent p-values given as natural logs: the log of the upper tail
// of chi-squared with 2k degrees of freedom at -2 Σ log p (exact, in logs).
double fisher_combine_log(const std::vector<double>& log_p);

// Holm–Bonferroni: adjusted p-values in the input's order.
std::vector<double> holm(const std::vector<double>& p_values);

// One-sided p-value that the paired differences `d` have a positive mean: sign-flip permutation
// test with `draws` random flips (p >= 1 / (draws + 1)), seeded.
double sign_flip_p(const std::vector<double>& d, int draws, uint64_t seed);

// One-sided paired t-test (normal tail) that the mean of `d` is positive; for prompts as units.
double paired_z_p(const std::vector<double>& d);

}  // namespace lineage::protect
