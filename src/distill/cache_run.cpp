// lineage cache: tokenizes and splits the data exactly as `lineage distill` will, then has the
// teacher fill a teacher cache (teacher/cache.h) for both splits.
#include <fmt/format.h>

#include "lineage/core/error.h"
#include "lineage/distill/data_parallel.h"
#include "lineage/distill/jobs.h"
#include "lineage/distill/run_common.h"
#include "lineage/teacher/cache.h"

namespace lineage::distill {

void run_cache(const Recipe& r, int64_t rows_per_shard, const std::string& api_key) {
  if (r.out.empty()) fail("no cache directory given (--out DIR)");
  if (r.top_k < 1) fail("--top-k must be at least 1, got {}", r.top_k);
  if (r.tail_samples < 0) fail("--tail-samples must be >= 0, got {}", r.tail_samples);
  if (rows_per_shard < 1) fail("--rows-per-shard must be at least 1, got {}", rows_per_shard);
  auto teacher = open_recipe_teacher(r, r.out, api_key);  // an HTTP teacher journals its answers beside the shards
  if (!teacher->has_logits() && r.tail_samples > 0)
    fail("teacher '{}' is reached over HTTP and cannot draw from its tail: use --tail-samples 0", r.teacher);
  if (r.top_k > teacher->info().vocab_size)
    fail("--top-k {} is larger than the teacher's vocabulary ({} tokens)", r.top_k, teacher->info().vocab_size);
  Dataset data = load_dataset(r.data, teacher->tokenizer(), r.data_options);
  teacher::CacheBuildOptions o;
  o.k = r.top_k;
  o.tail_samples = r.tail_samples;
  o.seed = static_cast<uint64_t>(r.train.seed);
  o.seq_len = r.data_options.seq_len;
  o.batch_size = teacher->has_logits() ? r.train.batch_size : std::max(r.train.batch_size, r.concurrency);
  o.rows_per_shard = rows_per_shard;
  std::vector<teacher::CacheSplitInput> splits = {{"train", data.train.tokens.data(), data.train.rows(), data.train.digest()}};
  if (data.valid.rows() > 0) splits.push_back({"valid", data.valid.tokens.data(), data.valid.rows(), data.valid.digest()});
  int64_t positions = (data.train.rows() + data.valid.rows()) * r.data_options.seq_len;
  int64_t rec = teacher::cache_record_bytes(r.top_k, teacher->info().vocab_size, r.tail_samples);
  if (!data_parallel() || data_parallel()->writes())
    std::fprintf(stderr, "cache: top-%lld + %lld tail draws of %s over %lld positions, %lld bytes each (%.1f MB) -> %s\n",
               static_cast<long long>(r.top_k), static_cast<long long>(r.tail_samples), teacher->info().source.c_str(),
               static_cast<long long>(positions),
               static_cast<long long>(rec), positions * rec / 1e6, r.out.c_str());
  // Data-parallel: each rank computes every world-th shard into the (shared) cache directory; then
  // rank 0 checks every shard and writes cache.json: the same cache as one process writes.
  DataParallel* dp = data_parallel();
  if (dp) {
    o.part = dp->rank();
    o.parts = dp->world_size();
    o.quiet = !dp->writes();
    teacher::build_cache(*teacher, splits, o, r.out);
    dp->barrier();
    if (!dp->writes()) return;
    o.part = 0;
    o.parts = 1;
    o.quiet = true;
  }
  teacher::build_cache(*teacher, splits, o, r.out);
}

}  // namespace lineage::distill
