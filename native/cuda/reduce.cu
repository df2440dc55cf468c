// CUDA reductions over x[O, R, I] (contiguous). Rows (I == 1): a warp per row for short rows, a
// block per row otherwise, and a two-pass reduction (fixed chunks, then the partials) when a
// few very long rows would leave the GPU idle, e.g. a global norm. Columns (I > 1): blocks of
// 16-byte column vectors by 32 row lanes over chunks of rows, then the chunks' partials (see
// cols_kernel). No atomics: the order of every combination is fixed by the launch shape, which
// depends only on O, R and I, so results are deterministic.
#include <limits>
#include <type_traits>

#include "../core/tensor.h"
#include "common.cuh"
#include "reduce.h"

namespace sift::cuda {
namespace {

constexpr int kBlock = 256;

// Accumulator: f32 for f32/f16/bf16, f64 for f64, i64 for integers.
template <typename T>
struct racc {
  using type = float;
};
template <>
struct racc<double> {
  using type = double;
};
template <>
struct racc<int32_t> {
  using type = int64_t;
};
template <>
struct racc<int64_t> {
  using type = int64_t;
};
template <typename T>
using racc_t = typename racc<T>::type;

template <typename A, typename T>
__device__ __forceinline__ A load_as(T v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    return A(to_f32(v));
  else
    return A(v);
}
template <typename T, typename A>
__device__ __forceinline__ T store_as(A v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    return from_f32<T>(float(v));
  else
    return T(v);
}

template <ReduceOp OP, typename A>
struct Rd {
  static constexpr bool kMax = OP == ReduceOp::Max || OP == ReduceOp::AbsMax;
  static constexpr bool kMin = OP == ReduceOp::Min;
  __device__ static A init() {
    if constexpr (kMin) {
      if constexpr (std::is_integral_v<A>)
        return std::numeric_limits<A>::max();
      else
        return std::numeric_limits<A>::infinity();
    } else if constexpr (OP == ReduceOp::Max) {
      if constexpr (std::is_integral_v<A>)
        return std::numeric_limits<A>::lowest();
      else
        return -std::numeric_limits<A>::infinity();
    } else {
      return A(0);
    }
  }
  __device__ static A map(A v) {
    if constexpr (OP == ReduceOp::SumSq)
      return v * v;
    else if constexpr (OP == ReduceOp::AbsMax)
      return v < A(0) ? -v : v;
    else
      return v;
  }
  __device__ static A combine(A acc, A v) {
    if constexpr (kMax)
      return (v > acc || v != v) ? v : acc;
    else if constexpr (kMin)
      return (v < acc || v != v) ? v : acc;
    else
      return acc + v;
  }
  __device__ static A finish(A acc, int64_t count) {
    if constexpr (OP == ReduceOp::Mean)
      return acc / A(count);
    else
      return acc;
  }
};

template <typename A>
__device__ __forceinline__ A shfl_down(A v, int o) {
  if constexpr (std::is_same_v<A, int64_t>)
    return A(__shfl_down_sync(0xffffffffu, (long long)v, o));
  else
    return __shfl_down_sync(0xffffffffu, v, o);
}

// Reduces v over groups of TPR consecutive threads (32 or kBlock); the group's first thread
// gets the result. With TPR == kBlock every thread of the block must call it.
template <int TPR, ReduceOp OP, typename A>
__device__ __forceinline__ A group_reduce(A v) {
  using R = Rd<OP, A>;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = R::combine(v, shfl_down(v, o));
  if constexpr (TPR == 32) {
    return v;
  } else {
    __shared__ A sh[kBlock / 32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
      v = lane < kBlock / 32 ? sh[lane] : R::init();
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v = R::combine(v, shfl_down(v, o));
    }
    __syncthreads();
    return v;
  }
}

// Virtual row v = (o, c) covers elements [c * chunk_len, (c + 1) * chunk_len) of row o.
// MAP: apply the op's map to inputs (false when reading partials). FINAL: finish and store as
// Out; else store the raw accumulator.
template <int TPR, ReduceOp OP, typename T, typename A, typename Out, bool MAP, bool FINAL>
__global__ void rows_kernel(const T* __restrict__ x, int64_t nvirt, int64_t row_len, int64_t chunks, int64_t chunk_len,
                            Out* __restrict__ out, int64_t count) {
  using R = Rd<OP, A>;
  constexpr int kGroups = kBlock / TPR;
  const int g = threadIdx.x / TPR, t = threadIdx.x % TPR;
  // All threads of a block run the same number of iterations (needed by group_reduce<kBlock>).
  for (int64_t base = int64_t(blockIdx.x) * kGroups; base < nvirt; base += int64_t(gridDim.x) * kGroups) {
    int64_t v = base + g;
    A acc = R::init();
    if (v < nvirt) {
      int64_t o = v / chunks, c = v % chunks;
      int64_t r0 = c * chunk_len, r1 = r0 + chunk_len < row_len ? r0 + chunk_len : row_len;
      const T* p = x + o * row_len;
      for (int64_t r = r0 + t; r < r1; r += TPR) {
        A val = load_as<A>(p[r]);
        acc = R::combine(acc, MAP ? R::map(val) : val);
      }
    }
    acc = group_reduce<TPR, OP, A>(acc);
    if (t == 0 && v < nvirt) {
      if constexpr (FINAL)
        out[v] = store_as<Out>(R::finish(acc, count));
      else
        out[v] = acc;
    }
  }
}

// Columns (I > 1): x[O, R, I] reduced over R, launched as plan_col_reduce (common.cuh) says. A
// block is kColThreads threads: TY row lanes by TX = kColThreads / TY column units (TY = 32, or 8
// for R < 32), a unit being V adjacent columns read as one 16-byte vector (V = 1 when I or the
// alignment does not allow it). Rows are cut into chunks of `rpc` rows (grid.y); lane ty of a
// chunk combines rows chunk * rpc + ty + TY * j, j = 0, 1, ... in order, the lanes are then
// combined through shared memory in groups of 8 (lanes 8q..8q+7 in order, then the groups q in
// order), and the chunks' partials by cols_final_kernel in chunk order. That order depends on R
// only, not on V, TX or the alignment, so results are deterministic. The chunks keep every SM
// busy even when O * I is small: a bias gradient [4096, 768] -> [768] ran as 24 blocks before.
// final_pass (one chunk): finish and store T into out[o * I + i]; else store the raw accumulator
// into part[(o * chunks + chunk) * I + i].
constexpr int kColThreads = kColReduceThreads;

template <ReduceOp OP, typename T, typename A, int V>
__global__ void __launch_bounds__(kColThreads)
    cols_kernel(const T* __restrict__ x, int64_t O, int64_t Rn, int64_t I, int64_t rpc, int64_t chunks, bool final_pass,
                T* __restrict__ out, A* __restrict__ part) {
  using R = Rd<OP, A>;
  __shared__ A sh[kColThreads * V];  // [TY][C], C = TX * V columns of the block
  __shared__ A sh2[4 * 8 * V];       // [TY / 8][C]
  const int TY = blockDim.y, TX = blockDim.x;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * TX + tx;
  const int C = TX * V;
  const int G = TY / 8;
  const int64_t i0 = (int64_t(blockIdx.x) * TX + tx) * V;  // first column of this thread's unit
  const bool valid = i0 < I;                               // V > 1 only when I % V == 0
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rpc;
  const int64_t r1 = r0 + rpc < Rn ? r0 + rpc : Rn;
  for (int64_t o = blockIdx.z; o < O; o += gridDim.z) {
    A acc[V];
#pragma unroll
    for (int j = 0; j < V; j++) acc[j] = R::init();
    if (valid) {
      const T* p = x + (o * Rn) * I + i0;
#pragma unroll 4
      for (int64_t r = r0 + ty; r < r1; r += TY) {
        const Vec<T, V> v = vload<V>(p + r * I);
#pragma unroll
        for (int j = 0; j < V; j++) acc[j] = R::combine(acc[j], R::map(load_as<A>(v.v[j])));
      }
    }
#pragma unroll
    for (int j = 0; j < V; j++) sh[ty * C + tx * V + j] = acc[j];
    __syncthreads();
    // Groups of 8 lanes: C * G = 32 * V items (<= kColThreads), item = (q, c).
    if (tid < C * G) {
      const int c = tid % C, q = tid / C;
      A a = sh[(8 * q) * C + c];
#pragma unroll
      for (int k = 1; k < 8; k++) a = R::combine(a, sh[(8 * q + k) * C + c]);
      sh2[q * C + c] = a;
    }
    __syncthreads();
    if (tid < C) {
      const int64_t i = int64_t(blockIdx.x) * C + tid;
      if (i < I) {
        A a = sh2[tid];
        for (int q = 1; q < G; q++) a = R::combine(a, sh2[q * C + tid]);
        if (final_pass)
          out[o * I + i] = store_as<T>(R::finish(a, Rn));
        else
          part[(o * chunks + chunk) * I + i] = a;
      }
    }
    __syncthreads();  // sh/sh2 are rewritten by the next o
  }
}

// Combines the chunks' partials of each output column in chunk order.
template <ReduceOp OP, typename T, typename A>
__global__ void cols_final_kernel(const A* __restrict__ part, int64_t O, int64_t I, int64_t chunks, int64_t count,
                                  T* __restrict__ out) {
  using R = Rd<OP, A>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < O * I; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / I, i = t - o * I;
    const A* p = part + o * chunks * I + i;
    A a = R::init();
#pragma unroll 8
    for (int64_t c = 0; c < chunks; c++) a = R::combine(a, p[c * I]);
    out[t] = store_as<T>(R::finish(a, count));
  }
}

// First maximum: NaN beats numbers; among equals (or NaNs) the lower index wins.
template <typename C>
__device__ __forceinline__ bool arg_better(C v2, int64_t i2, C v1, int64_t i1) {
  bool n1 = v1 != v1, n2 = v2 != v2;
  if (n1 || n2) return n2 && (!n1 || i2 < i1);
  return v2 > v1 || (v2 == v1 && i2 < i1);
}

template <typename T>
__global__ void argmax_rows_kernel(const T* __restrict__ x, int64_t O, int64_t Rn, int64_t* __restrict__ out) {
  using C = cnum_t<T>;
  __shared__ C sv[kBlock];
  __shared__ int64_t si[kBlock];
  for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
    const T* p = x + o * Rn;
    C best = C(0);
    int64_t bi = -1;
    for (int64_t r = threadIdx.x; r < Rn; r += kBlock) {
      C v = load_as<C>(p[r]);
      if (bi < 0 || arg_better(v, r, best, bi)) {
        best = v;
        bi = r;
      }
    }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int w = kBlock / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) {
        int64_t j = si[threadIdx.x + w];
        if (j >= 0 && (si[threadIdx.x] < 0 || arg_better(sv[threadIdx.x + w], j, sv[threadIdx.x], si[threadIdx.x]))) {
          sv[threadIdx.x] = sv[threadIdx.x + w];
          si[threadIdx.x] = j;
        }
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = si[0];
    __syncthreads();
  }
}

