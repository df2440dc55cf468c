// Cross-entropy on CUDA. Forward: a warp or block per row computes log-sum-exp online (plus the
// row sum for label smoothing) and the row's loss; a single block then reduces the row losses
// in a fixed order (deterministic) for 'mean' / 'sum'. Backward is elementwise over [N, C]
// given lse and the per-row scale. Both move rows as 16-byte vectors where aligned.
// Out-of-range targets set the device error flag.
#include "common.cuh"
#include "loss.h"
#include "nn_reduce.cuh"

namespace sift::cuda {
namespace {
using namespace nn;

// V > 1 (x 16-byte aligned): each lane reads its share of the row's columns up to the first
// 16-byte boundary, then 16-byte vectors of V columns, then the tail, adding them to its running
// (max, sum) in that order; the lanes are combined as before. Deterministic: the order depends
// on the row's offset from a 16-byte boundary, fixed by r * c.
template <int V, typename T, typename I, int TPR>
__global__ void __launch_bounds__(TPR == 32 ? 32 * kWarpRows : TPR)
    ce_rows_kernel(const T* __restrict__ x, const I* __restrict__ tg, dacc_t<T>* __restrict__ row_loss,
                   dacc_t<T>* __restrict__ lse, int64_t n, int64_t c, int64_t ignore, double smoothing, int* flag) {
  using A = dacc_t<T>;
  __shared__ A sm[32], ss[32];
  const int lane = threadIdx.x;
  for (int64_t r = group_row0<TPR>(); r < n; r += group_row_stride<TPR>()) {
    const T* xr = x + r * c;
    MaxSum<A> ms{neg_inf<A>(), A(0)};
    A sx = 0;
    int64_t head = 0, nv = 0;
    if constexpr (V > 1) {
      head = int64_t((16 - (reinterpret_cast<uintptr_t>(xr) & 15)) & 15) / int64_t(sizeof(T));
      if (head > c) head = c;
      nv = (c - head) / V;
      for (int64_t j = lane; j < head; j += TPR) {
        const A v = to_acc<A>(xr[j]);
        ms_add(ms, v);
        sx += v;
      }
      for (int64_t k = lane; k < nv; k += TPR) {
        const Vec<T, V> xv = vload<V>(xr + head + k * V);
#pragma unroll
        for (int e = 0; e < V; e++) {
          const A v = to_acc<A>(xv.v[e]);
          ms_add(ms, v);
          sx += v;
        }
      }
    }
    for (int64_t j = head + nv * V + lane; j < c; j += TPR) {
      const A v = to_acc<A>(xr[j]);
      ms_add(ms, v);
      sx += v;
    }
    ms = group_ms<TPR>(ms, sm, ss);
    if (smoothing != 0.0) sx = group_sum<TPR>(sx, sm);
    if (lane == 0) {
      const A l = ms.m + dlog(ms.s);
      lse[r] = l;
      const int64_t t = int64_t(tg[r]);
      if (t == ignore) {
        row_loss[r] = A(0);
      } else if (t < 0 || t >= c) {
        atomicOr(flag, 1);
        row_loss[r] = A(0);
      } else {
        const A nll = l - to_acc<A>(xr[t]);
        const A s = A(smoothing);
        row_loss[r] = smoothing == 0.0 ? nll : (A(1) - s) * nll + s * (l - sx / A(c));
      }
    }
  }
}

// One block of 1024 threads: out[0] = sum(row_loss) (divided by the number of rows whose target
// is not ignore, for the mean; 0 when there are none).
template <typename A, typename I>
__global__ void ce_reduce_kernel(const A* __restrict__ row_loss, const I* __restrict__ tg, A* __restrict__ out,
                                 int64_t n, int64_t ignore, bool mean) {
  __shared__ A sm[32];
  __shared__ double sc[32];
  A s = 0;
  double k = 0;  // counts as double: exact up to 2^53 and reducible with the same code
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    s += row_loss[i];
    k += int64_t(tg[i]) != ignore ? 1.0 : 0.0;
  }
  s = group_sum<1024>(s, sm);
  k = group_sum<1024>(k, sc);
  if (threadIdx.x == 0) out[0] = mean ? (k > 0 ? s / A(k) : A(0)) : s;
}

// scale[0] = gloss / count (mean) or gloss (sum).
template <typename A, typename I>
__global__ void ce_scale_kernel(const I* __restrict__ tg, const A* __restrict__ gloss, A* __restrict__ scale, int64_t n,
                                int64_t ignore, bool mean) {
  __shared__ double sc[32];
  double k = 0;
  if (mean)
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) k += int64_t(tg[i]) != ignore ? 1.0 : 0.0;
  k = group_sum<1024>(k, sc);
  if (threadIdx.x == 0) scale[0] = mean ? (k > 0 ? gloss[0] / A(k) : A(0)) : gloss[0];
}

