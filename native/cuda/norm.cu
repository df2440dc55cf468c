// LayerNorm and RMSNorm on CUDA, one kernel family for both (RMSNorm is LayerNorm without
// centring and without bias). Rows: a warp (D <= 1024) or a block per row, statistics in f32
// (f64 for f64). Weight/bias gradients: each block sums a fixed chunk of rows for 32 column
// units into a partial row, then a second kernel adds the partials in chunk order: deterministic,
// no float atomics. The backward moves 16-byte vectors where the layout allows.
#include "common.cuh"
#include "nn_reduce.cuh"
#include "norm.h"

namespace sift::cuda {
namespace {
using namespace nn;

template <typename T, int TPR>
__global__ void norm_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                T* __restrict__ y, dacc_t<T>* __restrict__ mean, dacc_t<T>* __restrict__ rstd,
                                int64_t rows, int64_t d, double eps, bool centred) {
  using A = dacc_t<T>;
  __shared__ A sm[32];
  const int lane = threadIdx.x;
  for (int64_t r = group_row0<TPR>(); r < rows; r += group_row_stride<TPR>()) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    A mu = 0;
    if (centred) {
      A s = 0;
      for (int64_t j = lane; j < d; j += TPR) s += to_acc<A>(xr[j]);
      mu = group_sum<TPR>(s, sm) / A(d);
    }
    // Centred second pass (the row is in cache) instead of E[x^2] - E[x]^2, which cancels.
    A v = 0;
    for (int64_t j = lane; j < d; j += TPR) {
      const A c = to_acc<A>(xr[j]) - mu;
      v += c * c;
    }
    const A rs = drsqrt(group_sum<TPR>(v, sm) / A(d) + A(eps));
    if (lane == 0) {
      if (mean) mean[r] = mu;
      rstd[r] = rs;
    }
    for (int64_t j = lane; j < d; j += TPR) {
      A h = (to_acc<A>(xr[j]) - mu) * rs;
      if (w) h *= to_acc<A>(w[j]);
      if (b) h += to_acc<A>(b[j]);
      yr[j] = from_acc<T>(h);
    }
  }
}

// gx = rstd * (g - [centred] mean(g) - xhat * mean(g * xhat)), g = gy * w, xhat = (x - mu) * rstd.
// V > 1 (d % V == 0, every pointer 16-byte aligned): a lane reads units of V columns as 16-byte
// vectors (unit k = columns k * V .. k * V + V - 1); V == 1 is element by element. Same maths per
// element; the row sums add a lane's elements in unit order.
template <typename T, int TPR, int V>
__global__ void __launch_bounds__(TPR == 32 ? 32 * kWarpRows : TPR)
    norm_bwd_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ w,
                    const dacc_t<T>* __restrict__ mean, const dacc_t<T>* __restrict__ rstd, T* __restrict__ gx,
                    int64_t rows, int64_t d) {
  using A = dacc_t<T>;
  __shared__ A sm[32];
  const int lane = threadIdx.x;
  const int64_t nv = d / V;
  for (int64_t r = group_row0<TPR>(); r < rows; r += group_row_stride<TPR>()) {
    const T* gr = gy + r * d;
    const T* xr = x + r * d;
    T* out = gx + r * d;
    const A mu = mean ? mean[r] : A(0), rs = rstd[r];
    A sg = 0, sgx = 0;
    for (int64_t k = lane; k < nv; k += TPR) {
      const Vec<T, V> gv = vload<V>(gr + k * V), xv = vload<V>(xr + k * V);
      const Vec<T, V> wv = w ? vload<V>(w + k * V) : Vec<T, V>{};
#pragma unroll
      for (int e = 0; e < V; e++) {
        A g = to_acc<A>(gv.v[e]);
        if (w) g *= to_acc<A>(wv.v[e]);
        sg += g;
        sgx += g * (to_acc<A>(xv.v[e]) - mu) * rs;
      }
    }
    sgx = group_sum<TPR>(sgx, sm) / A(d);
    sg = mean ? group_sum<TPR>(sg, sm) / A(d) : A(0);
    for (int64_t k = lane; k < nv; k += TPR) {
      const Vec<T, V> gv = vload<V>(gr + k * V), xv = vload<V>(xr + k * V);
      const Vec<T, V> wv = w ? vload<V>(w + k * V) : Vec<T, V>{};
      Vec<T, V> o;
#pragma unroll
      for (int e = 0; e < V; e++) {
        A g = to_acc<A>(gv.v[e]);
        if (w) g *= to_acc<A>(wv.v[e]);
        o.v[e] = from_acc<T>(rs * (g - sg - (to_acc<A>(xv.v[e]) - mu) * rs * sgx));
      }
      vstore<V>(out + k * V, o);
    }
  }
}