template <typename T>
__global__ void argmax_cols_kernel(const T* __restrict__ x, int64_t O, int64_t Rn, int64_t I,
                                   int64_t* __restrict__ out) {
  using C = cnum_t<T>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < O * I; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = t / I, i = t % I;
    const T* p = x + o * Rn * I + i;
    C best = load_as<C>(p[0]);
    int64_t bi = 0;
    for (int64_t r = 1; r < Rn; r++) {
      C v = load_as<C>(p[r * I]);
      if (arg_better(v, r, best, bi)) {
        best = v;
        bi = r;
      }
    }
    out[t] = bi;
  }
}

unsigned grid_rows(int64_t groups) { return unsigned(groups < 65535 * 4 ? (groups < 1 ? 1 : groups) : 65535 * 4); }

template <ReduceOp OP, typename T>
void launch_cols(const Tensor& x, int64_t O, int64_t Rn, int64_t I, const Tensor& out, cudaStream_t s) {
  using A = racc_t<T>;
  constexpr int kV = vec_width(sizeof(T));
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const bool vec = kV > 1 && I % kV == 0 && vec_aligned(px, sizeof(T) * kV);
  const ColReducePlan cp = plan_col_reduce(O, Rn, I, vec ? kV : 1);
  SIFT_CHECK(cp.grid_x <= 0x7fffffff, "E_SHAPE", "reduce: too many columns");
  const dim3 block{unsigned(cp.tx), unsigned(cp.ty), 1u};
  const dim3 grid{unsigned(cp.grid_x), unsigned(cp.chunks), unsigned(cp.grid_z)};
  const int64_t chunks = cp.chunks, rpc = cp.rows_per_chunk;
  Tensor part;
  A* pp = nullptr;
  if (chunks > 1) {
    DType pdt = std::is_same_v<A, double> ? DType::F64 : (std::is_same_v<A, int64_t> ? DType::I64 : DType::F32);
    part = empty({O * chunks * I}, pdt, x.device());  // stream-ordered: safe to drop after launch
    pp = part.data<A>();
  }
  const bool fin = chunks == 1;
  if (vec)
    cols_kernel<OP, T, A, kV><<<grid, block, 0, s>>>(px, O, Rn, I, rpc, chunks, fin, po, pp);
  else
    cols_kernel<OP, T, A, 1><<<grid, block, 0, s>>>(px, O, Rn, I, rpc, chunks, fin, po, pp);
  if (!fin) cols_final_kernel<OP, T, A><<<grid_for(O * I, kBlock), kBlock, 0, s>>>(pp, O, I, chunks, Rn, po);
}

