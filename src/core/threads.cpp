// See threads.h.
#include "lineage/core/threads.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>

namespace lineage {

void settle_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("GOMP_SPINCOUNT", kGompSpinCount, 0) != 0) return;
  ::execv("/proc/self/exe", argv);
  // Only reached when exec failed (no /proc, say): libgomp keeps what it read at load; processes
  // started later inherit the setting.
}

namespace {
std::atomic<int> team_size{0};
}  // namespace

void set_parallel_threads(int threads) { team_size.store(std::max(threads, 0)); }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t team = team_size.load() > 0 ? team_size.load() : omp_get_max_threads();
  const int64_t threads = omp_in_parallel() ? 1 : std::min<int64_t>(team, (n + grain - 1) / grain);
  if (threads <= 1) return f(begin, end);
  std::exception_ptr error;
  std::mutex mutex;
  const int requested = static_cast<int>(threads);
#pragma omp parallel num_threads(requested)
  {
    const int64_t size = omp_get_num_threads(), chunk = (n + size - 1) / size;
    const int64_t b = begin + omp_get_thread_num() * chunk, e = std::min(end, b + chunk);
    if (b < e) try {
        f(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace lineage
