// The chunked objective against the plain one: every loss, value and gradients (hidden states
// and head), for chunk sizes from one row to all of them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lineage/core/error.h"
#include "lineage/distill/chunked_loss.h"
#include "lineage/distill/losses.h"

namespace lineage::distill {
namespace {

struct Case {
  const char* name;
  Divergence div;
  double beta, tau, alpha;
  bool sparse, tail;
};

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

void check_case(const Case& c) {
  torch::manual_seed(11);
  const int64_t N = 37, C = 16, V = 67, K = 5, M = 3;
  auto hidden = torch::randn({N, C}, torch::kFloat64).to(torch::kFloat32);
  auto head = (torch::randn({V, C}) * 0.5).to(torch::kFloat32);
  auto t_logits = torch::randn({N, V}) * 3;  // a peaked teacher
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  auto mask = torch::rand({N}) > 0.2;
  KDOptions kd;
  kd.divergence = c.div;
  kd.beta = c.beta;
  kd.temperature = c.tau;
  SparseTeacher st;
  if (c.sparse) {
    auto logp = torch::log_softmax(t_logits, -1);
    auto [v, ids] = logp.topk(K, -1);
    st.ids = ids;
    st.logprobs = v;
    st.next = targets;
    st.next_logprobs = logp.gather(1, targets.unsqueeze(1)).squeeze(1);
    if (c.tail) st.tail_ids = torch::randint(0, V, {N, M}, torch::kLong);
  }
  // The plain objective on the full logits.
  auto h0 = hidden.clone().requires_grad_(true), w0 = head.clone().requires_grad_(true);
  auto logits = torch::matmul(h0, w0.t());
  torch::Tensor plain = torch::zeros({});
  if (c.alpha > 0) plain = plain + c.alpha * (c.sparse ? kd_loss_sparse(logits, st, mask, kd) : kd_loss(logits, t_logits, mask, kd));
  if (c.alpha < 1) plain = plain + (1 - c.alpha) * ce_loss(logits, targets, mask);
  plain.backward();
  for (int64_t chunk : {1, 5, 16, 36, 37, 0}) {
    auto h1 = hidden.clone().requires_grad_(true), w1 = head.clone().requires_grad_(true);
    ChunkTeacher teacher;
    if (c.sparse) teacher.sparse = &st;
    else teacher.logits = [&](int64_t b, int64_t e) { return t_logits.narrow(0, b, e - b); };
    ChunkedLoss cl = chunked_kd_and_ce(h1, w1, targets, mask, teacher, kd, c.alpha, chunk);
    (cl.loss * 1.0).backward();
    const double pv = plain.item<double>(), cv = cl.loss.item<double>();
    EXPECT_LE(std::abs(pv - cv), 1e-5 * std::max(1e-3, std::abs(pv))) << c.name << " chunk " << chunk << ": " << pv << " vs " << cv;
    const double gh = max_abs(h1.grad() - h0.grad()), gw = max_abs(w1.grad() - w0.grad());
    EXPECT_LE(gh, 1e-5 * max_abs(h0.grad()) + 1e-9) << c.name << " chunk " << chunk << ": hidden gradient";
    EXPECT_LE(gw, 1e-5 * max_abs(w0.grad()) + 1e-9) << c.name << " chunk " << chunk << ": head gradient";
  }
}

TEST(ChunkedLoss, EveryLossEqualsTheUnchunkedOneInValueAndGradients) {
  const Case cases[] = {
      {"forward_kl", Divergence::kForwardKL, 0.5, 1, 1, false, false},
      {"reverse_kl", Divergence::kReverseKL, 0.5, 1, 1, false, false},
      {"jsd_0.1", Divergence::kJSD, 0.1, 1, 1, false, false},
      {"jsd_0.5", Divergence::kJSD, 0.5, 1, 1, false, false},
      {"jsd_0.9", Divergence::kJSD, 0.9, 1, 1, false, false},
      {"tvd", Divergence::kTVD, 0.5, 1, 1, false, false},
      {"forward_kl_tau2", Divergence::kForwardKL, 0.5, 2, 1, false, false},
      {"jsd_0.5_tau0.5", Divergence::kJSD, 0.5, 0.5, 1, false, false},
      {"forward_kl_alpha0.5", Divergence::kForwardKL, 0.5, 1, 0.5, false, false},
      {"ce_only", Divergence::kForwardKL, 0.5, 1, 0, false, false},
      {"top5_next", Divergence::kForwardKL, 0.5, 1, 1, true, false},
      {"top5_next_tail3", Divergence::kForwardKL, 0.5, 1, 1, true, true},
      {"top5_reverse_kl_tau2", Divergence::kReverseKL, 0.5, 2, 1, true, false},
      {"top5_jsd_alpha0.7", Divergence::kJSD, 0.5, 1, 0.7, true, true},
  };
  for (const Case& c : cases) check_case(c);
}

TEST(ChunkedLoss, ReportsItsPartsAndRefusesMismatchedShapes) {
  torch::manual_seed(3);
  auto hidden = torch::randn({10, 4}), head = torch::randn({9, 4}), t = torch::randn({10, 9});
  auto targets = torch::randint(0, 9, {10}, torch::kLong);
  auto mask = torch::ones({10}, torch::kBool);
  ChunkTeacher teacher;
  teacher.logits = [&](int64_t b, int64_t e) { return t.narrow(0, b, e - b); };
  KDOptions kd;
  ChunkedLoss cl = chunked_kd_and_ce(hidden, head, targets, mask, teacher, kd, 0.25, 3);
  EXPECT_NEAR(cl.kd, kd_loss(torch::matmul(hidden, head.t()), t, mask, kd).item<double>(), 1e-5);
  EXPECT_NEAR(cl.ce, ce_loss(torch::matmul(hidden, head.t()), targets, mask).item<double>(), 1e-5);
  EXPECT_NEAR(cl.loss.item<double>(), 0.25 * cl.kd + 0.75 * cl.ce, 1e-5);
  EXPECT_THROW(chunked_kd_and_ce(hidden, torch::randn({9, 5}), targets, mask, teacher, kd, 1, 3), lineage::Error);
  // A whole mask of padding: zero loss, zero gradients.
  auto h = hidden.clone().requires_grad_(true);
  ChunkedLoss none = chunked_kd_and_ce(h, head, targets, torch::zeros({10}, torch::kBool), teacher, kd, 1, 3);
  none.loss.backward();
  EXPECT_EQ(none.loss.item<double>(), 0.0);
  EXPECT_EQ(h.grad().abs().max().item<double>(), 0.0);
}

TEST(ChunkedLoss, AutoChunksOnlyLargeVocabularies) {
  EXPECT_EQ(auto_chunk_rows(8 * 256, 2048), 0);       // the demo: 16 MiB of logits, one piece
  EXPECT_EQ(auto_chunk_rows(8 * 256, 4096), 0);
  EXPECT_GT(auto_chunk_rows(8 * 512, 128256), 0);     // Llama 3's vocabulary: 2.1 GB, chunked
  EXPECT_LT(auto_chunk_rows(8 * 512, 128256), 8 * 512);
}

}  // namespace
}  // namespace lineage::distill

