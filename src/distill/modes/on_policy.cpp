// on_policy: generalized knowledge distillation (GKD, Agarwal et al. 2024). With probability
// lambda per step the batch is the student's own continuation of the first prompt_tokens of each
// row, scored token by token by the teacher; the other steps are online batches. The choice and
// the samples are seeded by (seed, step), so a resumed run makes the same ones.
#include "lineage/core/mix.h"
#include "lineage/model/generate.h"
#include "modes.h"

namespace lineage::distill::modes {

namespace {

// Uniform in [0, 1) from (seed, a, b): decisions that repeat exactly on resume.
double unit(uint64_t seed, uint64_t a, uint64_t b = 0) {
  return static_cast<double>(splitmix64(seed ^ splitmix64(a ^ splitmix64(b))) >> 11) * 0x1.0p-53;
}

class OnPolicy : public Objective {
 public:
  explicit OnPolicy(const ObjectiveContext& c) : c_(c) {}
  const TokenRows& train_rows() const override { return c_.data.train; }
  StepResult loss(const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>&, int64_t step) override {
    const Recipe& r = c_.recipe;
    if (unit(r.train.seed, 0x6f6e706f6c696379ULL, static_cast<uint64_t>(step)) < r.lambda) return rollout_loss(tok, step);
    StepResult res = batch_loss(c_, tok, mask);
    res.stats["on_policy"] = 0;
    return res;
  }

 private:
  // The student continues the first prompt_tokens of each row of tok (B, T+1); the teacher scores
  // what it wrote.
  StepResult rollout_loss(const torch::Tensor& tok, int64_t step) {
    const Recipe& r = c_.recipe;
    auto& student = c_.student;
    const int64_t B = tok.size(0), P = std::min<int64_t>(r.prompt_tokens, tok.size(1) - 1);
    std::vector<std::vector<int64_t>> seqs;
    int64_t L = 0;
    {
      torch::NoGradGuard no_grad;
      student->eval();
      auto cpu = tok.to(torch::kCPU);
      for (int64_t b = 0; b < B; ++b) {
        std::vector<int32_t> prompt(P);
        for (int64_t i = 0; i < P; ++i) prompt[i] = static_cast<int32_t>(cpu[b][i].item<int64_t>());
        model::GenerateOptions g;
        g.max_tokens = static_cast<int>(std::min<int64_t>(r.gen_tokens, student->config().max_seq_len - P));
        g.sampling = r.sampling;
        g.sampling.seed = splitmix64(r.train.seed ^ splitmix64(static_cast<uint64_t>(step) * 1315423911ULL + b));
        auto c = model::generate(student, prompt, g);
        std::vector<int64_t> s(prompt.begin(), prompt.end());
        s.insert(s.end(), c.begin(), c.end());
        L = std::max<int64_t>(L, s.size());
        seqs.push_back(std::move(s));
      }
      student->train();
    }
    auto t2 = torch::zeros({B, L}, torch::kInt64);  // (B, L) prompt + continuation, zero-padded
    auto m2 = torch::zeros({B, L}, torch::kBool);   // (B, L) the continuation's positions
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < static_cast<int64_t>(seqs[b].size()); ++i) {
        t2[b][i] = seqs[b][i];
        if (i >= P) m2[b][i] = true;
      }
    t2 = t2.to(tok.device());
    m2 = m2.to(tok.device());
    auto input = t2.slice(1, 0, -1);
    auto next = t2.slice(1, 1).reshape({-1});
    auto m = m2.slice(1, 1).reshape({-1});
    auto top = [&] {
      teacher::TopKRequest req;
      req.k = r.top_k;
      req.next = t2.slice(1, 1);
      return sparse(c_.teacher.top_k(input, req), next);
    };
    StepResult res;
    if (int64_t chunk = chunk_rows(r, m.numel(), student->config().vocab_size); chunk > 0) {
      // KD alone (no cross-entropy on the student's own samples), chunked as the other modes are.
      std::function<SparseTeacher()> sparse_teacher;
      if (!c_.teacher.has_logits()) sparse_teacher = top;
      res.loss = chunked_kd_and_ce(c_, input, next, m, sparse_teacher, chunk, res, 1.0);
    } else {
      auto s_logits = student->forward(input);
      const int64_t V = s_logits.size(-1);
      auto s_flat = s_logits.reshape({-1, V}).to(torch::kFloat32);
      res.loss = c_.teacher.has_logits() ? kd_loss(s_flat, c_.teacher.logits(input).reshape({-1, V}), m, r.kd)
                                         : kd_loss_sparse(s_flat, top(), m, r.kd);
      res.stats["kd"] = res.loss.item<double>();
    }
    res.stats["on_policy"] = 1;
    res.tokens = B * (L - 1);
    return res;
  }

  ObjectiveContext c_;
};

}  // namespace

std::unique_ptr<Objective> on_policy(const ObjectiveContext& c) { return std::make_unique<OnPolicy>(c); }

}  // namespace lineage::distill::modes
