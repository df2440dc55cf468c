// A small fork-join thread pool for CPU kernels. parallel_for splits [0, n) into chunks of at
// least `grain` items across the pool's workers and the calling thread. Nested calls run inline.
// SIFT_FT_NUM_THREADS sets the number of threads (default: hardware concurrency).
#pragma once
#include <cstdint>
#include <functional>

namespace sift::cpu {

int num_threads();
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace sift::cpu