// gx[r, j] = g_r * (softmax_j - s / C - (1 - s) [j == t_r]); 0 for ignored or invalid rows.
// g_r = per_row ? gl[r] : gl[0]. Blocks stride over rows and threads over a row's columns: the
// row's target, scale and lse are read once per row and no 64-bit division per element is needed.
// V > 1 (x and gx 16-byte aligned): a row's columns up to its first 16-byte boundary one by one,
// then 16-byte vectors of V columns, then the tail; every element gets the same formula.
template <int V, typename T, typename I>
__global__ void ce_backward_kernel(const T* __restrict__ x, const I* __restrict__ tg, const dacc_t<T>* __restrict__ lse,
                                   const dacc_t<T>* __restrict__ gl, bool per_row, T* __restrict__ gx, int64_t n,
                                   int64_t c, int64_t ignore, double smoothing, int* flag) {
  using A = dacc_t<T>;
  const A s = A(smoothing), off = A(smoothing) / A(c);
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const int64_t t = int64_t(tg[r]);
    const T* xr = x + r * c;
    T* gr = gx + r * c;
    if (t == ignore || t < 0 || t >= c) {
      if (t != ignore && threadIdx.x == 0) atomicOr(flag, 1);
      for (int64_t j = threadIdx.x; j < c; j += blockDim.x) gr[j] = from_acc<T>(A(0));
      continue;
    }
    const A g = per_row ? gl[r] : gl[0];
    const A l = lse[r];
    auto elem = [&](int64_t j, T v) {
      const A p = dexp(to_acc<A>(v) - l);
      return from_acc<T>(g * (p - off - (j == t ? A(1) - s : A(0))));
    };
    int64_t head = 0, nv = 0;
    if constexpr (V > 1) {
      // x and gx rows share their offset from a 16-byte boundary (both bases are aligned).
      head = int64_t((16 - (reinterpret_cast<uintptr_t>(xr) & 15)) & 15) / int64_t(sizeof(T));
      if (head > c) head = c;
      nv = (c - head) / V;
      for (int64_t j = threadIdx.x; j < head; j += blockDim.x) gr[j] = elem(j, xr[j]);
      for (int64_t k = threadIdx.x; k < nv; k += blockDim.x) {
        const int64_t j0 = head + k * V;
        const Vec<T, V> xv = vload<V>(xr + j0);
        Vec<T, V> o;
#pragma unroll
        for (int e = 0; e < V; e++) o.v[e] = elem(j0 + e, xv.v[e]);
        vstore<V>(gr + j0, o);
      }
    }
    for (int64_t j = head + nv * V + threadIdx.x; j < c; j += blockDim.x) gr[j] = elem(j, xr[j]);
  }
}

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& loss, const Tensor& lse, int64_t n,
                   int64_t c, int64_t ignore_index, int reduction, double smoothing) {
  const int dev = dev_of(logits);
  cudaStream_t st = current_stream(dev);
  dispatch_cuda_float(logits.dtype, "crossEntropy", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = dacc_t<T>;
    dispatch_cuda_int(targets.dtype, "crossEntropy", [&](auto it) {
      using I = typename decltype(it)::type;
      const bool none = reduction == 0;
      if (n == 0) {
        if (!none)
          ce_reduce_kernel<A, I>
              <<<1, 1024, 0, st>>>(nullptr, targets.data<I>(), loss.data<A>(), 0, ignore_index, reduction == 1);
        return;
      }
      Tensor rows = none ? loss : empty({n}, loss.dtype, loss.device());
      const int tpr = pick_tpr(c);
      constexpr int V = vec_width(sizeof(T));
      const bool vec = V > 1 && vec_aligned(logits.raw(), 16);
      with_tpr(tpr, [&](auto k) {
        constexpr int kTpr = decltype(k)::value;
        if (vec)
          ce_rows_kernel<V, T, I, kTpr><<<row_grid(n, tpr), row_block(tpr), 0, st>>>(
              logits.data<T>(), targets.data<I>(), rows.data<A>(), lse.data<A>(), n, c, ignore_index, smoothing,
              error_flag(dev));
        else
          ce_rows_kernel<1, T, I, kTpr><<<row_grid(n, tpr), row_block(tpr), 0, st>>>(
              logits.data<T>(), targets.data<I>(), rows.data<A>(), lse.data<A>(), n, c, ignore_index, smoothing,
              error_flag(dev));
      });
      if (!none)
        ce_reduce_kernel<A, I>
            <<<1, 1024, 0, st>>>(rows.data<A>(), targets.data<I>(), loss.data<A>(), n, ignore_index, reduction == 1);
    });
  });
  check_last_error("crossEntropy");
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& gloss,
                            const Tensor& glogits, int64_t n, int64_t c, int64_t ignore_index, int reduction,
                            double smoothing) {
  if (n == 0) return;
  const int dev = dev_of(logits);
  cudaStream_t st = current_stream(dev);
  dispatch_cuda_float(logits.dtype, "crossEntropyBackward", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = dacc_t<T>;
    dispatch_cuda_int(targets.dtype, "crossEntropyBackward", [&](auto it) {
      using I = typename decltype(it)::type;
      const bool per_row = reduction == 0;
      Tensor scale = per_row ? gloss : empty({1}, gloss.dtype, gloss.device());
      if (!per_row)
        ce_scale_kernel<A, I>
            <<<1, 1024, 0, st>>>(targets.data<I>(), gloss.data<A>(), scale.data<A>(), n, ignore_index, reduction == 1);
      const unsigned blocks = unsigned(n < 65535LL * 16 ? n : 65535LL * 16);
      constexpr int V = vec_width(sizeof(T));
      if (V > 1 && vec_aligned(logits.raw(), 16) && vec_aligned(glogits.raw(), 16))
        ce_backward_kernel<V, T, I><<<blocks, 256, 0, st>>>(logits.data<T>(), targets.data<I>(), lse.data<A>(),
                                                            scale.data<A>(), per_row, glogits.data<T>(), n, c,
                                                            ignore_index, smoothing, error_flag(dev));
      else
        ce_backward_kernel<1, T, I><<<blocks, 256, 0, st>>>(logits.data<T>(), targets.data<I>(), lse.data<A>(),
                                                            scale.data<A>(), per_row, glogits.data<T>(), n, c,
                                                            ignore_index, smoothing, error_flag(dev));
    });
  });
  check_last_error("crossEntropyBackward");
}

}  // namespace sift::cuda
