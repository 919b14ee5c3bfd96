// glibc malloc settings for tensor work. By default glibc hands blocks above 128 KiB (growing to
// at most 32 MiB) straight back to the kernel when freed, so every libtorch temporary of that size
// is a fresh mmap whose pages fault in zeroed: measured here, half of a scoring or training run's
// time went to the kernel. Keeping freed memory in the heap for reuse removes that (6x on
// `lineage eval` over BoolQ with stories260K; ratios in the README). Costs: the process keeps its
// high-water mark of heap memory until it exits.
#pragma once

namespace lineage {

// Call once at the start of main(), before any tensor is allocated. LINEAGE_MALLOC=default in the
// environment leaves glibc's defaults (to measure the difference).
void tune_allocator();

// Hands the heap's free pages back to the kernel (glibc malloc_trim over every arena). For the rare
// moment a large buffer was dropped on purpose — a request body refused for its size — so that
// an attack of such bodies over many threads does not leave each thread's arena holding them.
void return_free_memory();

}  // namespace lineage
