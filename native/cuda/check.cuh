// CUDA error checking that names the file and line, and becomes SiftError E_CUDA / E_OOM.
#pragma once
#include <cuda_runtime.h>

#include "../core/error.h"

#define CUDA_CHECK(expr)                                                                        \
  do {                                                                                          \
    cudaError_t err__ = (expr);                                                                 \
    if (err__ != cudaSuccess) {                                                                 \
      cudaGetLastError();                                                                       \
      ::sift::fail(err__ == cudaErrorMemoryAllocation ? "E_OOM" : "E_CUDA", #expr,              \
                   " failed: ", cudaGetErrorString(err__), " (", __FILE__, ":", __LINE__, ")"); \
    }                                                                                           \
  } while (0)

namespace sift::cuda {
// The current device's compute stream, as a cudaStream_t.
cudaStream_t current_stream(int device);
inline unsigned grid_for(long long n, int block, long long max_blocks = 65535LL * 16) {
  long long g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > max_blocks) g = max_blocks;
  return unsigned(g);
}
}  // namespace sift::cuda
