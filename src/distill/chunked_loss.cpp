// The chunked distillation objective (see chunked_loss.h).
#include "lineage/distill/chunked_loss.h"

#include "lineage/core/error.h"
#include "lineage/model/llama.h"

namespace lineage::distill {

namespace {

// Returns the loss computed in chunks; its backward multiplies the gradients the chunks already
// produced by the incoming gradient (a scalar), as Liger's fused linear cross-entropy does.
struct PrecomputedGradients : torch::autograd::Function<PrecomputedGradients> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& head,
                               const torch::Tensor& loss, const torch::Tensor& grad_hidden, const torch::Tensor& grad_head) {
    ctx->save_for_backward({grad_hidden, grad_head});
    return loss.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& g = grad_out[0];
    return {saved[0] * g.to(saved[0].scalar_type()), saved[1] * g.to(saved[1].scalar_type()), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SparseTeacher slice_rows(const SparseTeacher& st, int64_t begin, int64_t end) {
  SparseTeacher c;
  const int64_t n = end - begin;
  c.ids = st.ids.narrow(0, begin, n);
  c.logprobs = st.logprobs.narrow(0, begin, n);
  if (st.next.defined()) c.next = st.next.narrow(0, begin, n);
  if (st.next_logprobs.defined()) c.next_logprobs = st.next_logprobs.narrow(0, begin, n);
  if (st.tail_ids.defined()) c.tail_ids = st.tail_ids.narrow(0, begin, n);
  return c;
}

int64_t auto_chunk_rows(int64_t rows, int64_t vocab) { return model::logit_chunk_rows(rows, vocab); }

ChunkedLoss chunked_kd_and_ce(const torch::Tensor& hidden, const torch::Tensor& head, const torch::Tensor& targets,
                              const torch::Tensor& mask, const ChunkTeacher& teacher, const KDOptions& kd, double alpha,
                              int64_t chunk_rows) {
  if (hidden.dim() != 2 || head.dim() != 2 || hidden.size(1) != head.size(1))
    fail("chunked loss: hidden states {} and head {} must be (N, C) and (V, C)", c10::str(hidden.sizes()), c10::str(head.sizes()));
  const int64_t N = hidden.size(0);
  if (targets.numel() != N || mask.numel() != N)
    fail("chunked loss: {} rows of hidden states, {} targets, {} mask entries", N, targets.numel(), mask.numel());
  if (alpha > 0 && !teacher.logits && !teacher.sparse) fail("chunked loss: alpha {} > 0 and no teacher signal", alpha);
  const int64_t step = chunk_rows > 0 && chunk_rows < N ? chunk_rows : std::max<int64_t>(N, 1);
  auto m_all = mask.reshape({-1}).to(torch::kBool);
  const double total = std::max<double>(1.0, m_all.sum().item<double>());

  // Gradients are gathered in float32 whatever the weights' dtype.
  torch::Tensor grad_hidden = torch::zeros(hidden.sizes(), hidden.options().dtype(torch::kFloat32).requires_grad(false));
  torch::Tensor grad_head = torch::zeros(head.sizes(), head.options().dtype(torch::kFloat32).requires_grad(false));
  double loss_sum = 0, kd_sum = 0, ce_sum = 0;
  torch::Tensor w = head.detach().requires_grad_(true);
  for (int64_t b = 0; b < N; b += step) {
    const int64_t n = std::min(step, N - b);
    auto m = m_all.narrow(0, b, n);
    const double count = m.sum().item<double>();
    if (count == 0) continue;
    const double share = count / total;
    torch::AutoGradMode grad_on(true);
    torch::Tensor h = hidden.detach().narrow(0, b, n).requires_grad_(true);
    torch::Tensor logits = torch::matmul(h, w.t()).to(torch::kFloat32);  // (n, V)
    torch::Tensor loss = torch::zeros({}, logits.options());
    if (alpha > 0) {
      torch::Tensor k;
      if (teacher.sparse) {
        k = kd_loss_sparse(logits, slice_rows(*teacher.sparse, b, b + n), m, kd);
      } else {
        torch::Tensor t;
        {
          torch::NoGradGuard no_grad;
          t = teacher.logits(b, b + n).to(torch::kFloat32);  // (n, V)
        }
        k = kd_loss(logits, t, m, kd);
      }
      loss = loss + alpha * k;
      kd_sum += k.item<double>() * share;
    }
    if (alpha < 1) {
      auto ce = ce_loss(logits, targets.reshape({-1}).narrow(0, b, n), m);
      loss = loss + (1 - alpha) * ce;
      ce_sum += ce.item<double>() * share;
    }
    loss = loss * share;
    auto grads = torch::autograd::grad({loss}, {h, w});
    grad_hidden.narrow(0, b, n).copy_(grads[0]);
    grad_head.add_(grads[1]);
    w.mutable_grad() = torch::Tensor();
    loss_sum += loss.item<double>();
  }
  ChunkedLoss out;
  torch::Tensor value = torch::tensor(loss_sum, hidden.options().dtype(torch::kFloat32).requires_grad(false));
  out.loss = PrecomputedGradients::apply(hidden, head, value, grad_hidden, grad_head);
  if (alpha > 0) out.kd = kd_sum;
  if (alpha < 1) out.ce = ce_sum;
  return out;
}

}  // namespace lineage::distill