#include "lineage/distill/evaluate.h"
#include "tiny_teacher.h"
#include "test_util.h"
#include "lineage/teacher/teacher.h"

namespace lineage::distill {
namespace {

// The in-process teacher's top-k (with next-token log-probabilities and tail draws) and the
// evaluation, chunk by chunk, equal their one-piece answers.
TEST(ChunkedLoss, TeacherTopKAndEvaluationInChunksEqualTheWholeOnes) {
  testing::TempDir tmp;
  testing::write_tiny_teacher(tmp / "t.gguf");
  teacher::LocalTeacher whole((tmp / "t.gguf").string(), torch::kCPU);
  teacher::LocalTeacher chunked((tmp / "t.gguf").string(), torch::kCPU);
  whole.set_chunk_rows(0);
  chunked.set_chunk_rows(7);
  const int64_t V = whole.info().vocab_size;
  torch::manual_seed(2);
  auto tokens = torch::randint(0, V, {3, 17}, torch::kLong);
  teacher::TopKRequest req;
  req.k = 5;
  req.next = torch::randint(0, V, {3, 17}, torch::kLong);
  req.tail_samples = 4;
  req.seed = 99;
  auto a = whole.top_k(tokens, req), b = chunked.top_k(tokens, req);
  EXPECT_TRUE(torch::equal(a.ids, b.ids));
  EXPECT_LE((a.logprobs - b.logprobs).abs().max().item<double>(), 1e-5);
  EXPECT_LE((a.target_logprobs - b.target_logprobs).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(torch::equal(a.tail_ids, b.tail_ids)) << "tail draws differ between one call and chunks";
  ASSERT_EQ(b.ids.sizes(), (std::vector<int64_t>{3, 17, 5}));

  // Evaluation of a student against the teacher: the same figures in chunks of 5 positions.
  TokenRows rows;
  rows.seq_len = 16;
  for (int64_t i = 0; i < 6 * 17; ++i) rows.tokens.push_back(static_cast<int32_t>((i * 7) % V));
  rows.mask.assign(rows.tokens.size(), 1);
  for (size_t i = 0; i < rows.mask.size(); i += 5) rows.mask[i] = 0;
  model::Llama student = *whole.model();
  LmEval e0 = evaluate_lm(student, rows, &whole, 0, 4, nullptr, 0);
  LmEval e1 = evaluate_lm(student, rows, &chunked, 0, 4, nullptr, 5);
  EXPECT_EQ(e0.tokens, e1.tokens);
  EXPECT_NEAR(e0.loss, e1.loss, 1e-5 * e0.loss);
  EXPECT_NEAR(e0.accuracy, e1.accuracy, 1e-9);
  EXPECT_NEAR(e0.top1_agreement, e1.top1_agreement, 1e-9);
  EXPECT_NEAR(e0.kl, e1.kl, 1e-5);
  // The student is the teacher: it would be accepted as a draft every time.
  EXPECT_NEAR(e0.acceptance, 1.0, 1e-5);
  EXPECT_NEAR(e1.acceptance, 1.0, 1e-5);

  // Another student: α = mean Σ_v min(p_teacher, p_student), computed here directly.
  model::Llama other(student->config());
  torch::manual_seed(5);
  other->init_weights(0.2);
  std::fill(rows.mask.begin(), rows.mask.end(), 1);
  LmEval e2 = evaluate_lm(other, rows, &whole, 0, 4, nullptr, 0);
  LmEval e3 = evaluate_lm(other, rows, &chunked, 0, 4, nullptr, 5);
  torch::NoGradGuard ng;
  auto all = torch::tensor(std::vector<int64_t>(rows.tokens.begin(), rows.tokens.end()), torch::kLong).view({6, 17});
  auto in = all.slice(1, 0, 16);
  auto pt = torch::softmax((*whole.model())->forward(in), -1), ps = torch::softmax(other->forward(in), -1);
  const double alpha = torch::minimum(pt, ps).sum(-1).mean().item<double>();
  EXPECT_NEAR(e2.acceptance, alpha, 1e-5);
  EXPECT_NEAR(e3.acceptance, alpha, 1e-5);
  EXPECT_LT(alpha, 0.9);
}

}  // namespace
}  // namespace lineage::distill
