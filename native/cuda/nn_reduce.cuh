// Row reductions shared by the nn kernels (softmax, norms, cross-entropy). A row is handled by a
// group of TPR threads: one warp (TPR == 32; several rows per block along threadIdx.y) or a whole
// block (TPR == blockDim.x, a multiple of 32 up to 1024; one row per block). Partial results are
// combined in a fixed order, so every run gives the same bits.
#pragma once
#include <math_constants.h>

#include "common.cuh"

namespace sift::cuda::nn {

template <typename A>
__device__ __forceinline__ A dexp(A v) {
  return exp(v);
}
template <>
__device__ __forceinline__ float dexp<float>(float v) {
  return expf(v);
}
template <typename A>
__device__ __forceinline__ A dlog(A v) {
  return log(v);
}
template <>
__device__ __forceinline__ float dlog<float>(float v) {
  return logf(v);
}
template <typename A>
__device__ __forceinline__ A drsqrt(A v) {
  return rsqrt(v);
}
template <>
__device__ __forceinline__ float drsqrt<float>(float v) {
  return rsqrtf(v);
}
template <typename A>
__device__ __forceinline__ A neg_inf() {
  return A(-CUDART_INF);
}
template <>
__device__ __forceinline__ float neg_inf<float>() {
  return -CUDART_INF_F;
}

// Butterfly sums: every lane ends with the same bits (each step adds the same two values).
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the group. smem holds at least 32 values and is only touched for block groups.
template <int TPR, typename A>
__device__ __forceinline__ A group_sum(A v, A* smem) {
  v = warp_sum(v);
  if constexpr (TPR == 32) {
    return v;
  } else {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();  // the previous reduction may still be reading smem
    if (lane == 0) smem[w] = v;
    __syncthreads();
    A t = 0;
#pragma unroll
    for (int k = 0; k < TPR / 32; k++) t += smem[k];
    return t;
  }
}

// Running (max, sum of exp(x - max)) of a softmax row; combining is commutative.
template <typename A>
struct MaxSum {
  A m, s;
};

template <typename A>
__device__ __forceinline__ void ms_add(MaxSum<A>& a, A v) {
  if (v > a.m) {
    a.s = a.s * dexp(a.m - v) + A(1);
    a.m = v;
  } else if (a.m != neg_inf<A>()) {
    a.s += dexp(v - a.m);
  } else if (v != v) {
    a.s = v;  // NaN before any number: keep it in the sum, as the CPU kernels do
  }
}

template <typename A>
__device__ __forceinline__ MaxSum<A> ms_combine(MaxSum<A> a, MaxSum<A> b) {
  A m = a.m > b.m ? a.m : b.m;
  if (m == neg_inf<A>()) return {m, a.s + b.s};  // 0, or NaN when a NaN was seen
  return {m, a.s * dexp(a.m - m) + b.s * dexp(b.m - m)};
}

template <typename A>
__device__ __forceinline__ MaxSum<A> warp_ms(MaxSum<A> v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum<A> other{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = ms_combine(v, other);
  }
  return v;
}

template <int TPR, typename A>
__device__ __forceinline__ MaxSum<A> group_ms(MaxSum<A> v, A* sm, A* ss) {
  v = warp_ms(v);
  if constexpr (TPR == 32) {
    return v;
  } else {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
      sm[w] = v.m;
      ss[w] = v.s;
    }
    __syncthreads();
    MaxSum<A> t{sm[0], ss[0]};
#pragma unroll
    for (int k = 1; k < TPR / 32; k++) t = ms_combine(t, MaxSum<A>{sm[k], ss[k]});
    return t;
  }
}

// Launch shape for a row kernel over `rows` rows of length n: a warp per row for short rows
// (4 rows per block), else a block per row. Returns TPR (32, 256, 512 or 1024).
inline int pick_tpr(int64_t n) {
  if (n <= 1024) return 32;
  if (n <= 8192) return 256;
  if (n <= 32768) return 512;
  return 1024;
}
constexpr int kWarpRows = 4;

inline dim3 row_block(int tpr) { return tpr == 32 ? dim3(32, kWarpRows) : dim3(tpr, 1); }
inline unsigned row_grid(int64_t rows, int tpr) {
  int64_t per = tpr == 32 ? kWarpRows : 1;
  int64_t g = (rows + per - 1) / per;
  return unsigned(g < 1 ? 1 : (g > 65535LL * 32 ? 65535LL * 32 : g));
}

// The group's first row, its stride over rows, and the thread's lane in the row.
template <int TPR>
__device__ __forceinline__ int64_t group_row0() {
  return TPR == 32 ? int64_t(blockIdx.x) * blockDim.y + threadIdx.y : int64_t(blockIdx.x);
}
template <int TPR>
__device__ __forceinline__ int64_t group_row_stride() {
  return TPR == 32 ? int64_t(gridDim.x) * blockDim.y : int64_t(gridDim.x);
}

// Calls f(std::integral_constant<int, TPR>) for the TPR chosen at run time.
template <typename F>
void with_tpr(int tpr, F&& f) {
  switch (tpr) {
    case 32:
      f(std::integral_constant<int, 32>{});
      break;
    case 256:
      f(std::integral_constant<int, 256>{});
      break;
    case 512:
      f(std::integral_constant<int, 512>{});
      break;
    default:
      f(std::integral_constant<int, 1024>{});
      break;
  }
}

}  // namespace sift::cuda::nn
