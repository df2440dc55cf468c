// CUDA elementwise kernels: grid-stride loops, a flat path when every operand is contiguous and a
// StridedIndexer path otherwise (broadcast operands have stride 0). The op code is a kernel
// argument (uniform across the launch, so the switch costs no divergence) to keep the number of
// instantiations small; the maths is shared with the CPU through ops/elementwise.h. 16-bit
// floats compute in f32.
#include <type_traits>

#include "common.cuh"
#include "elementwise.h"

namespace sift::cuda {
namespace {

constexpr int kBlock = 256;

template <typename T>
constexpr bool is_fp_v = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                         std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Compute type: float for f32/f16/bf16, double for f64, the element type otherwise.
template <typename T> struct cnum { using type = T; };
template <> struct cnum<__half> { using type = float; };
template <> struct cnum<__nv_bfloat16> { using type = float; };
template <typename T> using cnum_t = typename cnum<T>::type;

template <typename T> __device__ __forceinline__ cnum_t<T> ld(T v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) return to_f32(v);
  else return v;
}
template <typename T> __device__ __forceinline__ T st(cnum_t<T> v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) return from_f32<T>(v);
  else return v;
}

#define SIFT_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <typename T>
__device__ __forceinline__ T unary_elem(UnaryOp op, T v) {
  if constexpr (is_fp_v<T>) return st<T>(ew::unary_fwd<cnum_t<T>>(op, ld(v)));
  else return ew::unary_int<T>(op, v);
}

template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, int64_t n,
                             StridedIndexer<2> ix, bool contig) {
  SIFT_GRID_LOOP(i, n) {
    if (contig) {
      y[i] = unary_elem(op, x[i]);
    } else {
      int64_t off[2];
      ix.offsets(i, off);
      y[off[0]] = unary_elem(op, x[off[1]]);
    }
  }
}

template <typename T>
__global__ void unary_bwd_kernel(UnaryOp op, const T* x, const T* y, const T* g, T* gx, int64_t n,
                                 StridedIndexer<4> ix, bool contig) {
  using A = cnum_t<T>;
  SIFT_GRID_LOOP(i, n) {
    int64_t off[4] = {i, i, i, i};
    if (!contig) ix.offsets(i, off);
    gx[off[0]] = st<T>(ew::unary_bwd<A>(op, ld(x[off[1]]), ld(y[off[2]]), ld(g[off[3]])));
  }
}

template <typename T, typename O>
__device__ __forceinline__ O binary_elem(BinaryOp op, T a, T b) {
  using C = cnum_t<T>;
  if constexpr (std::is_same_v<O, uint8_t> && !std::is_same_v<T, uint8_t>) {
    return ew::compare<C>(op, ld(a), ld(b));
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    return ew::compare<uint8_t>(op, a, b);  // bool: comparisons only
  } else if constexpr (is_fp_v<T>) {
    return st<T>(ew::binary_fwd<C>(op, ld(a), ld(b)));
  } else {
    return ew::binary_int<T>(op, a, b);
  }
}

template <typename T, typename O>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, O* out, int64_t n,
                              StridedIndexer<3> ix, bool contig) {
  SIFT_GRID_LOOP(i, n) {
    int64_t off[3] = {i, i, i};
    if (!contig) ix.offsets(i, off);
    out[off[0]] = binary_elem<T, O>(op, a[off[1]], b[off[2]]);
  }
}

// The scalar arrives as the compute type of T (floats) or as double (integers and bool, where
// comparisons are made in double and arithmetic with the integral value).
template <typename T, typename O, typename S>
__global__ void scalar_kernel(BinaryOp op, const T* a, S s, O* out, int64_t n, StridedIndexer<2> ix,
                              bool contig) {
  SIFT_GRID_LOOP(i, n) {
    int64_t off[2] = {i, i};
    if (!contig) ix.offsets(i, off);
    T v = a[off[1]];
    if constexpr (std::is_same_v<O, uint8_t>) {
      out[off[0]] = ew::compare<S>(op, S(ld(v)), s);
    } else if constexpr (is_fp_v<T>) {
      out[off[0]] = st<T>(ew::binary_fwd<S>(op, ld(v), s));
    } else if constexpr (!std::is_same_v<T, uint8_t>) {
      out[off[0]] = ew::binary_int<T>(op, v, T(s));
    }
  }
}

template <typename T>
__global__ void where_kernel(const uint8_t* c, const T* a, const T* b, T* out, int64_t n,
                             StridedIndexer<4> ix, bool contig) {
  SIFT_GRID_LOOP(i, n) {
    int64_t off[4] = {i, i, i, i};
    if (!contig) ix.offsets(i, off);
    out[off[0]] = c[off[1]] ? a[off[2]] : b[off[3]];
  }
}