template <ReduceOp OP, typename T>
void launch_reduce(const Tensor& x, int64_t O, int64_t Rn, int64_t I, const Tensor& out, cudaStream_t s) {
  using A = racc_t<T>;
  const T* px = x.data<T>();
  T* po = out.data<T>();
  if (I > 1) {
    launch_cols<OP, T>(x, O, Rn, I, out, s);
    return;
  }
  if (Rn <= 256) {  // a warp per row
    rows_kernel<32, OP, T, A, T, true, true><<<grid_rows((O + 7) / 8), kBlock, 0, s>>>(px, O, Rn, 1, Rn, po, Rn);
    return;
  }
  constexpr int64_t kChunk = 16384;
  if (O >= 512 || Rn <= 4 * kChunk) {  // a block per row keeps the GPU busy
    rows_kernel<kBlock, OP, T, A, T, true, true><<<grid_rows(O), kBlock, 0, s>>>(px, O, Rn, 1, Rn, po, Rn);
    return;
  }
  // Two passes: fixed chunks of each row into partials [O, chunks], then the partials.
  const int64_t chunks = (Rn + kChunk - 1) / kChunk;
  DType pdt = std::is_same_v<A, double> ? DType::F64 : (std::is_same_v<A, int64_t> ? DType::I64 : DType::F32);
  Tensor part = empty({O * chunks}, pdt, x.device());  // stream-ordered: safe to drop after launch
  A* pp = part.data<A>();
  rows_kernel<kBlock, OP, T, A, A, true, false>
      <<<grid_rows(O * chunks), kBlock, 0, s>>>(px, O * chunks, Rn, chunks, kChunk, pp, Rn);
  if (chunks <= 256)
    rows_kernel<32, OP, A, A, T, false, true>
        <<<grid_rows((O + 7) / 8), kBlock, 0, s>>>(pp, O, chunks, 1, chunks, po, Rn);
  else
    rows_kernel<kBlock, OP, A, A, T, false, true><<<grid_rows(O), kBlock, 0, s>>>(pp, O, chunks, 1, chunks, po, Rn);
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, int64_t O, int64_t Rn, int64_t I, const Tensor& out) {
  if (out.numel() == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  dispatch_cuda_all(x.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>) {
      switch (op) {
        case ReduceOp::Sum:
          launch_reduce<ReduceOp::Sum, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::Max:
          launch_reduce<ReduceOp::Max, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::Min:
          launch_reduce<ReduceOp::Min, T>(x, O, Rn, I, out, s);
          break;
        default:
          fail("E_DTYPE", "reduce: op needs a floating-point tensor");
      }
    } else if constexpr (!std::is_same_v<T, uint8_t>) {
      switch (op) {
        case ReduceOp::Sum:
          launch_reduce<ReduceOp::Sum, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::Mean:
          launch_reduce<ReduceOp::Mean, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::Max:
          launch_reduce<ReduceOp::Max, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::Min:
          launch_reduce<ReduceOp::Min, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::SumSq:
          launch_reduce<ReduceOp::SumSq, T>(x, O, Rn, I, out, s);
          break;
        case ReduceOp::AbsMax:
          launch_reduce<ReduceOp::AbsMax, T>(x, O, Rn, I, out, s);
          break;
      }
    } else {
      fail("E_DTYPE", "reduce: bool tensors");
    }
  });
  check_last_error("reduce");
}

void argmax(const Tensor& x, int64_t O, int64_t Rn, int64_t I, const Tensor& out) {
  if (out.numel() == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  dispatch_cuda_all(x.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>) {
      if (I == 1)
        argmax_rows_kernel<T><<<grid_rows(O), kBlock, 0, s>>>(x.data<T>(), O, Rn, out.data<int64_t>());
      else
        argmax_cols_kernel<T><<<grid_for(O * I, kBlock), kBlock, 0, s>>>(x.data<T>(), O, Rn, I, out.data<int64_t>());
    }
  });
  check_last_error("argmax");
}

}  // namespace sift::cuda
