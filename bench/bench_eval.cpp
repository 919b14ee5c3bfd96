// Scoring throughput of lineage eval: stories260K reading HellaSwag items (context + each of the
// four endings, batched by log-likelihood as `lineage eval --task` does), tokens read per second.
// Prints one JSON line.   bench_eval [MODEL] [--items N] [--threads T]
#include <filesystem>

#include "bench_common.h"
#include "lineage/core/allocator.h"
#include "lineage/core/threads.h"
#include "lineage/eval/score.h"
#include "lineage/eval/tasks.h"
#include "lineage/io/model_file.h"

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  using namespace lineage;
  const std::string shared = std::string(LINEAGE_SOURCE_DIR) + "/../shared";
  std::string model = shared + "/models/stories260K/stories260K.bin";
  const std::string task_file = shared + "/data/eval/hellaswag_val_full.txt";
  int items = 200, threads = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--items" && i + 1 < argc) items = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a.rfind("--", 0) != 0) model = a;
  }
  if (!std::filesystem::exists(model) || !std::filesystem::exists(task_file)) {
    bench::emit({{"bench", "eval_scoring"}, {"skipped", "needs " + model + " and " + task_file}});
    return 0;
  }
  try {
    torch::set_num_threads(threads);
    auto file = io::read_model(model);
    auto net = io::make_model(file);
    auto task = eval::load_task(task_file, items);
    eval::score_task(net, *file.tokenizer, eval::load_task(task_file, 8), 8192, /*quiet=*/true);  // warm-up
    double t0 = bench::now_s();
    auto r = eval::score_task(net, *file.tokenizer, task, 8192, /*quiet=*/true);
    double s = bench::now_s() - t0;
    bench::emit({{"bench", "eval_scoring"}, {"model", file.name}, {"task", "hellaswag"}, {"items", r.items},
                 {"threads", threads}, {"tokens", r.tokens_scored}, {"seconds", s},
                 {"tokens_per_s", double(r.tokens_scored) / s}, {"items_per_s", double(r.items) / s},
                 {"acc_norm", r.acc_norm}});
  } catch (const std::exception& e) {
    bench::emit({{"bench", "eval_scoring"}, {"error", e.what()}});
    return 1;
  }
  return 0;
}
