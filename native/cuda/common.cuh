// Shared device-side helpers for the CUDA kernels: dtype dispatch onto CUDA types, float
// conversions, and strided indexing for non-contiguous operands.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../core/dtype.h"
#include "../core/tensor.h"
#include "check.cuh"
#include "runtime.h"

namespace sift::cuda {

template <typename T> __device__ __forceinline__ float to_f32(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Accumulation type on the device: double for double, float otherwise.
template <typename T> struct dacc { using type = float; };
template <> struct dacc<double> { using type = double; };
template <typename T> using dacc_t = typename dacc<T>::type;

template <typename A, typename T> __device__ __forceinline__ A to_acc(T v) {
  if constexpr (std::is_same_v<A, double>) return static_cast<double>(to_f32(v));
  else return to_f32(v);
}
template <> __device__ __forceinline__ double to_acc<double, double>(double v) { return v; }
template <typename T, typename A> __device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, double>) return static_cast<double>(v);
  else return from_f32<T>(static_cast<float>(v));
}

// Generic conversion between any two element types (bool is uint8_t: nonzero -> 1).
template <typename D, typename S> __device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<D, uint8_t>) {
    if constexpr (std::is_same_v<S, double>) return v != 0.0 ? 1 : 0;
    else return to_f32(v) != 0.0f ? 1 : 0;
  } else if constexpr (std::is_same_v<S, double>) {
    if constexpr (std::is_same_v<D, __half> || std::is_same_v<D, __nv_bfloat16>) return from_f32<D>(float(v));
    else return static_cast<D>(v);
  } else if constexpr (std::is_same_v<S, int64_t> || std::is_same_v<S, int32_t> || std::is_same_v<S, uint8_t>) {
    if constexpr (std::is_same_v<D, __half> || std::is_same_v<D, __nv_bfloat16>) return from_f32<D>(float(v));
    else return static_cast<D>(v);
  } else {  // S is float, half or bf16
    float f = to_f32(v);
    if constexpr (std::is_same_v<D, __half> || std::is_same_v<D, __nv_bfloat16>) return from_f32<D>(f);
    else return static_cast<D>(f);
  }
}

template <typename T> struct ctype_tag { using type = T; };

template <typename F>
auto dispatch_cuda_all(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(ctype_tag<float>{});
    case DType::F64: return f(ctype_tag<double>{});
    case DType::F16: return f(ctype_tag<__half>{});
    case DType::BF16: return f(ctype_tag<__nv_bfloat16>{});
    case DType::I32: return f(ctype_tag<int32_t>{});
    case DType::I64: return f(ctype_tag<int64_t>{});
    case DType::BOOL: return f(ctype_tag<uint8_t>{});
  }
  fail("E_DTYPE", "unknown dtype");
}

template <typename F>
auto dispatch_cuda_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f(ctype_tag<float>{});
    case DType::F64: return f(ctype_tag<double>{});
    case DType::F16: return f(ctype_tag<__half>{});
    case DType::BF16: return f(ctype_tag<__nv_bfloat16>{});
    default: fail("E_DTYPE", op, ": expected a floating-point tensor, got ", dtype_name(t));
  }
}

template <typename F>
auto dispatch_cuda_int(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32: return f(ctype_tag<int32_t>{});
    case DType::I64: return f(ctype_tag<int64_t>{});
    default: fail("E_DTYPE", op, ": expected an i32 or i64 tensor, got ", dtype_name(t));
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

inline int dev_of(const Tensor& t) { return t.device().index; }

}  // namespace sift::cuda
