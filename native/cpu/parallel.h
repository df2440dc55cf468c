// A small fork-join thread pool for CPU kernels. parallel_for splits [0, n) into chunks of at
// least `grain` items across the pool's workers and the calling thread. Nested calls run inline.
// SIFT_FT_NUM_THREADS sets the number of threads (default: hardware concurrency); set_num_threads
// changes it at run time (the calling thread counts as one: 1 runs kernels on the caller alone).
#pragma once
#include <cstdint>
#include <functional>

namespace sift::cpu {

int num_threads();
// The count SIFT_FT_NUM_THREADS or the hardware gives (what set_num_threads(0) restores).
int default_num_threads();
// The count SIFT_FT_NUM_THREADS sets, or 0 where it sets none.
int env_num_threads();
int hardware_threads();
// Sets the number of threads of later parallel regions (0: the default); waits for a region in
// progress. Call it from the thread that runs kernels (the CPU executor) to keep it in op order.
void set_num_threads(int n);
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace sift::cpu