constexpr int kColTile = 32, kRowThreads = 8;

// Partial sums over rows [chunk * rpc, (chunk + 1) * rpc) of gy * xhat (pw) and gy (pb) for the
// 32 column units of blockIdx.x (a unit: V adjacent columns, one 16-byte vector when V > 1);
// blockIdx.y is the chunk. Block (32, 8): a warp reads 32 adjacent units. Each column's sum runs
// over the same rows in the same order whatever V is, so V changes no bits.
template <typename T, int V>
__global__ void param_partial_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                     const dacc_t<T>* __restrict__ mean, const dacc_t<T>* __restrict__ rstd,
                                     dacc_t<T>* __restrict__ pw, dacc_t<T>* __restrict__ pb, int64_t rows, int64_t d,
                                     int64_t rpc) {
  using A = dacc_t<T>;
  __shared__ A sw[kRowThreads][kColTile * V], sb[kRowThreads][kColTile * V];
  const int64_t j0 = (int64_t(blockIdx.x) * kColTile + threadIdx.x) * V;  // V > 1 only when d % V == 0
  const int64_t r0 = int64_t(blockIdx.y) * rpc;
  const int64_t r1 = min(rows, r0 + rpc);
  A aw[V], ab[V];
#pragma unroll
  for (int e = 0; e < V; e++) aw[e] = ab[e] = A(0);
  if (j0 < d) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) {
      const Vec<T, V> gv = vload<V>(gy + r * d + j0), xv = vload<V>(x + r * d + j0);
      const A mu = mean ? mean[r] : A(0);
      const A rs = rstd[r];
#pragma unroll
      for (int e = 0; e < V; e++) {
        const A g = to_acc<A>(gv.v[e]);
        aw[e] += g * (to_acc<A>(xv.v[e]) - mu) * rs;
        ab[e] += g;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < V; e++) {
    sw[threadIdx.y][threadIdx.x * V + e] = aw[e];
    sb[threadIdx.y][threadIdx.x * V + e] = ab[e];
  }
  __syncthreads();
  if (threadIdx.y == 0 && j0 < d) {
#pragma unroll
    for (int e = 0; e < V; e++) {
      A w_ = aw[e], b_ = ab[e];
      for (int k = 1; k < kRowThreads; k++) {
        w_ += sw[k][threadIdx.x * V + e];
        b_ += sb[k][threadIdx.x * V + e];
      }
      if (pw) pw[int64_t(blockIdx.y) * d + j0 + e] = w_;
      if (pb) pb[int64_t(blockIdx.y) * d + j0 + e] = b_;
    }
  }
}

template <typename T>
__global__ void param_final_kernel(const dacc_t<T>* __restrict__ partial, T* __restrict__ out, int64_t chunks,
                                   int64_t d) {
  using A = dacc_t<T>;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < d; j += int64_t(gridDim.x) * blockDim.x) {
    A s = 0;
    for (int64_t k = 0; k < chunks; k++) s += partial[k * d + j];
    out[j] = from_acc<T>(s);
  }
}

template <typename T>
const T* opt_ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <typename T>
T* opt_mut(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

void forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean, const Tensor& rstd,
             int64_t rows, int64_t d, double eps, const char* op) {
  if (rows == 0) return;
  cudaStream_t st = current_stream(dev_of(x));
  const int tpr = pick_tpr(d);
  dispatch_cuda_float(x.dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = dacc_t<T>;
    with_tpr(tpr, [&](auto k) {
      norm_fwd_kernel<T, decltype(k)::value><<<row_grid(rows, tpr), row_block(tpr), 0, st>>>(
          x.data<T>(), opt_ptr<T>(w), opt_ptr<T>(b), y.data<T>(), opt_mut<A>(mean), rstd.data<A>(), rows, d, eps,
          mean.defined());
    });
  });
  check_last_error(op);
}

void backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
              const Tensor& gx, const Tensor& gw, const Tensor& gb, int64_t rows, int64_t d, const char* op) {
  const int dev = dev_of(x);
  cudaStream_t st = current_stream(dev);
  dispatch_cuda_float(x.dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = dacc_t<T>;
    // 16-byte vectors when every row starts aligned: d a multiple of V, every base aligned.
    constexpr int V = vec_width(sizeof(T));
    const bool vec = V > 1 && d % V == 0 && vec_aligned(gy.raw(), 16) && vec_aligned(x.raw(), 16) &&
                     vec_aligned(gx.raw(), 16) && (!w.defined() || vec_aligned(w.raw(), 16));
    if (rows > 0) {
      const int tpr = pick_tpr(d);
      with_tpr(tpr, [&](auto k) {
        constexpr int kTpr = decltype(k)::value;
        if (vec)
          norm_bwd_kernel<T, kTpr, V><<<row_grid(rows, tpr), row_block(tpr), 0, st>>>(
              gy.data<T>(), x.data<T>(), opt_ptr<T>(w), opt_ptr<A>(mean), rstd.data<A>(), gx.data<T>(), rows, d);
        else
          norm_bwd_kernel<T, kTpr, 1><<<row_grid(rows, tpr), row_block(tpr), 0, st>>>(
              gy.data<T>(), x.data<T>(), opt_ptr<T>(w), opt_ptr<A>(mean), rstd.data<A>(), gx.data<T>(), rows, d);
      });
    }
    if (!gw.defined() && !gb.defined()) return;
    // Enough chunks to fill the GPU, each of at least 32 rows, at most 1024 chunks. The chunks
    // are counted in 32-column tiles whether or not the columns are read as vectors, so the
    // summation order (and every bit of gw, gb) does not depend on the vector path.
    const int64_t col_tiles = (d + kColTile - 1) / kColTile;
    int64_t chunks = std::min<int64_t>(1024, std::max<int64_t>(1, (rows + 31) / 32));
    chunks = std::min<int64_t>(chunks, std::max<int64_t>(1, 2048 / col_tiles));
    const int64_t rpc = std::max<int64_t>(1, (rows + chunks - 1) / chunks);
    chunks = std::max<int64_t>(1, (rows + rpc - 1) / rpc);
    const DType adt = std::is_same_v<A, double> ? DType::F64 : DType::F32;
    Tensor pw = gw.defined() ? empty({chunks, d}, adt, x.device()) : Tensor();
    Tensor pb = gb.defined() ? empty({chunks, d}, adt, x.device()) : Tensor();
    const bool pvec = V > 1 && d % V == 0 && vec_aligned(gy.raw(), 16) && vec_aligned(x.raw(), 16);
    const int64_t unit_tiles = pvec ? (d + kColTile * V - 1) / (kColTile * V) : col_tiles;
    const dim3 pgrid{unsigned(unit_tiles), unsigned(chunks), 1u}, pblock{unsigned(kColTile), unsigned(kRowThreads), 1u};
    if (pvec)
      param_partial_kernel<T, V><<<pgrid, pblock, 0, st>>>(gy.data<T>(), x.data<T>(), opt_ptr<A>(mean), rstd.data<A>(),
                                                           opt_mut<A>(pw), opt_mut<A>(pb), rows, d, rpc);
    else
      param_partial_kernel<T, 1><<<pgrid, pblock, 0, st>>>(gy.data<T>(), x.data<T>(), opt_ptr<A>(mean), rstd.data<A>(),
                                                           opt_mut<A>(pw), opt_mut<A>(pb), rows, d, rpc);
    if (gw.defined()) param_final_kernel<T><<<grid_for(d, 256), 256, 0, st>>>(pw.data<A>(), gw.data<T>(), chunks, d);
    if (gb.defined()) param_final_kernel<T><<<grid_for(d, 256), 256, 0, st>>>(pb.data<A>(), gb.data<T>(), chunks, d);
  });
  check_last_error(op);
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, int64_t rows, int64_t d, double eps) {
  forward(x, w, b, y, mean, rstd, rows, d, eps, "layerNorm");
}

void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb, int64_t rows, int64_t d) {
  backward(gy, x, w, mean, rstd, gx, gw, gb, rows, d, "layerNormBackward");
}

void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, int64_t rows, int64_t d,
              double eps) {
  forward(x, w, Tensor(), y, Tensor(), rstd, rows, d, eps, "rmsNorm");
}

void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                       const Tensor& gw, int64_t rows, int64_t d) {
  backward(gy, x, w, Tensor(), rstd, gx, gw, Tensor(), rows, d, "rmsNormBackward");
}

}  // namespace sift::cuda
