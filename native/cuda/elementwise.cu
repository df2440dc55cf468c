// CUDA elementwise kernels: grid-stride loops, a flat path when every operand is contiguous and a
// StridedIndexer path otherwise (broadcast operands have stride 0). Both move 16-byte vectors
// (8 x bf16/f16, 4 x f32, ...) per thread where the layout and the pointers' alignment allow
// (common.cuh: plan_elementwise), else one element per thread. The op code is a kernel
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
constexpr bool is_fp_v = std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, __half> ||
                         std::is_same_v<T, __nv_bfloat16>;

template <typename T>
__device__ __forceinline__ cnum_t<T> ld(T v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    return to_f32(v);
  else
    return v;
}
template <typename T>
__device__ __forceinline__ T st(cnum_t<T> v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    return from_f32<T>(v);
  else
    return v;
}

#define SIFT_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// Every kernel below runs over `nvec` units of V elements: one element when V == 1, else a
// vector of V elements (V = 16 bytes / element size). A unit's element offsets are i * V for
// contiguous operands, else the indexer's (an indexer over vectors when V > 1, see
// vectorize_indexer). Contiguous vector launches end with the scalar tail [nvec * V, n), which
// strided vector launches do not have. Per element the maths is the same call on the same
// operands in every path.
#define SIFT_UNIT_OFFSETS(NOPS, i)                                       \
  int64_t off[NOPS];                                                     \
  if (contig) {                                                          \
    _Pragma("unroll") for (int k_ = 0; k_ < NOPS; k_++) off[k_] = (i)*V; \
  } else {                                                               \
    ix.offsets((i), off);                                                \
  }

#define SIFT_TAIL_LOOP(e, nvec, n)                                                         \
  if constexpr (V > 1)                                                                     \
    if (contig)                                                                            \
      for (int64_t e = (nvec)*V + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < (n); \
           e += int64_t(gridDim.x) * blockDim.x)

template <typename T>
__device__ __forceinline__ T unary_elem(UnaryOp op, T v) {
  if constexpr (is_fp_v<T>)
    return st<T>(ew::unary_fwd<cnum_t<T>>(op, ld(v)));
  else
    return ew::unary_int<T>(op, v);
}

// Pointers are not __restrict__: ops may run in place (y == x), which is safe here because each
// unit is read whole before it is written, by the same thread, and no other thread touches it.
template <int V, typename T>
__global__ void unary_kernel(UnaryOp op, const T* x, T* y, int64_t nvec, int64_t n, StridedIndexer<2> ix, bool contig) {
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(2, i)
    const Vec<T, V> a = vload<V>(x + off[1]);
    Vec<T, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = unary_elem(op, a.v[j]);
    vstore<V>(y + off[0], r);
  }
  SIFT_TAIL_LOOP(e, nvec, n) y[e] = unary_elem(op, x[e]);
}

template <int V, typename T>
__global__ void unary_bwd_kernel(UnaryOp op, const T* x, const T* y, const T* g, T* gx, int64_t nvec, int64_t n,
                                 StridedIndexer<4> ix, bool contig) {
  using A = cnum_t<T>;
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(4, i)
    const Vec<T, V> vx = vload<V>(x + off[1]);
    const Vec<T, V> vy = vload<V>(y + off[2]);
    const Vec<T, V> vg = vload<V>(g + off[3]);
    Vec<T, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = st<T>(ew::unary_bwd<A>(op, ld(vx.v[j]), ld(vy.v[j]), ld(vg.v[j])));
    vstore<V>(gx + off[0], r);
  }
  SIFT_TAIL_LOOP(e, nvec, n) gx[e] = st<T>(ew::unary_bwd<A>(op, ld(x[e]), ld(y[e]), ld(g[e])));
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

template <int V, typename T, typename O>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, O* out, int64_t nvec, int64_t n,
                              StridedIndexer<3> ix, bool contig) {
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(3, i)
    const Vec<T, V> va = vload<V>(a + off[1]);
    const Vec<T, V> vb = vload<V>(b + off[2]);
    Vec<O, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = binary_elem<T, O>(op, va.v[j], vb.v[j]);
    vstore<V>(out + off[0], r);
  }
  SIFT_TAIL_LOOP(e, nvec, n) out[e] = binary_elem<T, O>(op, a[e], b[e]);
}

