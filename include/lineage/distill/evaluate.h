// Held-out evaluation during training: the student's masked cross-entropy and perplexity on the
// validation rows and, with a teacher, how close it is to it — mean KL(teacher || student) and the
// share of positions where both rank the same token first (llama.cpp's --kl-divergence figures).
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "lineage/distill/dataset.h"
#include "lineage/model/llama.h"
#include "lineage/teacher/teacher.h"

namespace lineage::distill {

struct LmEval {
  double loss = 0;        // mean CE (nats/token) over masked positions
  double perplexity = 0;  // exp(loss)
  double accuracy = 0;    // share of positions where the argmax is the true next token
  double top1_agreement = -1;  // with the teacher; -1 without one
  double kl = -1;              // mean KL(teacher || student), nats; -1 without a teacher
  // Mean Σ_v min(p_teacher, p_student) = 1 − TVD: the rate at which the teacher would accept the
  // student's tokens as a speculative-decoding draft at temperature 1 (Leviathan et al. 2023's α,
  // teacher-forced on the validation text); -1 without a teacher.
  double acceptance = -1;
  int64_t tokens = 0;
  nlohmann::json to_json() const;
};

class DataParallel;

// Over the first `max_rows` rows (0: all), `batch_size` rows at a time, without gradients. With
// `dp`, every rank of the job calls it: each evaluates every world-th batch and the sums are
// reduced, so all ranks return the figures of one process. `chunk_rows`: positions whose logits
// are made at a time (-1: model::logit_chunk_rows, which leaves small vocabularies whole).
LmEval evaluate_lm(model::Llama& model, const TokenRows& rows, teacher::Teacher* teacher,
                   int64_t max_rows = 0, int64_t batch_size = 8, DataParallel* dp = nullptr, int64_t chunk_rows = -1);

}  // namespace lineage::distill
