// See allocator.h.
#include "lineage/core/allocator.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lineage {

void tune_allocator() {
  if (const char* e = std::getenv("LINEAGE_MALLOC"); e && std::strcmp(e, "default") == 0) return;  // to compare
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 1 << 30);  // blocks up to 1 GiB come from the heap...
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // ...and stay there when freed, for the next tensor
#endif
}

void return_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace lineage
