// Shared device-side helpers for the CUDA kernels: dtype dispatch onto CUDA types, float
// conversions, and strided indexing for non-contiguous operands.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../core/dtype.h"
#include "../core/tensor.h"
#include "check.cuh"
#include "runtime.h"

namespace sift::cuda {

template <typename T>
__device__ __forceinline__ float to_f32(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_f32(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Compute type: float for f32/f16/bf16 (the halves are widened), the element type otherwise.
template <typename T>
struct cnum {
  using type = T;
};
template <>
struct cnum<__half> {
  using type = float;
};
template <>
struct cnum<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using cnum_t = typename cnum<T>::type;

// Accumulation type on the device: double for double, float otherwise.
template <typename T>
struct dacc {
  using type = float;
};
template <>
struct dacc<double> {
  using type = double;
};
template <typename T>
using dacc_t = typename dacc<T>::type;

template <typename A, typename T>
__device__ __forceinline__ A to_acc(T v) {
  if constexpr (std::is_same_v<A, double>)
    return static_cast<double>(to_f32(v));
  else
    return to_f32(v);
}
template <>
__device__ __forceinline__ double to_acc<double, double>(double v) {
  return v;
}
template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, double>)
    return static_cast<double>(v);
  else
    return from_f32<T>(static_cast<float>(v));
}

// Generic conversion between any two element types (bool is uint8_t: nonzero -> 1).
template <typename D, typename S>
__device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<D, uint8_t>) {
    if constexpr (std::is_same_v<S, double>)
      return v != 0.0 ? 1 : 0;
    else
      return to_f32(v) != 0.0f ? 1 : 0;
  } else if constexpr (std::is_same_v<S, double>) {
    if constexpr (std::is_same_v<D, __half> || std::is_same_v<D, __nv_bfloat16>)
      return from_f32<D>(float(v));
    else
      return static_cast<D>(v);
  } else if constexpr (std::is_same_v<S, int64_t> || std::is_same_v<S, int32_t> || std::is_same_v<S, uint8_t>) {
    if constexpr (std::is_same_v<D, __half> || std::is_same_v<D, __nv_bfloat16>)
      return from_f32<D>(float(v));
    else
      return static_cast<D>(v);
  } else {  // S is float, half or bf16
    float f = to_f32(v);
    if constexpr (std::is_same_v<D, __half> || std::is_same_v<D, __nv_bfloat16>)
      return from_f32<D>(f);
    else
      return static_cast<D>(f);
  }
}

template <typename T>
struct ctype_tag {
  using type = T;
};

template <typename F>
auto dispatch_cuda_all(DType t, F&& f) {
  switch (t) {
    case DType::F32:
      return f(ctype_tag<float>{});
    case DType::F64:
      return f(ctype_tag<double>{});
    case DType::F16:
      return f(ctype_tag<__half>{});
    case DType::BF16:
      return f(ctype_tag<__nv_bfloat16>{});
    case DType::I32:
      return f(ctype_tag<int32_t>{});
    case DType::I64:
      return f(ctype_tag<int64_t>{});
    case DType::BOOL:
      return f(ctype_tag<uint8_t>{});
  }
  fail("E_DTYPE", "unknown dtype");
}

template <typename F>
auto dispatch_cuda_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32:
      return f(ctype_tag<float>{});
    case DType::F64:
      return f(ctype_tag<double>{});
    case DType::F16:
      return f(ctype_tag<__half>{});
    case DType::BF16:
      return f(ctype_tag<__nv_bfloat16>{});
    default:
      fail("E_DTYPE", op, ": expected a floating-point tensor, got ", dtype_name(t));
  }
}

template <typename F>
auto dispatch_cuda_int(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32:
      return f(ctype_tag<int32_t>{});
    case DType::I64:
      return f(ctype_tag<int64_t>{});
    default:
      fail("E_DTYPE", op, ": expected an i32 or i64 tensor, got ", dtype_name(t));
  }
}

constexpr int kMaxDims = 8;

