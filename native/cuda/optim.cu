// CUDA optimizer kernels. A step over many tensors is one launch: per-tensor descriptors travel in
// kernel parameter space (__grid_constant__, up to 32 KB since CUDA 12.1), virtual blocks of
// kChunk elements are mapped to (tensor, chunk) by a binary search over a prefix of chunk counts,
// and physical blocks stride over the virtual ones. The element arithmetic uses non-contracting
// intrinsics so that it rounds exactly as the CPU kernel (adamw_update in ops/optim.h) does.
#include "common.cuh"
#include "optim.h"

namespace sift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 4 * 2;  // each thread does two groups of 4 elements per chunk
constexpr unsigned kMaxGrid = 1u << 20;
constexpr int kSmallGroup = 16;   // most calls: keeps the parameter copy per launch small
constexpr int kLargeGroup = 384;  // a 7B model's 224 linear weights fit one launch

__device__ __forceinline__ float adamw_elem(float g, float& m, float& v, float p, const AdamWScalars& s) {
  p = __fmul_rn(p, s.decay);
  m = __fadd_rn(__fmul_rn(s.beta1, m), __fmul_rn(s.one_minus_beta1, g));
  v = __fadd_rn(__fmul_rn(s.beta2, v), __fmul_rn(s.one_minus_beta2, __fmul_rn(g, g)));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias2_sqrt), s.eps);
  return __fsub_rn(p, __fmul_rn(s.step_size, __fdiv_rn(m, denom)));
}

