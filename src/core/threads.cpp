// See threads.h.
#include "lineage/core/threads.h"

#include <unistd.h>

#include <cstdlib>

namespace lineage {

void settle_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("OMP_WAIT_POLICY", "PASSIVE", 0) != 0) return;
  ::execv("/proc/self/exe", argv);
  // Only reached when exec failed (no /proc, say): libgomp keeps what it read at load; processes
  // started later inherit the setting.
}

}  // namespace lineage
