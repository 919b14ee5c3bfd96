// lineage eval: a model (and optionally its teacher) on benchmark files and a text — quality and
// cost side by side, one table on stdout and one JSON document.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lineage::eval {

struct EvalOptions {
  std::string model;
  std::string teacher;              // optional: a second column and agreement figures
  std::string tokenizer;            // for models without one (llama2.c .bin)
  std::vector<std::string> tasks;   // task files (tasks.h)
  std::string text;                 // perplexity text
  std::string json_out;             // written atomically when set
  int64_t limit = 0;                // items per task (0: all)
  int64_t text_limit = 0;           // tokens of the text (0: all)
  int64_t window = 0;               // perplexity window (0: the model's context)
  int64_t stride = 0;               // perplexity stride (0: window / 2)
  std::string ppl_method = "sliding";  // sliding (every token scored once) or chunks (llama-perplexity's)
  int64_t max_batch_tokens = 8192;
  std::string device = "cpu";
  std::string dtype = "f32";
  bool cost = true;                 // measure speed and memory
  bool quiet = false;               // no progress output
};

// Runs everything asked for; returns the JSON (also written to json_out) and prints the table.
nlohmann::json run_eval(const EvalOptions& options);

// The table for a run_eval result: metric, model (or teacher and student, and the student's
// share of the teacher), and a one-line summary.
std::string format_eval(const nlohmann::json& result);

}  // namespace lineage::eval
