// Generation throughput: greedy decoding with the KV cache on stories260K (or any model given),
// prefill and decode timed separately. Prints one JSON line.
//   bench_generate [MODEL] [--tokens N] [--threads T] [--repeats R]
#include <filesystem>

#include "bench_common.h"
#include "lineage/core/allocator.h"
#include "lineage/core/threads.h"
#include "lineage/io/model_file.h"
#include "lineage/model/cpu_decoder.h"
#include "lineage/model/generate.h"

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  using namespace lineage;
  std::string model = std::string(LINEAGE_SOURCE_DIR) + "/../shared/models/stories260K/stories260K.bin";
  int tokens = 256, threads = 2, repeats = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tokens" && i + 1 < argc) tokens = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--repeats" && i + 1 < argc) repeats = std::stoi(argv[++i]);
    else model = a;
  }
  if (!std::filesystem::exists(model)) {
    bench::emit({{"bench", "generate"}, {"skipped", "model not found: " + model}});
    return 0;
  }
  try {
    model::set_cpu_threads(threads);  // OpenBLAS and libtorch alike
    auto file = io::read_model(model);
    auto net = io::make_model(file);
    std::vector<int32_t> prompt{1, 403, 407, 261, 378};  // "Once upon a time" in tok512
    if (file.tokenizer) prompt = file.tokenizer->encode("Once upon a time", true);
    model::GenerateOptions g;
    g.max_tokens = tokens;
    g.sampling.temperature = 0;
    model::generate(net, prompt, g);  // warm-up
    double best = 1e30;
    size_t produced = 0;
    for (int r = 0; r < repeats; ++r) {
      double t0 = bench::now_s();
      produced = model::generate(net, prompt, g).size();
      best = std::min(best, bench::now_s() - t0);
    }
    // Prefill alone: a 256-token forward with a fresh cache (libtorch's batched path).
    auto ids = torch::randint(3, file.config.vocab_size, {1, std::min<int64_t>(256, file.config.max_seq_len)}, torch::kLong);
    double prefill = 1e30;
    torch::NoGradGuard ng;
    for (int r = 0; r < repeats; ++r) {
      auto cache = net->make_cache(1, ids.size(1));
      double t0 = bench::now_s();
      net->forward(ids, &cache);
      prefill = std::min(prefill, bench::now_s() - t0);
    }
    // The same prompt through the matrix-vector decoder that generation uses on the CPU (sgemm).
    std::vector<int32_t> prompt_ids(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    double prefill_decoder = 1e30;
    for (int r = 0; r < repeats; ++r) {
      model::CpuDecoder d(net, ids.size(1));
      double t0 = bench::now_s();
      d.feed(prompt_ids);
      prefill_decoder = std::min(prefill_decoder, bench::now_s() - t0);
    }
    bench::emit({{"bench", "generate"},
                 {"model", model},
                 {"parameters", file.config.num_parameters()},
                 {"threads", threads},
                 {"decode_tokens", produced},
                 {"decode_tokens_per_s", produced / best},
                 {"prefill_tokens", ids.size(1)},
                 {"prefill_tokens_per_s", ids.size(1) / prefill_decoder},
                 {"prefill_libtorch_tokens_per_s", ids.size(1) / prefill},
                 {"repeats", repeats}});
  } catch (const std::exception& e) {
    std::cerr << "bench_generate: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
