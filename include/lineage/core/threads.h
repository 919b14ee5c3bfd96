// How the process's CPU thread pools wait. libtorch's intra-op threads (libgomp) and OpenBLAS's own
// pthreads (Debian's libopenblas0-pthread) take turns on the same cores. Under libgomp's default
// wait policy its idle threads spin for 300,000 rounds after every parallel region, and that
// spinning starves the OpenBLAS threads of the GEMM that comes next: on the 2-core CI machine the
// distillation step bench at 2 threads ran at ~1,000 tokens/s. Not spinning at all
// (OMP_WAIT_POLICY=PASSIVE) costs ~40 us to wake a thread for each parallel region, which the
// decoder's many small regions cannot afford. 10,000 rounds sits between: measured side by side,
// step 2,119-2,137 tokens/s against 1,869-1,891 passive (PyTorch's own step alike: 1,972 against
// 1,838), and the 5.2M teacher's 2-thread prefill 21,118 against 13,003 (README, "Speed and memory
// at real scale").
#pragma once
#include <cstdint>
#include <functional>

namespace lineage {

// Call first in main(), before any thread starts. libgomp reads its environment when it is loaded,
// before main() runs, so when the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT this sets
// GOMP_SPINCOUNT=10000 and re-executes the program (same pid, same arguments) once. A user's own
// setting is left as it is; if the re-execution fails the program goes on as it was.
inline constexpr const char* kGompSpinCount = "10000";
void settle_openmp_wait_policy(char** argv);

// The team size parallel_for uses from now on, in every thread (0: libgomp's own count for the
// calling thread). model::set_cpu_threads sets it with libtorch's and OpenBLAS's counts: libgomp
// keeps its count per thread, so a server's worker threads would otherwise get the default.
void set_parallel_threads(int threads);

// Calls f(b, e) over consecutive ranges covering [begin, end), each at least `grain` long (but the
// last), on libgomp's team: the same threads, and the same count (set_parallel_threads), as
// libtorch's at::parallel_for, for code that keeps torch's headers out (at::parallel_for's OpenMP
// region is inline in those headers and runs serially in a file compiled without -fopenmp). Inside
// another parallel region it runs on the calling thread. The first exception thrown by f is
// rethrown here once every range is done.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f);

}  // namespace lineage
