// CUDA dropout: grid-stride over contiguous elements (16-byte vectors where aligned); the keep
// mask is the shared dropout_keep(seed, index) of cpu/dropout.h, so it matches the CPU bit for bit.
#include "../cpu/dropout.h"
#include "common.cuh"
#include "dropout.h"

namespace sift::cuda {
namespace {

template <typename T, typename A>
__device__ __forceinline__ T dropout_elem(T v, uint64_t seed, uint64_t i, uint32_t thr, A rz) {
  // Select rather than multiply, so a dropped NaN/inf becomes 0 as on the CPU.
  return dropout_keep(seed, i, thr) ? from_acc<T, A>(to_acc<A>(v) * rz) : from_acc<T, A>(A(0));
}

// Units of V elements (one 16-byte vector when V > 1) at element i * V, then the scalar tail
// [nvec * V, n). Element e is kept by dropout_keep(seed, e) whatever the unit: the same mask.
template <int V, typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t nvec, int64_t n, uint64_t seed,
                               uint32_t thr, dacc_t<T> rz) {
  using A = dacc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nvec; i += int64_t(gridDim.x) * blockDim.x) {
    const Vec<T, V> a = vload<V>(x + i * V);
    Vec<T, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = dropout_elem<T, A>(a.v[j], seed, uint64_t(i * V + j), thr, rz);
    vstore<V>(y + i * V, r);
  }
  if constexpr (V > 1) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t e = nvec * V + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += stride)
      y[e] = dropout_elem<T, A>(x[e], seed, uint64_t(e), thr, rz);
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
    constexpr int V = vec_width(sizeof(T));
    const A rz = A(1.0 / (1.0 - p));
    // x and y are contiguous (ops::dropout); the vector path needs both 16-byte aligned.
    if (V > 1 && n >= V && vec_aligned(x.raw(), 16) && vec_aligned(y.raw(), 16))
      dropout_kernel<V, T><<<grid_for(n / V, 256), 256, 0, st>>>(x.data<T>(), y.data<T>(), n / V, n, seed, thr, rz);
    else
      dropout_kernel<1, T><<<grid_for(n, 256), 256, 0, st>>>(x.data<T>(), y.data<T>(), n, n, seed, thr, rz);
  });
  check_last_error("dropout");
}

}  // namespace sift::cuda
