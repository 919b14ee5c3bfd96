// One distillation step — student forward, KD loss, backward, AdamW — on the foundation's
// 10.4M-parameter bench config (vocab 4096, batch 8 x 256, 2 threads), measured side by side in one
// run for: cross-entropy only (the baseline), forward KL over the full vocabulary to a fixed teacher
// distribution, and forward KL to the top-20 + next token + 6 tail draws read from a teacher cache on disk (memory-mapped,
// built here from that same distribution), and the full-vocabulary forward KL with the forward in
// bfloat16 (autocast). Also the cache's bytes per token, all included.
// Prints one JSON line per measurement.   bench_distill_step [--steps N] [--threads T]
#include <ATen/autocast_mode.h>

#include <filesystem>

#include "bench_common.h"
#include "lineage/core/allocator.h"
#include "lineage/core/threads.h"
#include "lineage/distill/losses.h"
#include "lineage/model/llama.h"
#include "lineage/teacher/cache.h"

namespace {

using namespace lineage;

// A teacher whose next-token distribution is a fixed random table (B, T, V): no model cost, so the
// figures are the student's step plus the loss and the signal's transport.
class FixedTeacher : public teacher::Teacher {
 public:
  FixedTeacher(torch::Tensor logits, const text::Tokenizer& tok) : logits_(std::move(logits)), tok_(tok) {
    info_.source = "fixed random distribution";
    info_.sha256 = std::string(64, '0');
    info_.tokenizer_sha256 = std::string(64, '1');
    info_.vocab_size = logits_.size(-1);
  }
  const teacher::TeacherInfo& info() const override { return info_; }
  const text::Tokenizer& tokenizer() const override { return tok_; }
  teacher::Abilities abilities() const override {
    teacher::Abilities a;
    a.logits = a.top_k = a.next_logprob = a.tail_draws = true;
    a.max_top_k = info_.vocab_size;
    return a;
  }
  torch::Tensor logits(const torch::Tensor& tokens) override { return logits_.slice(0, 0, tokens.size(0)); }
  teacher::TopK top_k(const torch::Tensor& tokens, const teacher::TopKRequest& request) override {
    return teacher::top_k_of(torch::log_softmax(logits(tokens), -1), request);
  }
  std::vector<int32_t> generate(const std::vector<int32_t>&, const model::GenerateOptions&) override { return {}; }

 private:
  torch::Tensor logits_;
  const text::Tokenizer& tok_;
  teacher::TeacherInfo info_;
};

// A cache of the fixed teacher's top-k over `data`'s rows in `dir`; prints its bytes per token.
std::unique_ptr<teacher::TeacherCache> make_cache(FixedTeacher& teacher, const torch::Tensor& data, int64_t K,
                                                  const std::filesystem::path& dir) {
  const int64_t B = data.size(0), T = data.size(1) - 1;
  std::vector<int32_t> rows32(data.numel());
  for (int64_t i = 0; i < data.numel(); ++i) rows32[i] = static_cast<int32_t>(data.view({-1})[i].item<int64_t>());
  teacher::CacheBuildOptions o;
  o.k = K;
  o.seq_len = T;
  o.quiet = true;
  teacher::build_cache(teacher, {{"train", rows32.data(), B, Digest{}}}, o, dir);
  auto cache = std::make_unique<teacher::TeacherCache>(dir);
  int64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) bytes += static_cast<int64_t>(e.file_size());
  bench::emit({{"bench", "cache_bytes_per_token"}, {"k", K}, {"vocab", teacher.info().vocab_size},
               {"record_bytes", cache->record_bytes()}, {"bytes_per_token_all_files", double(bytes) / double(B * T)},
               {"tail_samples", cache->tail_samples()},
               {"bytes_per_token_k20_vocab_131072", teacher::cache_record_bytes(20, 131072, cache->tail_samples())}});
  return cache;
}

}  // namespace

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  int steps = 5, threads = 2;
  const int64_t B = 8, T = 256, K = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--steps") steps = std::stoi(argv[i + 1]);
    else if (a == "--threads") threads = std::stoi(argv[i + 1]);
  }
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const model::ModelConfig c = bench::step_bench_config(T);
  auto data = torch::randint(0, c.vocab_size, {B, T + 1}, torch::kLong);
  auto x = data.narrow(1, 0, T), y = data.narrow(1, 1, T).reshape({-1});
  auto mask = torch::ones({B * T}, torch::kBool);
  auto teacher_logits = torch::randn({B, T, c.vocab_size}) * 3;
  text::Vocab v;
  for (int i = 0; i < c.vocab_size; ++i) v.tokens.push_back("t" + std::to_string(i));
  v.scores.assign(v.tokens.size(), 0.0f);
  v.types.assign(v.tokens.size(), text::TokenType::kNormal);
  auto tok = text::make_tokenizer(v);
  FixedTeacher teacher(teacher_logits, *tok);
  auto dir = std::filesystem::temp_directory_path() / ("lineage_bench_cache_" + std::to_string(getpid()));
  auto cache = make_cache(teacher, data, K, dir);  // these 8 rows, top-20 of the fixed distribution

  std::vector<int64_t> all_rows;
  for (int64_t i = 0; i < B; ++i) all_rows.push_back(i);
  distill::KDOptions kd;
  for (std::string kind : {"ce", "forward_kl_full_vocab", "forward_kl_top20_tail6_cache", "forward_kl_full_vocab_bf16"}) {
    // The bf16 line: the forward under libtorch's CPU autocast (matmuls in bfloat16 through oneDNN,
    // AVX-512 BF16 where the CPU has it), master weights, AdamW and the loss in float32 -- what
    // `lineage distill --bf16` does.
    const bool bf16 = kind == "forward_kl_full_vocab_bf16";
    torch::manual_seed(0);
    model::Llama net(c);
    net->init_weights();
    net->train();
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.1));
    auto step = [&] {
      opt.zero_grad();
      if (bf16) {
        at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
        at::autocast::set_cpu_enabled(true);
      }
      auto logits = net->forward(x).reshape({-1, c.vocab_size});  // (B*T, V)
      torch::Tensor loss;
      if (kind == "ce") {
        loss = distill::ce_loss(logits, y, mask);
      } else if (kind == "forward_kl_full_vocab" || bf16) {
        loss = distill::kd_loss(logits, teacher.logits(x).reshape({-1, c.vocab_size}), mask, kd);
      } else {
        auto top = cache->rows("train", all_rows, torch::kCPU);
        distill::SparseTeacher st;
        st.ids = top.ids.reshape({-1, K});
        st.logprobs = top.logprobs.reshape({-1, K});
        st.next = y;
        st.next_logprobs = top.target_logprobs.reshape({-1});
        st.tail_ids = top.tail_ids.reshape({-1, top.tail_ids.size(-1)});
        loss = distill::kd_loss_sparse(logits, st, mask, kd);
      }
      if (bf16) {
        at::autocast::set_cpu_enabled(false);
        at::autocast::clear_cache();
      }
      loss.backward();
      opt.step();
      return loss.item<double>();
    };
    step();
    double t0 = bench::now_s();
    double loss = 0;
    for (int s = 0; s < steps; ++s) loss = step();
    double secs = bench::now_s() - t0;
    bench::emit({{"bench", "distill_step"}, {"loss", kind}, {"parameters", c.num_parameters()}, {"batch", B}, {"seq", T},
                 {"threads", threads}, {"steps", steps}, {"seconds_per_step", secs / steps},
                 {"tokens_per_s", double(B) * T * steps / secs}, {"final_loss", loss}});
  }
  std::filesystem::remove_all(dir);
  return 0;
}
