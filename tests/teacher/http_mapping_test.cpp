// Mapping a teacher's answers through text (teacher/http_teacher.h): when the teacher splits the
// text as the student does, the mapped top-k is the teacher's own; where a teacher token spans two
// student tokens, the inner position keeps its hard label and the outer one the teacher's view.
#include <torch/torch.h>

#include "lineage/teacher/http_teacher.h"
#include "lineage/teacher/teacher.h"
#include "test_util.h"

namespace lt = lineage::testing;
using lineage::teacher::ApiScoredText;
using lineage::teacher::LocalTeacher;
using lineage::teacher::map_through_text;

namespace {

const std::string kModel = std::string(LINEAGE_SOURCE_DIR) + "/models/lineage-kjv-5m.gguf";

// What an API returns for `ids` scored by `t` with `k` alternatives, token texts and byte offsets.
ApiScoredText score_as_api(LocalTeacher& t, const std::vector<int32_t>& ids, int k) {
  const auto& tok = t.tokenizer();
  auto x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  auto logp = torch::log_softmax(t.logits(x), -1)[0];
  ApiScoredText sc;
  int64_t off = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t prev = i ? ids[i - 1] : -1;
    sc.tokens.push_back(tok.decode_piece(prev, ids[i]));
    sc.offsets.push_back(off);
    off += static_cast<int64_t>(sc.tokens.back().size());
    std::vector<std::pair<std::string, float>> top;
    if (i > 0) {
      sc.logprobs.push_back(logp[i - 1][ids[i]].item<float>());
      auto [v, id] = logp[i - 1].topk(k);
      for (int j = 0; j < k; ++j)
        top.emplace_back(tok.decode_piece(prev, static_cast<int32_t>(id[j].item<int64_t>())), v[j].item<float>());
    } else {
      sc.logprobs.push_back(std::nanf(""));
    }
    sc.top.push_back(top);
  }
  return sc;
}

}  // namespace

TEST(MapThroughText, SameSplitGivesTheTeachersOwnTopK) {
  LocalTeacher t(kModel, torch::kCPU);
  auto ids = t.tokenizer().encode("And God said, Let there be light: and there was light.", true);
  auto sc = score_as_api(t, ids, 8);
  auto m = map_through_text(sc, ids, t.tokenizer(), 8);
  auto x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  auto logp = torch::log_softmax(t.logits(x), -1)[0];
  const int64_t T = static_cast<int64_t>(ids.size()) - 1;
  ASSERT_EQ(m.ids.size(0), T);
  int exact = 0;
  for (int64_t p = 0; p < T; ++p) {
    EXPECT_NEAR(m.target_logprobs[p].item<float>(), logp[p][ids[p + 1]].item<float>(), 1e-5) << "position " << p;
    auto [v, id] = logp[p].topk(8);
    // Alternatives whose texts are unique map back to their own ids with their own log-probabilities.
    if (torch::equal(m.ids[p], id)) {
      EXPECT_TRUE(torch::allclose(m.logprobs[p], v, 1e-5, 1e-5));
      ++exact;
    }
  }
  EXPECT_GE(exact, T - 2);
}

TEST(MapThroughText, ATeacherTokenSpanningTwoStudentTokensLeavesTheInnerOneItsHardLabel) {
  LocalTeacher t(kModel, torch::kCPU);
  auto ids = t.tokenizer().encode("In the beginning God created the heaven and the earth.", true);
  ASSERT_GE(ids.size(), 6u);
  auto sc = score_as_api(t, ids, 5);
  // Merge teacher tokens 3 and 4 into one: no teacher token starts where student token 4 does.
  sc.tokens[3] += sc.tokens[4];
  sc.tokens.erase(sc.tokens.begin() + 4);
  sc.offsets.erase(sc.offsets.begin() + 4);
  sc.logprobs.erase(sc.logprobs.begin() + 4);
  sc.top.erase(sc.top.begin() + 4);
  auto m = map_through_text(sc, ids, t.tokenizer(), 5);
  // Position 3 predicts student token 4, which starts inside the merged teacher token.
  EXPECT_EQ(m.ids[3][0].item<int64_t>(), ids[4]);
  EXPECT_FLOAT_EQ(m.logprobs[3][0].item<float>(), 0.0f);
  EXPECT_LT(m.logprobs[3][1].item<float>(), -1000.0f);
  EXPECT_FLOAT_EQ(m.target_logprobs[3].item<float>(), 0.0f);
  // Position 2 predicts student token 3: the teacher's token there is the merged text, so the
  // next token's log-probability comes from the alternative of its own text (when in the top 5).
  const std::string own = t.tokenizer().decode_piece(ids[2], ids[3]);
  for (const auto& [text, lp] : sc.top[3])
    if (text == own) EXPECT_NEAR(m.target_logprobs[2].item<float>(), lp, 1e-5);
}