// The scalar arrives as the compute type of T (floats) or as double (integers and bool, where
// comparisons are made in double and arithmetic with the integral value).
template <typename T, typename O, typename S>
__device__ __forceinline__ O scalar_elem(BinaryOp op, T v, S s) {
  if constexpr (std::is_same_v<O, uint8_t>) {
    return ew::compare<S>(op, S(ld(v)), s);
  } else if constexpr (is_fp_v<T>) {
    return st<T>(ew::binary_fwd<S>(op, ld(v), s));
  } else {
    return ew::binary_int<T>(op, v, T(s));
  }
}

template <int V, typename T, typename O, typename S>
__global__ void scalar_kernel(BinaryOp op, const T* a, S s, O* out, int64_t nvec, int64_t n, StridedIndexer<2> ix,
                              bool contig) {
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(2, i)
    const Vec<T, V> va = vload<V>(a + off[1]);
    Vec<O, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = scalar_elem<T, O, S>(op, va.v[j], s);
    vstore<V>(out + off[0], r);
  }
  SIFT_TAIL_LOOP(e, nvec, n) out[e] = scalar_elem<T, O, S>(op, a[e], s);
}

template <int V, typename T>
__global__ void where_kernel(const uint8_t* c, const T* a, const T* b, T* out, int64_t nvec, int64_t n,
                             StridedIndexer<4> ix, bool contig) {
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(4, i)
    const Vec<uint8_t, V> vc = vload<V>(c + off[1]);
    const Vec<T, V> va = vload<V>(a + off[2]);
    const Vec<T, V> vb = vload<V>(b + off[3]);
    Vec<T, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = vc.v[j] ? va.v[j] : vb.v[j];
    vstore<V>(out + off[0], r);
  }
  SIFT_TAIL_LOOP(e, nvec, n) out[e] = c[e] ? a[e] : b[e];
}

template <typename T>
__device__ __forceinline__ T add_elem(T d, T s, cnum_t<T> alpha) {
  if constexpr (is_fp_v<T>)
    return st<T>(ld(d) + alpha * ld(s));
  else
    return T(d + alpha * s);
}

// d may alias s exactly (x += x): each unit of d is read (with s's) before it is written, by the
// same thread.
template <int V, typename T>
__global__ void add_inplace_kernel(T* d, const T* s, cnum_t<T> alpha, int64_t nvec, int64_t n, StridedIndexer<2> ix,
                                   bool contig) {
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(2, i)
    Vec<T, V> vd = vload<V>(d + off[0]);
    const Vec<T, V> vs = vload<V>(s + off[1]);
#pragma unroll
    for (int j = 0; j < V; j++) vd.v[j] = add_elem<T>(vd.v[j], vs.v[j], alpha);
    vstore<V>(d + off[0], vd);
  }
  SIFT_TAIL_LOOP(e, nvec, n) d[e] = add_elem<T>(d[e], s[e], alpha);
}

template <typename T>
__device__ __forceinline__ T scale_elem(T d, cnum_t<T> s) {
  if constexpr (is_fp_v<T>)
    return st<T>(ld(d) * s);
  else
    return T(d * s);
}

template <int V, typename T>
__global__ void scale_kernel(T* d, cnum_t<T> s, int64_t nvec, int64_t n, StridedIndexer<1> ix, bool contig) {
  SIFT_GRID_LOOP(i, nvec) {
    SIFT_UNIT_OFFSETS(1, i)
    Vec<T, V> vd = vload<V>(d + off[0]);
#pragma unroll
    for (int j = 0; j < V; j++) vd.v[j] = scale_elem<T>(vd.v[j], s);
    vstore<V>(d + off[0], vd);
  }
  SIFT_TAIL_LOOP(e, nvec, n) d[e] = scale_elem<T>(d[e], s);
}

// Plans a launch over `out` and `ins` (same shape, strides already broadcast) with vectors of
// vec_width(sizeof(T)) elements where the layout and the alignment allow.
template <int N, typename T>
EwPlan<N> plan_for(const Tensor& out, std::initializer_list<const Tensor*> ins) {
  const Shape* strides[N];
  const void* ptrs[N];
  size_t sizes[N];
  int k = 0;
  bool contig = out.is_contiguous();
  strides[k] = &out.strides;
  ptrs[k] = out.raw();
  sizes[k++] = out.itemsize();
  for (const Tensor* t : ins) {
    strides[k] = &t->strides;
    ptrs[k] = t->raw();
    sizes[k++] = t->itemsize();
    contig = contig && t->is_contiguous();
  }
  return plan_elementwise<N>(vec_width(sizeof(T)), out.shape, out.numel(), contig, ptrs, sizes, strides);
}