// Four consecutive elements as floats; the pointer is aligned to 4 elements.
__device__ __forceinline__ void load4(const float* p, float* o) {
  float4 q = *reinterpret_cast<const float4*>(p);
  o[0] = q.x; o[1] = q.y; o[2] = q.z; o[3] = q.w;
}
__device__ __forceinline__ void load4(const double* p, float* o) {
  double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
  o[0] = float(a.x); o[1] = float(a.y); o[2] = float(b.x); o[3] = float(b.y);
}
__device__ __forceinline__ void load4(const __half* p, float* o) {
  uint2 u = *reinterpret_cast<const uint2*>(p);
  float2 a = __half22float2(*reinterpret_cast<__half2*>(&u.x));
  float2 b = __half22float2(*reinterpret_cast<__half2*>(&u.y));
  o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float* o) {
  uint2 u = *reinterpret_cast<const uint2*>(p);
  float2 a = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u.x));
  float2 b = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u.y));
  o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
}
__device__ __forceinline__ void store4(float* p, const float* x) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}
__device__ __forceinline__ void store4(double* p, const float* x) {
  reinterpret_cast<double2*>(p)[0] = make_double2(x[0], x[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(x[2], x[3]);
}
__device__ __forceinline__ void store4(__half* p, const float* x) {
  __half2 a = __floats2half2_rn(x[0], x[1]), b = __floats2half2_rn(x[2], x[3]);
  uint2 u;
  u.x = *reinterpret_cast<unsigned*>(&a);
  u.y = *reinterpret_cast<unsigned*>(&b);
  *reinterpret_cast<uint2*>(p) = u;
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float* x) {
  __nv_bfloat162 a = __floats2bfloat162_rn(x[0], x[1]), b = __floats2bfloat162_rn(x[2], x[3]);
  uint2 u;
  u.x = *reinterpret_cast<unsigned*>(&a);
  u.y = *reinterpret_cast<unsigned*>(&b);
  *reinterpret_cast<uint2*>(p) = u;
}
__device__ __forceinline__ void load_idx4(const int32_t* p, int64_t* o) {
  int4 q = *reinterpret_cast<const int4*>(p);
  o[0] = q.x; o[1] = q.y; o[2] = q.z; o[3] = q.w;
}
__device__ __forceinline__ void load_idx4(const int64_t* p, int64_t* o) {
  longlong2 a = reinterpret_cast<const longlong2*>(p)[0], b = reinterpret_cast<const longlong2*>(p)[1];
  o[0] = a.x; o[1] = a.y; o[2] = b.x; o[3] = b.y;
}

// Weight and index dtypes are runtime values per tensor (uniform within a block, so no divergence).
template <typename F>
__device__ __forceinline__ void dispatch_w(uint8_t dt, F&& f) {
  switch (DType(dt)) {
    case DType::F32: f(float{}); break;
    case DType::F16: f(__half{}); break;
    case DType::BF16: f(__nv_bfloat16{}); break;
    default: f(double{}); break;
  }
}

struct SparseDesc {
  void* w;
  const void* idx;
  const float* g;
  float* m;
  float* v;
  float* p;  // masters
  int64_t k;
  int64_t numel;  // of the weight, for the bounds check
  uint8_t wdt, idt, vec;  // vec: every per-entry array is 16-byte aligned
};

struct DenseDesc {
  void* p;
  const void* g;
  float* m;
  float* v;
  float* master;  // null: p is the optimised value
  int64_t n;
  uint8_t pdt, gdt, vec;
};

template <typename D, int N>
struct MultiArgs {
  D d[N];
  int chunk_start[N + 1];
  int n;
  AdamWScalars s;
  const float* scale;
  int* err;
};
static_assert(sizeof(MultiArgs<SparseDesc, kLargeGroup>) <= 32000, "descriptors exceed kernel parameter space");
static_assert(sizeof(MultiArgs<DenseDesc, kLargeGroup>) <= 32000, "descriptors exceed kernel parameter space");

// The tensor that owns virtual block c: the last t with chunk_start[t] <= c (no tensor is empty).
template <typename D, int N>
__device__ __forceinline__ int find_tensor(const MultiArgs<D, N>& a, int c) {
  int lo = 0, hi = a.n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (a.chunk_start[mid] <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <typename W, typename I>
__device__ __forceinline__ void sparse_chunk(const SparseDesc& d, int64_t lo, int64_t hi, const AdamWScalars& s,
                                             float sc, int* err) {
  W* w = static_cast<W*>(d.w);
  const I* idx = static_cast<const I*>(d.idx);
  bool bad = false;
  auto one = [&](int64_t i) {
    const int64_t j = int64_t(idx[i]);
    if (j < 0 || j >= d.numel) { bad = true; return; }
    float m = d.m[i], v = d.v[i];
    const float p = adamw_elem(__fmul_rn(d.g[i], sc), m, v, d.p[i], s);
    d.m[i] = m;
    d.v[i] = v;
    d.p[i] = p;
    w[j] = convert<W>(p);
  };
  if (d.vec) {
    for (int64_t i = lo + 4 * int64_t(threadIdx.x); i < hi; i += 4 * int64_t(blockDim.x)) {
      if (i + 4 > hi) {
        for (int64_t r = i; r < hi; r++) one(r);
        continue;
      }
      float g[4], m[4], v[4], p[4];
      int64_t j[4];
      load4(d.g + i, g);
      load4(d.m + i, m);
      load4(d.v + i, v);
      load4(d.p + i, p);
      load_idx4(idx + i, j);
#pragma unroll
      for (int r = 0; r < 4; r++) {
        if (j[r] < 0 || j[r] >= d.numel) { bad = true; continue; }  // keeps its old state
        p[r] = adamw_elem(__fmul_rn(g[r], sc), m[r], v[r], p[r], s);
        w[j[r]] = convert<W>(p[r]);
      }
      store4(d.m + i, m);
      store4(d.v + i, v);
      store4(d.p + i, p);
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) one(i);
  }
  if (bad) atomicOr(err, 1);
}

template <int N>
__global__ void __launch_bounds__(kThreads) sparse_adamw_kernel(const __grid_constant__ MultiArgs<SparseDesc, N> a) {
  const float sc = a.scale ? *a.scale : 1.0f;
  const int total = a.chunk_start[a.n];
  for (int c = blockIdx.x; c < total; c += gridDim.x) {
    const int t = find_tensor(a, c);
    const SparseDesc& d = a.d[t];
    const int64_t lo = int64_t(c - a.chunk_start[t]) * kChunk;
    const int64_t hi = lo + kChunk < d.k ? lo + kChunk : d.k;
    dispatch_w(d.wdt, [&](auto wt) {
      using W = decltype(wt);
      if (DType(d.idt) == DType::I32) sparse_chunk<W, int32_t>(d, lo, hi, a.s, sc, a.err);
      else sparse_chunk<W, int64_t>(d, lo, hi, a.s, sc, a.err);
    });
  }
}

template <typename P, typename G>
__device__ __forceinline__ void dense_chunk(const DenseDesc& d, int64_t lo, int64_t hi, const AdamWScalars& s,
                                            float sc) {
  P* p = static_cast<P*>(d.p);
  const G* g = static_cast<const G*>(d.g);
  auto one = [&](int64_t i) {
    float m = d.m[i], v = d.v[i];
    float x = d.master ? d.master[i] : to_f32(p[i]);
    x = adamw_elem(__fmul_rn(to_f32(g[i]), sc), m, v, x, s);
    d.m[i] = m;
    d.v[i] = v;
    if (d.master) d.master[i] = x;
    p[i] = convert<P>(x);
  };
  if (d.vec) {
    for (int64_t i = lo + 4 * int64_t(threadIdx.x); i < hi; i += 4 * int64_t(blockDim.x)) {
      if (i + 4 > hi) {
        for (int64_t r = i; r < hi; r++) one(r);
        continue;
      }
      float gv[4], m[4], v[4], x[4];
      load4(g + i, gv);
      load4(d.m + i, m);
      load4(d.v + i, v);
      if (d.master) load4(d.master + i, x);
      else load4(p + i, x);
#pragma unroll
      for (int r = 0; r < 4; r++) x[r] = adamw_elem(__fmul_rn(gv[r], sc), m[r], v[r], x[r], s);
      store4(d.m + i, m);
      store4(d.v + i, v);
      if (d.master) store4(d.master + i, x);
      store4(p + i, x);
    }
  } else {
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) one(i);
  }
}

template <int N>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const __grid_constant__ MultiArgs<DenseDesc, N> a) {
  const float sc = a.scale ? *a.scale : 1.0f;
  const int total = a.chunk_start[a.n];
  for (int c = blockIdx.x; c < total; c += gridDim.x) {
    const int t = find_tensor(a, c);
    const DenseDesc& d = a.d[t];
    const int64_t lo = int64_t(c - a.chunk_start[t]) * kChunk;
    const int64_t hi = lo + kChunk < d.n ? lo + kChunk : d.n;
    dispatch_w(d.pdt, [&](auto pt) {
      using P = decltype(pt);
      dispatch_w(d.gdt, [&](auto gt) { dense_chunk<P, decltype(gt)>(d, lo, hi, a.s, sc); });
    });
  }
}

__global__ void clip_kernel(const float* norm_sq, float* out, float max_norm) {
  const float c = __fdiv_rn(max_norm, __fadd_rn(__fsqrt_rn(*norm_sq), 1e-6f));
  *out = c > 1.0f ? 1.0f : c;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
// 4 elements of the given dtype start at an address their vector load accepts.
bool aligned4(const void* p, DType t) {
  return (reinterpret_cast<uintptr_t>(p) % (4 * dtype_size(t) < 16 ? 4 * dtype_size(t) : 16)) == 0;
}
int64_t chunks_of(int64_t n) { return (n + kChunk - 1) / kChunk; }

template <int N, typename D, typename Kernel>
void launch_group(Kernel kernel, const std::vector<D>& ds, const std::vector<int64_t>& chunks, size_t b,
                  size_t e, const AdamWScalars& s, const float* scale, int* err, cudaStream_t st) {
  MultiArgs<D, N> a;
  a.n = int(e - b);
  a.chunk_start[0] = 0;
  for (size_t t = b; t < e; t++) {
    a.d[t - b] = ds[t];
    a.chunk_start[t - b + 1] = a.chunk_start[t - b] + int(chunks[t]);
  }
  a.s = s;
  a.scale = scale;
  a.err = err;
  const unsigned total = unsigned(a.chunk_start[a.n]);
  kernel<<<total < kMaxGrid ? total : kMaxGrid, kThreads, 0, st>>>(a);
}

// Splits the descriptors into launches of at most kLargeGroup tensors and 2^31 - 1 chunks.
template <typename D, typename KSmall, typename KLarge>
void launch_all(const std::vector<D>& ds, const std::vector<int64_t>& chunks, KSmall small, KLarge large,
                const AdamWScalars& s, const float* scale, int* err, cudaStream_t st, const char* what) {
  size_t b = 0;
  while (b < ds.size()) {
    size_t e = b;
    int64_t total = 0;
    while (e < ds.size() && e - b < size_t(kLargeGroup) && total + chunks[e] <= int64_t(INT32_MAX)) total += chunks[e++];
    SIFT_CHECK(e > b, "E_SHAPE", what, ": a tensor is too large for one launch");
    if (e - b <= size_t(kSmallGroup)) launch_group<kSmallGroup>(small, ds, chunks, b, e, s, scale, err, st);
    else launch_group<kLargeGroup>(large, ds, chunks, b, e, s, scale, err, st);
    check_last_error(what);
    b = e;
  }
}

}  // namespace

void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                  const std::vector<Tensor>& v, const std::vector<Tensor>& masters,
                  const AdamWScalars& s, const Tensor& scale) {
  std::vector<SparseDesc> ds;
  std::vector<int64_t> chunks;
  int dev = -1;
  for (size_t t = 0; t < weights.size(); t++) {
    const int64_t k = indices[t].numel();
    if (k == 0) continue;  // the kernel's tensor search assumes no empty tensor
    dev = dev_of(weights[t]);
    SparseDesc d{};
    d.w = weights[t].raw();
    d.idx = indices[t].raw();
    d.g = grads[t].data<float>();
    d.m = m[t].data<float>();
    d.v = v[t].data<float>();
    d.p = masters[t].data<float>();
    d.k = k;
    d.numel = weights[t].numel();
    d.wdt = uint8_t(weights[t].dtype);
    d.idt = uint8_t(indices[t].dtype);
    d.vec = aligned16(d.idx) && aligned16(d.g) && aligned16(d.m) && aligned16(d.v) && aligned16(d.p);
    ds.push_back(d);
    chunks.push_back(chunks_of(k));
  }
  if (ds.empty()) return;
  launch_all(ds, chunks, sparse_adamw_kernel<kSmallGroup>, sparse_adamw_kernel<kLargeGroup>, s,
             scale.defined() ? scale.data<float>() : nullptr, error_flag(dev), current_stream(dev), "sparseAdamW");
}

void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
           const std::vector<Tensor>& m, const std::vector<Tensor>& v,
           const std::vector<Tensor>& masters, const AdamWScalars& s, const Tensor& scale) {
  std::vector<DenseDesc> ds;
  std::vector<int64_t> chunks;
  int dev = -1;
  for (size_t t = 0; t < params.size(); t++) {
    const int64_t n = params[t].numel();
    if (n == 0) continue;
    dev = dev_of(params[t]);
    DenseDesc d{};
    d.p = params[t].raw();
    d.g = grads[t].raw();
    d.m = m[t].data<float>();
    d.v = v[t].data<float>();
    d.master = masters[t].defined() ? masters[t].data<float>() : nullptr;
    d.n = n;
    d.pdt = uint8_t(params[t].dtype);
    d.gdt = uint8_t(grads[t].dtype);
    d.vec = aligned4(d.p, params[t].dtype) && aligned4(d.g, grads[t].dtype) && aligned16(d.m) &&
            aligned16(d.v) && (d.master == nullptr || aligned16(d.master));
    ds.push_back(d);
    chunks.push_back(chunks_of(n));
  }
  if (ds.empty()) return;
  launch_all(ds, chunks, adamw_kernel<kSmallGroup>, adamw_kernel<kLargeGroup>, s,
             scale.defined() ? scale.data<float>() : nullptr, error_flag(dev), current_stream(dev), "adamW");
}

void clip_coefficient(const Tensor& norm_sq, const Tensor& out, float max_norm) {
  const int dev = dev_of(out);
  clip_kernel<<<1, 1, 0, current_stream(dev)>>>(norm_sq.data<float>(), out.data<float>(), max_norm);
  check_last_error("clipCoefficient");
}

}  // namespace sift::cuda
