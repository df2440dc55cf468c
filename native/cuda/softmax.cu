// Softmax / log-softmax on CUDA. Along the last dim a warp (short rows) or a block (long rows)
// owns a row: one pass computes the running max and sum of exponentials (online softmax), a
// second writes the output. Along other dims each thread owns one column of [outer, n, inner],
// so neighbouring threads read neighbouring addresses. Math in f32 (f64 for f64).
#include "common.cuh"
#include "nn_reduce.cuh"
#include "softmax.h"

namespace sift::cuda {
namespace {
using namespace nn;

template <typename T, int TPR>
__global__ void softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n, bool log) {
  using A = dacc_t<T>;
  __shared__ A sm[32], ss[32];
  const int lane = threadIdx.x;
  for (int64_t r = group_row0<TPR>(); r < rows; r += group_row_stride<TPR>()) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    MaxSum<A> ms{neg_inf<A>(), A(0)};
    for (int64_t j = lane; j < n; j += TPR) ms_add(ms, to_acc<A>(xr[j]));
    ms = group_ms<TPR>(ms, sm, ss);
    // A row without a finite max (all -inf) gives NaN like the CPU kernel and PyTorch.
    if (log) {
      const A lse = ms.m + dlog(ms.s);
      for (int64_t j = lane; j < n; j += TPR) yr[j] = from_acc<T>(to_acc<A>(xr[j]) - lse);
    } else {
      const A inv = A(1) / ms.s;
      for (int64_t j = lane; j < n; j += TPR) yr[j] = from_acc<T>(dexp(to_acc<A>(xr[j]) - ms.m) * inv);
    }
  }
}

template <typename T>
__global__ void softmax_cols_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n, int64_t inner,
                                    bool log) {
  using A = dacc_t<T>;
  const int64_t cols = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (c / inner) * n * inner + (c % inner);
    MaxSum<A> ms{neg_inf<A>(), A(0)};
    for (int64_t k = 0; k < n; k++) ms_add(ms, to_acc<A>(x[base + k * inner]));
    if (log) {
      const A lse = ms.m + dlog(ms.s);
      for (int64_t k = 0; k < n; k++) y[base + k * inner] = from_acc<T>(to_acc<A>(x[base + k * inner]) - lse);
    } else {
      const A inv = A(1) / ms.s;
      for (int64_t k = 0; k < n; k++)
        y[base + k * inner] = from_acc<T>(dexp(to_acc<A>(x[base + k * inner]) - ms.m) * inv);
    }
  }
}

// softmax: gx = y * (gy - sum(gy * y)); log-softmax: gx = gy - exp(y) * sum(gy).
template <typename T, int TPR>
__global__ void backward_rows_kernel(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                     int64_t rows, int64_t n, bool log) {
  using A = dacc_t<T>;
  __shared__ A sm[32];
  const int lane = threadIdx.x;
  for (int64_t r = group_row0<TPR>(); r < rows; r += group_row_stride<TPR>()) {
    const T* yr = y + r * n;
    const T* gr = gy + r * n;
    T* out = gx + r * n;
    A dot = 0;
    for (int64_t j = lane; j < n; j += TPR) dot += log ? to_acc<A>(gr[j]) : to_acc<A>(gr[j]) * to_acc<A>(yr[j]);
    dot = group_sum<TPR>(dot, sm);
    for (int64_t j = lane; j < n; j += TPR) {
      const A g = to_acc<A>(gr[j]), yv = to_acc<A>(yr[j]);
      out[j] = from_acc<T>(log ? g - dexp(yv) * dot : yv * (g - dot));
    }
  }
}

template <typename T>
__global__ void backward_cols_kernel(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                     int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = dacc_t<T>;
  const int64_t cols = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (c / inner) * n * inner + (c % inner);
    A dot = 0;
    for (int64_t k = 0; k < n; k++) {
      const int64_t i = base + k * inner;
      dot += log ? to_acc<A>(gy[i]) : to_acc<A>(gy[i]) * to_acc<A>(y[i]);
    }
    for (int64_t k = 0; k < n; k++) {
      const int64_t i = base + k * inner;
      const A g = to_acc<A>(gy[i]), yv = to_acc<A>(y[i]);
      gx[i] = from_acc<T>(log ? g - dexp(yv) * dot : yv * (g - dot));
    }
  }
}

}  // namespace

void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  cudaStream_t st = current_stream(dev_of(x));
  dispatch_cuda_float(x.dtype, "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (inner == 1) {
      const int tpr = pick_tpr(n);
      with_tpr(tpr, [&](auto k) {
        softmax_rows_kernel<T, decltype(k)::value>
            <<<row_grid(outer, tpr), row_block(tpr), 0, st>>>(x.data<T>(), y.data<T>(), outer, n, log);
      });
    } else {
      softmax_cols_kernel<T>
          <<<grid_for(outer * inner, 256), 256, 0, st>>>(x.data<T>(), y.data<T>(), outer, n, inner, log);
    }
  });
  check_last_error("softmax");
}

void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, int64_t outer, int64_t n, int64_t inner,
                      bool log) {
  if (outer * n * inner == 0) return;
  cudaStream_t st = current_stream(dev_of(y));
  dispatch_cuda_float(y.dtype, "softmaxBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (inner == 1) {
      const int tpr = pick_tpr(n);
      with_tpr(tpr, [&](auto k) {
        backward_rows_kernel<T, decltype(k)::value>
            <<<row_grid(outer, tpr), row_block(tpr), 0, st>>>(y.data<T>(), gy.data<T>(), gx.data<T>(), outer, n, log);
      });
    } else {
      backward_cols_kernel<T>
          <<<grid_for(outer * inner, 256), 256, 0, st>>>(y.data<T>(), gy.data<T>(), gx.data<T>(), outer, n, inner, log);
    }
  });
  check_last_error("softmaxBackward");
}

}  // namespace sift::cuda
