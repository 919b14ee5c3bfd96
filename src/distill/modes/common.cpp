// What the distillation modes share: the choice of mode, the sparse teacher signal, and the KD +
// CE mix. See include/lineage/distill/objective.h.
#include "lineage/core/error.h"
#include "lineage/core/mix.h"
#include "lineage/distill/chunked_loss.h"
#include "modes.h"

#include <map>
#include <set>

namespace lineage::distill {

std::unique_ptr<Objective> make_objective(const ObjectiveContext& c) {
  switch (c.recipe.mode) {
    case Mode::kOnline: return modes::online(c);
    case Mode::kOffline: return modes::offline(c);
    case Mode::kSeqKD: return modes::seq_kd(c);
    case Mode::kOnPolicy: return modes::on_policy(c);
  }
  fail("unknown distillation mode");
}

namespace modes {

SparseTeacher sparse(const teacher::TopK& top, const torch::Tensor& next) {
  const int64_t K = top.ids.size(-1);
  SparseTeacher st;
  st.ids = top.ids.reshape({-1, K});
  st.logprobs = top.logprobs.reshape({-1, K});
  if (top.target_logprobs.defined()) {
    st.next = next.reshape({-1});
    st.next_logprobs = top.target_logprobs.reshape({-1});
  }
  if (top.tail_ids.defined()) st.tail_ids = top.tail_ids.reshape({-1, top.tail_ids.size(-1)});
  return st;
}

namespace {

// The teacher's sparse answer for `input` (B, T): its top k, the next tokens' log-probabilities
// and tail draws seeded by the step (the same draws again after a resume).
SparseTeacher teacher_top_k(const ObjectiveContext& c, const torch::Tensor& input, const torch::Tensor& target) {
  const Recipe& r = c.recipe;
  teacher::TopKRequest req;
  req.k = r.top_k;
  req.next = target.reshape(input.sizes());
  req.tail_samples = r.tail_samples;
  req.seed = splitmix64(static_cast<uint64_t>(r.train.seed) ^ splitmix64(static_cast<uint64_t>(c.step()) + 0x7461696cULL));
  return sparse(c.teacher.top_k(input, req), target);
}

}  // namespace

torch::Tensor teacher_kd(const ObjectiveContext& c, const torch::Tensor& s, const torch::Tensor& input,
                         const torch::Tensor& target, const torch::Tensor& mask) {
  const Recipe& r = c.recipe;
  if (r.top_k > 0) return kd_loss_sparse(s, teacher_top_k(c, input, target), mask, r.kd);
  return kd_loss(s, c.teacher.logits(input).reshape({-1, s.size(-1)}), mask, r.kd);
}

torch::Tensor kd_and_ce(const Recipe& r, const torch::Tensor& s_logits, const torch::Tensor& target, const torch::Tensor& mask,
                        const std::function<torch::Tensor(const torch::Tensor& s)>& kd, StepResult& res) {
  const int64_t V = s_logits.size(-1);
  auto s = s_logits.reshape({-1, V}).to(torch::kFloat32);
  torch::Tensor loss = torch::zeros({}, s.options());
  if (r.alpha > 0) {
    torch::Tensor k = kd(s);
    loss = loss + r.alpha * k;
    res.stats["kd"] = k.item<double>();
  }
  if (r.alpha < 1) {
    auto ce = ce_loss(s, target, mask);
    loss = loss + (1 - r.alpha) * ce;
    res.stats["ce"] = ce.item<double>();
  }
  return loss;
}

int64_t chunk_rows(const Recipe& r, int64_t positions, int64_t vocab) {
  if (r.kd_chunk_rows < 0) return auto_chunk_rows(positions, vocab);
  return r.kd_chunk_rows >= positions ? 0 : r.kd_chunk_rows;
}

torch::Tensor chunked_kd_and_ce(const ObjectiveContext& c, const torch::Tensor& input, const torch::Tensor& target,
                                const torch::Tensor& mask, const std::function<SparseTeacher()>& sparse_teacher, int64_t chunk,
                                StepResult& res, double alpha, model::ActivationObserver* student_sees,
                                model::ActivationObserver* teacher_sees) {
  const Recipe& r = c.recipe;
  if (alpha < 0) alpha = r.alpha;
  model::Llama student = c.student;
  torch::Tensor h;
  {
    model::ObserveActivations watch(student_sees);
    h = student->hidden(input);  // (B, T, C)
  }
  h = h.reshape({-1, h.size(-1)});
  ChunkTeacher teacher;
  SparseTeacher st;
  torch::Tensor t_hidden, t_head, t_logits;
  if (alpha > 0) {
    if (sparse_teacher) {
      st = sparse_teacher();
      teacher.sparse = &st;
    } else if (model::Llama* tm = c.teacher.model()) {
      // The in-process teacher's logits, one chunk at a time from its hidden states.
      torch::NoGradGuard no_grad;
      model::ObserveActivations watch(teacher_sees);
      t_hidden = (*tm)->hidden(input.to((*tm)->device()));
      t_hidden = t_hidden.reshape({-1, t_hidden.size(-1)});  // (N, Ct)
      t_head = (*tm)->head_weight();                          // (V, Ct)
      teacher.logits = [&](int64_t b, int64_t e) {
        return torch::matmul(t_hidden.narrow(0, b, e - b), t_head.t()).to(h.device(), torch::kFloat32);
      };
    } else {
      t_logits = c.teacher.logits(input).reshape({h.size(0), -1});
      teacher.logits = [&](int64_t b, int64_t e) { return t_logits.narrow(0, b, e - b); };
    }
  }
  ChunkedLoss cl = distill::chunked_kd_and_ce(h, student->head_weight(), target, mask, teacher, r.kd, alpha, chunk);
  if (cl.kd >= 0) res.stats["kd"] = cl.kd;
  if (cl.ce >= 0) res.stats["ce"] = cl.ce;
  return cl.loss;
}

namespace {

// The residual stream after the blocks one side of --hidden-layers names, as a forward pass makes it.
struct BlockStates : model::ActivationObserver {
  std::set<int64_t> wanted;
  std::map<int64_t, torch::Tensor> states;
  void block(int64_t layer, const torch::Tensor&, const torch::Tensor& out) override {
    if (wanted.count(layer)) states[layer] = out;
  }
  bool complete() const { return states.size() == wanted.size(); }
};

}  // namespace

StepResult batch_loss(const ObjectiveContext& c, const torch::Tensor& tok, const torch::Tensor& mask) {
  StepResult res;
  res.tokens = tok.size(0) * (tok.size(1) - 1);
  auto input = tok.slice(1, 0, -1);
  auto target = tok.slice(1, 1).reshape({-1});
  auto m = mask.slice(1, 1).reshape({-1});
  model::Llama student = c.student;  // the holder: forward() is not const
  // --hidden-loss: both models' block outputs, seen as their forward passes for the logit loss run.
  BlockStates s_states, t_states;
  model::ActivationObserver *student_sees = nullptr, *teacher_sees = nullptr;
  if (c.hidden) {
    for (auto [s, t] : c.hidden->pairs()) s_states.wanted.insert(s), t_states.wanted.insert(t);
    student_sees = &s_states;
    teacher_sees = &t_states;
  }
  if (int64_t chunk = chunk_rows(c.recipe, target.numel(), student->config().vocab_size); chunk > 0) {
    std::function<SparseTeacher()> top;
    if (c.recipe.top_k > 0) top = [&] {
      model::ObserveActivations watch(teacher_sees);
      return teacher_top_k(c, input, target);
    };
    res.loss = chunked_kd_and_ce(c, input, target, m, top, chunk, res, -1, student_sees, teacher_sees);
  } else {
    torch::Tensor s_logits;
    {
      model::ObserveActivations watch(student_sees);
      s_logits = student->forward(input);
    }
    res.loss = kd_and_ce(c.recipe, s_logits, target, m, [&](const torch::Tensor& s) {
      model::ObserveActivations watch(teacher_sees);
      return teacher_kd(c, s, input, target, m);
    }, res);
  }
  if (c.hidden) {
    if (!t_states.complete()) {  // the teacher did not run on this batch (alpha 0): its blocks alone
      model::Llama* tm = c.teacher.model();
      if (!tm) fail("--hidden-loss needs a teacher that runs in this process (a model file)");
      torch::NoGradGuard no_grad;
      model::ObserveActivations watch(&t_states);
      (*tm)->hidden(input.to((*tm)->device()));
    }
    HiddenDistill term = c.hidden;  // the holder: loss() is not const
    auto hidden = term->loss(s_states.states, t_states.states, m);
    res.stats["hidden"] = hidden.item<double>();
    res.loss = res.loss + hidden;
  }
  return res;
}

}  // namespace modes
}  // namespace lineage::distill