template <typename T>
__global__ void add_inplace_kernel(T* d, const T* s, cnum_t<T> alpha, int64_t n, StridedIndexer<2> ix,
                                   bool contig) {
  SIFT_GRID_LOOP(i, n) {
    int64_t off[2] = {i, i};
    if (!contig) ix.offsets(i, off);
    if constexpr (is_fp_v<T>) d[off[0]] = st<T>(ld(d[off[0]]) + alpha * ld(s[off[1]]));
    else d[off[0]] = T(d[off[0]] + alpha * s[off[1]]);
  }
}

template <typename T>
__global__ void scale_kernel(T* d, cnum_t<T> s, int64_t n, StridedIndexer<1> ix, bool contig) {
  SIFT_GRID_LOOP(i, n) {
    int64_t off[1] = {i};
    if (!contig) ix.offsets(i, off);
    if constexpr (is_fp_v<T>) d[off[0]] = st<T>(ld(d[off[0]]) * s);
    else d[off[0]] = T(d[off[0]] * s);
  }
}

template <int N>
StridedIndexer<N> indexer(const Tensor& out, std::initializer_list<const Tensor*> ins, bool& contig) {
  const Shape* strides[N];
  int k = 0;
  strides[k++] = &out.strides;
  contig = out.is_contiguous();
  for (const Tensor* t : ins) {
    strides[k++] = &t->strides;
    contig = contig && t->is_contiguous();
  }
  if (contig) return StridedIndexer<N>{};
  return make_indexer<N>(out.shape, strides);
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  bool contig;
  auto ix = indexer<2>(out, {&x}, contig);
  dispatch_cuda_all(x.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>)
      unary_kernel<T><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, x.data<T>(), out.data<T>(), n, ix, contig);
  });
  check_last_error("unary");
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx) {
  int64_t n = gx.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(gx));
  bool contig;
  auto ix = indexer<4>(gx, {&x, &y, &gy}, contig);
  dispatch_cuda_float(x.dtype, "unaryBackward", [&](auto tt) {
    using T = typename decltype(tt)::type;
    unary_bwd_kernel<T><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, x.data<T>(), y.data<T>(), gy.data<T>(),
                                                                gx.data<T>(), n, ix, contig);
  });
  check_last_error("unaryBackward");
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  bool contig;
  auto ix = indexer<3>(out, {&a, &b}, contig);
  dispatch_cuda_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if (is_comparison(op)) {
      binary_kernel<T, uint8_t><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, a.data<T>(), b.data<T>(),
                                                                       out.data<uint8_t>(), n, ix, contig);
    } else if constexpr (!std::is_same_v<T, uint8_t>) {
      binary_kernel<T, T><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, a.data<T>(), b.data<T>(), out.data<T>(),
                                                                 n, ix, contig);
    }
  });
  check_last_error("binary");
}

void scalar_op(BinaryOp op, const Tensor& a, double sv, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  bool contig;
  auto ix = indexer<2>(out, {&a}, contig);
  dispatch_cuda_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (is_fp_v<T>) {
      using C = cnum_t<T>;
      if (is_comparison(op))
        scalar_kernel<T, uint8_t, C><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, a.data<T>(), C(sv),
                                                                          out.data<uint8_t>(), n, ix, contig);
      else
        scalar_kernel<T, T, C><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, a.data<T>(), C(sv), out.data<T>(),
                                                                    n, ix, contig);
    } else {
      if (is_comparison(op)) {
        scalar_kernel<T, uint8_t, double><<<grid_for(n, kBlock), kBlock, 0, s>>>(
            op, a.data<T>(), sv, out.data<uint8_t>(), n, ix, contig);
      } else if constexpr (!std::is_same_v<T, uint8_t>) {
        scalar_kernel<T, T, double><<<grid_for(n, kBlock), kBlock, 0, s>>>(op, a.data<T>(), sv, out.data<T>(),
                                                                         n, ix, contig);
      }
    }
  });
  check_last_error("scalarOp");
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  bool contig;
  auto ix = indexer<4>(out, {&cond, &a, &b}, contig);
  dispatch_cuda_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    where_kernel<T><<<grid_for(n, kBlock), kBlock, 0, s>>>(cond.data<uint8_t>(), a.data<T>(), b.data<T>(),
                                                           out.data<T>(), n, ix, contig);
  });
  check_last_error("where");
}

void add_inplace(const Tensor& dst, const Tensor& src, double alpha) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(dst));
  bool contig;
  auto ix = indexer<2>(dst, {&src}, contig);
  dispatch_cuda_all(dst.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>)
      add_inplace_kernel<T><<<grid_for(n, kBlock), kBlock, 0, s>>>(dst.data<T>(), src.data<T>(),
                                                                   cnum_t<T>(alpha), n, ix, contig);
  });
  check_last_error("addInplace");
}

void scale_inplace(const Tensor& dst, double sv) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(dst));
  bool contig;
  auto ix = indexer<1>(dst, {}, contig);
  dispatch_cuda_all(dst.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>)
      scale_kernel<T><<<grid_for(n, kBlock), kBlock, 0, s>>>(dst.data<T>(), cnum_t<T>(sv), n, ix, contig);
  });
  check_last_error("scaleInplace");
}

}  // namespace sift::cuda