// Maps a linear index over `shape` to element offsets of N strided operands. When the whole index
// space fits 32 bits (`small`, nearly always) the div/mod chain runs in 32-bit arithmetic: 64-bit
// integer division is a long emulated sequence on the GPU and dominated the broadcast paths
// (a bias added over [tokens, features], say).
template <int N>
struct StridedIndexer {
  int nd;
  bool small;
  int64_t shape[kMaxDims];
  int64_t strides[N][kMaxDims];
  __host__ __device__ __forceinline__ void offsets(int64_t linear, int64_t* off) const {
#pragma unroll
    for (int k = 0; k < N; k++) off[k] = 0;
    if (small) {
      uint32_t l = uint32_t(linear);
      for (int d = nd - 1; d >= 0; d--) {
        const uint32_t sz = uint32_t(shape[d]);
        const uint32_t q = l / sz;
        const int64_t idx = int64_t(l - q * sz);
        l = q;
#pragma unroll
        for (int k = 0; k < N; k++) off[k] += idx * strides[k][d];
      }
      return;
    }
    for (int d = nd - 1; d >= 0; d--) {
      int64_t idx = linear % shape[d];
      linear /= shape[d];
#pragma unroll
      for (int k = 0; k < N; k++) off[k] += idx * strides[k][d];
    }
  }
};

// Builds an indexer for operands that share `shape` (strides already broadcast). Size-1 dims are
// dropped and neighbouring dims that every operand walks as one (outer stride = inner stride x
// inner size) are merged, so the per-element loop is as short as the layout allows.
template <int N>
StridedIndexer<N> make_indexer(const Shape& shape, const Shape* const* strides) {
  StridedIndexer<N> ix{};
  int64_t rs[64];
  int64_t rt[64][N];
  int nr = 0;  // merged dims, innermost first
  int64_t numel = 1;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; d--) {
    numel *= shape[size_t(d)];
    if (shape[size_t(d)] == 1) continue;
    if (nr > 0) {
      bool merge = true;
      for (int k = 0; k < N; k++)
        if ((*strides[k])[size_t(d)] != rt[nr - 1][k] * rs[nr - 1]) merge = false;
      if (merge) {
        rs[nr - 1] *= shape[size_t(d)];
        continue;
      }
    }
    SIFT_CHECK(nr < kMaxDims, "E_SHAPE", "CUDA kernels support at most ", kMaxDims,
               " non-trivial dimensions (after merging), got shape ", shape_str(shape));
    rs[nr] = shape[size_t(d)];
    for (int k = 0; k < N; k++) rt[nr][k] = (*strides[k])[size_t(d)];
    nr++;
  }
  ix.nd = nr;
  for (int i = 0; i < nr; i++) {  // outermost first
    ix.shape[i] = rs[nr - 1 - i];
    for (int k = 0; k < N; k++) ix.strides[k][i] = rt[nr - 1 - i][k];
  }
  ix.small = numel < (int64_t(1) << 31);
  return ix;
}

// ---- Vectorised access ----
// V elements of T moved as one aligned load/store: 16 bytes for V = vec_width(sizeof(T)), which
// keeps several times more bytes in flight per thread than one 2- or 4-byte element does (the
// memory-bound kernels need that to come near the copy bandwidth).
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};
template <int V, typename T>
__device__ __forceinline__ Vec<T, V> vload(const T* p) {
  return *reinterpret_cast<const Vec<T, V>*>(p);
}
template <int V, typename T>
__device__ __forceinline__ void vstore(T* p, const Vec<T, V>& x) {
  *reinterpret_cast<Vec<T, V>*>(p) = x;
}

// Elements of `itemsize` bytes per 16-byte vector (1: no vector path).
constexpr int vec_width(size_t itemsize) { return itemsize == 0 || itemsize >= 16 ? 1 : int(16 / itemsize); }

