// Prompt text for the traffic simulator (traffic_sim.cpp): questions over many domains in many
// phrasings, code questions, prose passages, benchmark items and reasoning requests, several of
// them in wordings a keyword list would not know. Private to protect.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

namespace lineage::protect::sim {

// Real text nobody here wrote, for prompts: HellaSwag contexts grouped by their activity label
// (the domains), ARC and PIQA questions with their answer choices, WikiText paragraphs.
struct RealText {
  std::vector<std::string> domain_names;
  std::vector<std::vector<std::string>> domain_texts;  // per domain: contexts
  std::vector<std::string> questions;                   // ARC and PIQA questions
  std::vector<std::vector<std::string>> choices;        // their answer choices
  std::string corpus;                                   // WikiText paragraphs, joined: scored in windows
};
// Reads them from a folder laid out as ../shared/data (eval/hellaswag_val_full.txt,
// eval/arc_easy.jsonl, eval/arc_challenge.jsonl, eval/piqa.jsonl, text/wikitext2_valid.txt).
std::shared_ptr<const RealText> load_real_text(const std::string& dir);

class Content {
 public:
  Content(std::mt19937_64& rng, std::shared_ptr<const RealText> real = nullptr) : rng_(rng), real_(std::move(real)) {}
  size_t domains() const;
  std::string noun(size_t domain);             // a term of the domain
  std::string question(size_t domain);         // an ordinary chat question
  std::string chatter();                       // small talk, requests for letters, jokes
  std::string code_question();                 // what an IDE agent's user types
  std::string passage(int sentences);          // prose for scoring (logit harvest)
  std::string benchmark_context(size_t domain);  // a benchmark item's question
  std::string answer_choice(size_t domain);
  std::string reasoning_request(size_t domain, int style);  // style indexes the paraphrase pool
  std::string homework(size_t domain);         // a student's problem, often "step by step"
  std::string instruction(size_t domain);      // a diverse task (seq-KD harvests cover these)
  std::string ticket();                        // what an enterprise integration fills in
  static int reasoning_styles();

 private:
  template <typename T>
  const T& pick(const std::vector<T>& v) { return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng_)]; }
  int uniform(int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng_); }
  std::string words(int n);
  const std::string& real_text(size_t domain);
  std::mt19937_64& rng_;
  std::shared_ptr<const RealText> real_;
};

}  // namespace lineage::protect::sim
