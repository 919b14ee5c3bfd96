// Teacher-versus-student figures (see compare.h).
#include "lineage/core/units.h"
#include "lineage/distill/compare.h"

#include <fmt/format.h>

#include <chrono>

#include "lineage/distill/batch.h"
#include "lineage/distill/evaluate.h"
#include "lineage/eval/cost.h"
#include "lineage/model/generate.h"

namespace lineage::distill {
namespace fs = std::filesystem;

nlohmann::json ModelFigures::to_json() const {
  return {{"name", name},
          {"parameters", parameters},
          {"file_bytes", file_bytes},
          {"perplexity", perplexity},
          {"top1_agreement", top1_agreement},
          {"kl", kl},
          {"acceptance", acceptance},
          {"decode_tokens_per_s", decode_tokens_per_s}};
}

namespace {

// The first tokens of the first validation row (token 0 when there is no validation row).
std::vector<int32_t> speed_prompt(const TokenRows& valid) {
  const int64_t n = std::min<int64_t>({16, valid.seq_len, static_cast<int64_t>(valid.tokens.size())});
  if (n <= 0) return {0};
  return std::vector<int32_t>(valid.tokens.begin(), valid.tokens.begin() + n);
}

std::pair<ModelFigures, ModelFigures> compare_in_process(teacher::Teacher& teacher, model::Llama& student,
                                                     const fs::path& student_file, const TokenRows& valid,
                                                     int64_t max_rows) {
  ModelFigures t, s;
  t.name = teacher.info().name.empty() ? "teacher" : teacher.info().name;
  t.parameters = (*teacher.model())->config().num_parameters();
  t.file_bytes = path_bytes(teacher.info().source);
  LmEval te = evaluate_lm(*teacher.model(), valid, nullptr, max_rows);
  t.perplexity = te.perplexity;
  t.top1_agreement = 1;
  t.kl = 0;
  s.name = student_file.filename().string();
  s.parameters = student->config().num_parameters();
  s.file_bytes = path_bytes(student_file);
  LmEval se = evaluate_lm(student, valid, &teacher, max_rows);
  s.perplexity = se.perplexity;
  s.top1_agreement = se.top1_agreement;
  s.kl = se.kl;
  s.acceptance = se.acceptance;
  // The same prompt for both: the first tokens of the first validation row.
  std::vector<int32_t> prompt = speed_prompt(valid);
  t.decode_tokens_per_s = eval::measure_decode(*teacher.model(), prompt, 64, 2);
  s.decode_tokens_per_s = eval::measure_decode(student, prompt, 64, 2);
  return {t, s};
}

std::pair<ModelFigures, ModelFigures> compare_with_sparse_teacher(teacher::Teacher& teacher, model::Llama& student,
                                                                  const fs::path& student_file, const TokenRows& valid,
                                                                  int64_t max_rows) {
  torch::NoGradGuard no_grad;
  ModelFigures t, s;
  t.name = teacher.info().name.empty() ? "teacher" : teacher.info().name;
  t.parameters = teacher.info().parameters;
  s.name = student_file.filename().string();
  s.parameters = student->config().num_parameters();
  s.file_bytes = path_bytes(student_file);
  LmEval se = evaluate_lm(student, valid, nullptr, max_rows);
  s.perplexity = se.perplexity;
  std::vector<int32_t> prompt = speed_prompt(valid);
  s.decode_tokens_per_s = eval::measure_decode(student, prompt, 64, 2);
  s.kl = -1;
  if (!teacher.abilities().top_k) return {t, s};  // text only (llama.cpp's server): nothing to score with
  // The teacher's view of the same rows, 8 at a time.
  const int64_t rows = max_rows > 0 ? std::min(max_rows, valid.rows()) : valid.rows();
  double nll = 0;
  int64_t n = 0, agree = 0;
  student->eval();
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    std::vector<int64_t> index;
    for (int64_t r = r0; r < std::min(rows, r0 + 8); ++r) index.push_back(r);
    auto [tok, mask] = batch_of(valid, index, student->device());
    auto input = tok.slice(1, 0, -1), target = tok.slice(1, 1);
    teacher::TopKRequest req;
    req.k = 1;
    req.next = target;
    auto top = teacher.top_k(input, req);
    auto m = mask.slice(1, 1).to(torch::kCPU);
    auto lp = top.target_logprobs.to(torch::kCPU);
    auto s_arg = student->forward(input).argmax(-1).to(torch::kCPU);
    auto t_arg = top.ids.select(-1, 0).to(torch::kCPU);
    nll -= lp.masked_select(m).sum().item<double>();
    agree += (s_arg == t_arg).masked_select(m).sum().item<int64_t>();
    n += m.sum().item<int64_t>();
  }
  student->train();
  t.perplexity = n ? std::exp(nll / n) : 0;
  t.top1_agreement = 1;
  t.kl = 0;
  s.top1_agreement = n ? double(agree) / n : 0;
  return {t, s};
}

}  // namespace

std::pair<ModelFigures, ModelFigures> compare_models(teacher::Teacher& teacher, model::Llama& student,
                                                     const fs::path& student_file, const TokenRows& valid, int64_t max_rows) {
  return teacher.model() ? compare_in_process(teacher, student, student_file, valid, max_rows)
                         : compare_with_sparse_teacher(teacher, student, student_file, valid, max_rows);
}

std::string format_comparison(const ModelFigures& t, const ModelFigures& s) {
  auto mb = [](int64_t b) { return fmt::format("{:.2f} MB", b / 1e6); };
  std::string out;
  out += fmt::format("{:<22} {:>14} {:>14} {:>16}\n", "", "teacher", "student", "student/teacher");
  auto share = [](double a, double b) { return b > 0 ? fmt::format("{:.1f}%", 100.0 * a / b) : std::string("-"); };
  out += fmt::format("{:<22} {:>14} {:>14} {:>16}\n", "parameters", t.parameters ? group_digits(t.parameters) : "-",
                     group_digits(s.parameters), share(s.parameters, t.parameters));
  out += fmt::format("{:<22} {:>14} {:>14} {:>16}\n", "file size", t.file_bytes ? mb(t.file_bytes) : "-", mb(s.file_bytes),
                     share(s.file_bytes, t.file_bytes));
  out += fmt::format("{:<22} {:>14} {:>14.3f} {:>16}\n", "validation perplexity",
                     t.perplexity > 0 ? fmt::format("{:.3f}", t.perplexity) : "-", s.perplexity,
                     t.perplexity > 0 ? fmt::format("{:.2f}x", s.perplexity / t.perplexity) : "-");
  out += fmt::format("{:<22} {:>14} {:>14} {:>16}\n", "top-1 agreement", "-",
                     s.top1_agreement >= 0 ? fmt::format("{:.1f}%", 100 * s.top1_agreement) : "-", "");
  out += fmt::format("{:<22} {:>14} {:>14} {:>16}\n", "KL(teacher||student)", "-", s.kl >= 0 ? fmt::format("{:.4f}", s.kl) : "-", "");
  out += fmt::format("{:<22} {:>14} {:>14.0f} {:>16}\n", "decode tokens/s",
                     t.decode_tokens_per_s > 0 ? fmt::format("{:.0f}", t.decode_tokens_per_s) : "-", s.decode_tokens_per_s,
                     t.decode_tokens_per_s > 0 ? fmt::format("{:.1f}x", s.decode_tokens_per_s / t.decode_tokens_per_s) : "-");
  return out;
}

}  // namespace lineage::distill
