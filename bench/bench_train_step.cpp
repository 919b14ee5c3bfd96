// One training step — forward, cross-entropy, backward, AdamW — on the foundation's 10.4M-parameter
// config (vocab 4096, hidden 320, 8 layers, 8 heads, 4 KV heads, MLP 864, tied embeddings), batch
// 8 x 256 tokens, 2 threads by default, so it can be set beside other systems running the same.
// Prints one JSON line.   bench_train_step [--steps N] [--threads T] [--batch B] [--seq T]
#include "bench_common.h"
#include "lineage/core/allocator.h"
#include "lineage/core/threads.h"
#include "lineage/model/llama.h"

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  using namespace lineage;
  int steps = 5, threads = 2, batch = 8, seq = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::stoi(argv[i + 1]);
    if (a == "--steps") steps = v;
    else if (a == "--threads") threads = v;
    else if (a == "--batch") batch = v;
    else if (a == "--seq") seq = v;
  }
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const model::ModelConfig c = bench::step_bench_config(seq);
  model::Llama net(c);
  net->train();
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.1));
  auto data = torch::randint(0, c.vocab_size, {batch, seq + 1}, torch::kLong);
  auto x = data.narrow(1, 0, seq), y = data.narrow(1, 1, seq);
  auto step = [&] {
    opt.zero_grad();
    auto logits = net->forward(x);  // (B, T, V)
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, c.vocab_size}), y.reshape({-1}));
    loss.backward();
    opt.step();
    return loss.item<double>();
  };
  step();  // warm-up: allocations, optimizer state
  double t0 = bench::now_s();
  double loss = 0;
  for (int s = 0; s < steps; ++s) loss = step();
  double secs = bench::now_s() - t0;
  bench::emit({{"bench", "train_step"},
               {"parameters", c.num_parameters()},
               {"batch", batch},
               {"seq", seq},
               {"threads", threads},
               {"steps", steps},
               {"seconds_per_step", secs / steps},
               {"tokens_per_s", double(batch) * seq * steps / secs},
               {"final_loss", loss}});
  return 0;
}