// Launches KERNEL<V, ...>(args..., nvec, n, ix, contig) (the other template arguments deduced)
// with V the vector width of T when the plan is vectorised, else 1.
#define SIFT_EW_LAUNCH(plan, n, stream, T, KERNEL, ...)                                                             \
  do {                                                                                                              \
    constexpr int kV_ = vec_width(sizeof(T));                                                                       \
    if (kV_ > 1 && (plan).vec)                                                                                      \
      KERNEL<kV_><<<grid_for((plan).nvec, kBlock), kBlock, 0, (stream)>>>(__VA_ARGS__, (plan).nvec, (n), (plan).ix, \
                                                                          (plan).contig);                           \
    else                                                                                                            \
      KERNEL<1><<<grid_for((n), kBlock), kBlock, 0, (stream)>>>(__VA_ARGS__, (n), (n), (plan).ix, (plan).contig);   \
  } while (0)

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  dispatch_cuda_all(x.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>) {
      const auto p = plan_for<2, T>(out, {&x});
      SIFT_EW_LAUNCH(p, n, s, T, unary_kernel, op, x.data<T>(), out.data<T>());
    }
  });
  check_last_error("unary");
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx) {
  int64_t n = gx.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(gx));
  dispatch_cuda_float(x.dtype, "unaryBackward", [&](auto tt) {
    using T = typename decltype(tt)::type;
    const auto p = plan_for<4, T>(gx, {&x, &y, &gy});
    SIFT_EW_LAUNCH(p, n, s, T, unary_bwd_kernel, op, x.data<T>(), y.data<T>(), gy.data<T>(), gx.data<T>());
  });
  check_last_error("unaryBackward");
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  dispatch_cuda_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    const auto p = plan_for<3, T>(out, {&a, &b});
    if (is_comparison(op)) {
      SIFT_EW_LAUNCH(p, n, s, T, binary_kernel, op, a.data<T>(), b.data<T>(), out.data<uint8_t>());
    } else if constexpr (!std::is_same_v<T, uint8_t>) {
      SIFT_EW_LAUNCH(p, n, s, T, binary_kernel, op, a.data<T>(), b.data<T>(), out.data<T>());
    }
  });
  check_last_error("binary");
}

void scalar_op(BinaryOp op, const Tensor& a, double sv, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  dispatch_cuda_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    const auto p = plan_for<2, T>(out, {&a});
    if constexpr (is_fp_v<T>) {
      using C = cnum_t<T>;
      if (is_comparison(op))
        SIFT_EW_LAUNCH(p, n, s, T, scalar_kernel, op, a.data<T>(), C(sv), out.data<uint8_t>());
      else
        SIFT_EW_LAUNCH(p, n, s, T, scalar_kernel, op, a.data<T>(), C(sv), out.data<T>());
    } else {
      if (is_comparison(op)) {
        SIFT_EW_LAUNCH(p, n, s, T, scalar_kernel, op, a.data<T>(), sv, out.data<uint8_t>());
      } else if constexpr (!std::is_same_v<T, uint8_t>) {
        SIFT_EW_LAUNCH(p, n, s, T, scalar_kernel, op, a.data<T>(), sv, out.data<T>());
      }
    }
  });
  check_last_error("scalarOp");
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  int64_t n = out.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(out));
  dispatch_cuda_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    const auto p = plan_for<4, T>(out, {&cond, &a, &b});
    SIFT_EW_LAUNCH(p, n, s, T, where_kernel, cond.data<uint8_t>(), a.data<T>(), b.data<T>(), out.data<T>());
  });
  check_last_error("where");
}

void add_inplace(const Tensor& dst, const Tensor& src, double alpha) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(dst));
  dispatch_cuda_all(dst.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>) {
      const auto p = plan_for<2, T>(dst, {&src});
      SIFT_EW_LAUNCH(p, n, s, T, add_inplace_kernel, dst.data<T>(), src.data<T>(), cnum_t<T>(alpha));
    }
  });
  check_last_error("addInplace");
}

void scale_inplace(const Tensor& dst, double sv) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t s = current_stream(dev_of(dst));
  dispatch_cuda_all(dst.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>) {
      const auto p = plan_for<1, T>(dst, {});
      SIFT_EW_LAUNCH(p, n, s, T, scale_kernel, dst.data<T>(), cnum_t<T>(sv));
    }
  });
  check_last_error("scaleInplace");
}

}  // namespace sift::cuda