// Whether p may be accessed `bytes` at a time by a vector path (aligned).
inline bool vec_aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Turns an indexer over elements (make_indexer's output) into one over vectors of V elements:
// vector j then starts at the element offsets offsets(j). Possible when every operand walks the
// innermost merged dim with stride 1, its size is a multiple of V and every outer stride is a
// multiple of V: each vector then lies in one innermost row and starts at a multiple of V, so
// with base pointers aligned to V elements every vector access is aligned. Returns false and
// leaves ix unchanged otherwise (a broadcast or transposed innermost dim, odd sizes).
template <int N>
bool vectorize_indexer(StridedIndexer<N>& ix, int V) {
  if (V <= 1 || ix.nd < 1) return false;
  const int last = ix.nd - 1;
  if (ix.shape[last] % V != 0) return false;
  for (int k = 0; k < N; k++) {
    if (ix.strides[k][last] != 1) return false;
    for (int d = 0; d < last; d++)
      if (ix.strides[k][d] % V != 0) return false;
  }
  ix.shape[last] /= V;
  for (int k = 0; k < N; k++) ix.strides[k][last] = V;
  return true;
}

// Launch plan of an elementwise kernel over N operands (the output first). contig: every operand
// is contiguous (flat index, no indexer). vec: vector path of V elements; for contig, vectors
// cover [0, nvec * V) and elements [nvec * V, n) are the scalar tail; otherwise ix is over vectors
// and there is no tail. Not vec: nvec == n, element by element as before.
template <int N>
struct EwPlan {
  StridedIndexer<N> ix;
  bool contig = false;
  bool vec = false;
  int64_t nvec = 0;
};

// ptrs/itemsizes/strides: the N operands' data pointers (storage offset included), element sizes
// and strides over `shape` (broadcast operands with stride 0). contig as the caller determined.
template <int N>
EwPlan<N> plan_elementwise(int V, const Shape& shape, int64_t n, bool contig, const void* const* ptrs,
                           const size_t* itemsizes, const Shape* const* strides) {
  EwPlan<N> p{};
  p.contig = contig;
  bool aligned = V > 1;
  for (int k = 0; k < N && aligned; k++) aligned = vec_aligned(ptrs[k], size_t(V) * itemsizes[k]);
  if (contig) {
    p.vec = aligned && n >= V;
    p.nvec = p.vec ? n / V : n;
    return p;
  }
  p.ix = make_indexer<N>(shape, strides);
  p.vec = aligned && vectorize_indexer<N>(p.ix, V);
  p.nvec = p.vec ? n / V : n;
  return p;
}

// ---- Column reductions (reduce.cu: x[O, R, I] over R, I > 1) ----
// A block is kColReduceThreads threads: ty row lanes (32, or 8 when R < 32) by tx units of V
// adjacent columns. Rows are cut into `chunks` chunks of rows_per_chunk rows (grid.y); lane l of
// chunk c combines rows c * rows_per_chunk + l + ty * j, j = 0, 1, ... Everything that fixes the
// order of the combinations (ty, rows_per_chunk, chunks) depends on R only.
constexpr int kColReduceThreads = 256;
struct ColReducePlan {
  int ty = 0, tx = 0;
  int64_t rows_per_chunk = 0, chunks = 0;
  int64_t grid_x = 0, grid_z = 0;  // column blocks; o slices (the kernel loops o over grid_z)
};
inline ColReducePlan plan_col_reduce(int64_t O, int64_t R, int64_t I, int V) {
  ColReducePlan p;
  p.ty = R < 32 ? 8 : 32;
  p.tx = kColReduceThreads / p.ty;
  const int64_t max_chunks = 65535;
  p.rows_per_chunk = int64_t(p.ty) * 4;  // 4 rows per lane: 4 loads in flight per thread
  if ((R + p.rows_per_chunk - 1) / p.rows_per_chunk > max_chunks) {
    const int64_t rpc = (R + max_chunks - 1) / max_chunks;
    p.rows_per_chunk = (rpc + p.ty - 1) / p.ty * p.ty;
  }
  p.chunks = R <= 0 ? 1 : (R + p.rows_per_chunk - 1) / p.rows_per_chunk;
  const int64_t cols = int64_t(p.tx) * V;
  p.grid_x = (I + cols - 1) / cols;
  p.grid_z = O < 65535 ? (O < 1 ? 1 : O) : 65535;
  return p;
}

inline int dev_of(const Tensor& t) { return t.device().index; }

}  // namespace sift::cuda
