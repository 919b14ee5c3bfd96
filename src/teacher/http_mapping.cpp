// Mapping a teacher's scoring of text onto the student's tokens (see map_through_text in
// http_teacher.h).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "lineage/core/error.h"
#include "lineage/teacher/http_teacher.h"
#include "teacher/http_client.h"

namespace lineage::teacher {

using http::kAbsent;
using http::PieceIndex;

TopK map_through_text(const ApiScoredText& sc, const std::vector<int32_t>& ids, const text::Tokenizer& student, int64_t k) {
  const int64_t T = static_cast<int64_t>(ids.size()) - 1;
  auto out_ids = torch::zeros({T, k}, torch::kLong);
  auto out_lp = torch::full({T, k}, kAbsent, torch::kFloat32);
  auto out_target = torch::zeros({T}, torch::kFloat32);
  // Byte offset at which each student token starts.
  std::vector<int64_t> start(ids.size());
  int64_t off = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    start[i] = off;
    off += static_cast<int64_t>(student.decode_piece(i ? ids[i - 1] : -1, ids[i]).size());
  }
  // Byte offset -> teacher token index, for the tokens the teacher scored. A server that echoes the
  // BOS it added (a token with no text and no log-probability at offset 0) or a first token with
  // nothing before it has nothing to give there.
  std::map<int64_t, size_t> teacher_at;
  for (size_t j = 0; j < sc.tokens.size(); ++j)
    if (std::isfinite(sc.logprobs[j]) || !sc.top[j].empty()) teacher_at.emplace(sc.offsets[j], j);
  thread_local std::unique_ptr<PieceIndex> pieces;
  thread_local const text::Tokenizer* pieces_for = nullptr;
  if (pieces_for != &student) {
    pieces = std::make_unique<PieceIndex>(student);
    pieces_for = &student;
  }
  auto ia = out_ids.accessor<int64_t, 2>();
  auto la = out_lp.accessor<float, 2>();
  auto ta = out_target.accessor<float, 1>();
  for (int64_t t = 0; t < T; ++t) {
    const int32_t next = ids[t + 1];
    auto hard = [&] {
      ia[t][0] = next;
      la[t][0] = 0;
      for (int64_t i = 1; i < k; ++i) ia[t][i] = (next + i) % student.vocab_size(), la[t][i] = kAbsent;
      ta[t] = 0;
    };
    auto it = teacher_at.find(start[t + 1]);
    if (it == teacher_at.end()) {
      hard();
      continue;
    }
    size_t j = it->second;
    std::map<int32_t, double> mass;
    for (const auto& [s, lp] : sc.top[j]) {
      int32_t id = pieces->first_token(s);
      if (id >= 0) mass[id] += std::exp(static_cast<double>(lp));
    }
    std::string next_text = student.decode_piece(ids[t], next);
    double target = std::nan("");
    if (sc.tokens[j] == next_text && std::isfinite(sc.logprobs[j])) target = sc.logprobs[j];
    else if (mass.count(next)) target = std::log(mass[next]);
    if (std::isnan(target) || mass.empty()) {
      hard();
      continue;
    }
    std::vector<std::pair<double, int32_t>> ranked;
    for (auto& [id, p] : mass) ranked.emplace_back(p, id);
    std::sort(ranked.begin(), ranked.end(), std::greater<>());
    int64_t i = 0;
    for (; i < k && i < static_cast<int64_t>(ranked.size()); ++i) {
      ia[t][i] = ranked[i].second;
      la[t][i] = static_cast<float>(std::log(std::min(1.0, ranked[i].first)));
    }
    for (int64_t f = 0; i < k; ++f) {  // padding: ids not used above, probability 0
      int32_t cand = static_cast<int32_t>(f % student.vocab_size());
      if (mass.count(cand)) continue;
      ia[t][i] = cand;
      la[t][i++] = kAbsent;
    }
    ta[t] = static_cast<float>(std::min(0.0, target));
  }
  return TopK{out_ids, out_lp, out_target, {}};
}

}  // namespace lineage::teacher
