// The side-by-side table printed at the end of a distillation: teacher and student on the same
// validation rows — parameters, file size, perplexity, top-1 agreement, KL, decode tokens/s.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "lineage/distill/dataset.h"
#include "lineage/model/llama.h"
#include "lineage/teacher/teacher.h"

namespace lineage::distill {

struct ModelFigures {
  std::string name;
  int64_t parameters = 0;
  int64_t file_bytes = 0;
  double perplexity = 0;
  double top1_agreement = -1;  // with the teacher (1 for the teacher itself)
  double kl = -1;              // KL(teacher || model) (0 for the teacher)
  double acceptance = -1;      // as a speculative draft of the teacher: mean Σ min(p, q) (evaluate.h)
  double decode_tokens_per_s = 0;
  nlohmann::json to_json() const;
};

// Figures for the teacher and the student on `valid` (first `max_rows` rows). A teacher with an
// in-process model is measured like the student (size, perplexity, KL, decode speed); one that gives
// only top-k log-probabilities (an HTTP teacher) gives its perplexity from the log-probability of
// each real next token and top-1 agreement against its first alternative; its size, KL and speed
// are not known here (shown as "-"). One that gives text only (llama.cpp's server) gives no figure
// of its own: the student's perplexity and speed alone. Decode speed is eval::measure_decode's.
std::pair<ModelFigures, ModelFigures> compare_models(teacher::Teacher& teacher, model::Llama& student,
                                                     const std::filesystem::path& student_file, const TokenRows& valid,
                                                     int64_t max_rows);

// The table as text, a last column giving the student's share of the teacher.
std::string format_comparison(const ModelFigures& teacher, const ModelFigures& student);


}  // namespace lineage::distill
