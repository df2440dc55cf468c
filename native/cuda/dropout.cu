// CUDA dropout: grid-stride over contiguous elements; the keep mask is the shared
// dropout_keep(seed, index) of cpu/dropout.h, so it matches the CPU bit for bit.
#include "../cpu/dropout.h"
#include "common.cuh"
#include "dropout.h"

namespace sift::cuda {
namespace {

template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, uint64_t seed, uint32_t thr,
                               dacc_t<T> rz) {
  using A = dacc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    // Select rather than multiply, so a dropped NaN/inf becomes 0 as on the CPU.
    y[i] = dropout_keep(seed, uint64_t(i), thr) ? from_acc<T, A>(to_acc<A>(x[i]) * rz) : from_acc<T, A>(A(0));
  }
}

}  // namespace

void dropout(const Tensor& x, const Tensor& y, double p, uint64_t seed) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t st = current_stream(dev_of(x));
  const uint32_t thr = dropout_threshold(p);
  dispatch_cuda_float(x.dtype, "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = dacc_t<T>;
    dropout_kernel<T><<<grid_for(n, 256), 256, 0, st>>>(x.data<T>(), y.data<T>(), n, seed, thr, A(1.0 / (1.0 - p)));
  });
  check_last_error("dropout");
}

}  // namespace sift::cuda
