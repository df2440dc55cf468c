// CUDA optimizer kernels. A step over many tensors is one launch: per-tensor descriptors travel in
// kernel parameter space (__grid_constant__, up to 32 KB since CUDA 12.1), virtual blocks of
// kChunk elements are mapped to (tensor, chunk) by a binary search over a prefix of chunk counts,
// and physical blocks stride over the virtual ones. The element arithmetic uses non-contracting
// intrinsics so that it rounds exactly as the CPU kernel (adamw_update in ops/optim.h) does.
//
// Sparse AdamW (the SIFT step) is bound by its scattered weight writes, not by the streams: every
// selected entry writes 2 bytes of a bf16 weight into a sector of its own (at 5% the entries are
// 40 bytes apart), which L2 has to merge with the sector's old bytes. The kernel is laid out
// around the scatter: a chunk of kChunk entries is two rounds of kRound, and in a round thread t
// owns entries t, t + 256, t + 512, t + 768, so that each warp-wide store writes 32 consecutive
// entries (as few 128-byte lines as the selection allows: 10 at 5%, where 32-40 lines per store
// when every lane owned 4 consecutive entries), and each warp-wide load of g, m, v, master and idx
// is one fully used 128-byte line (any 4-byte alignment: no vector path, no heads or tails). All
// 5 x 4 loads of a round are issued before any arithmetic; the update is straight-line code; the
// streams use evict-first cache hints (read and written once per step) so that L2 keeps the
// partially written weight lines; the kernel is compiled per (weight, index) dtype pair (no
// per-chunk dtype switch) and fits 64 registers (4 blocks of 256 threads per SM).
#include <cstdlib>

#include "common.cuh"
#include "optim.h"
#include "optim_plan.h"

namespace sift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 4 * 2;  // dense: each thread does two groups of 4 elements per chunk
constexpr int kPer = 4;                   // sparse: entries per thread per round (all loads in flight at once)
constexpr int kRound = kThreads * kPer;   // sparse: a chunk is two rounds
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
  o[0] = q.x;
  o[1] = q.y;
  o[2] = q.z;
  o[3] = q.w;
}
__device__ __forceinline__ void load4(const double* p, float* o) {
  double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
  o[0] = float(a.x);
  o[1] = float(a.y);
  o[2] = float(b.x);
  o[3] = float(b.y);
}
__device__ __forceinline__ void load4(const __half* p, float* o) {
  uint2 u = *reinterpret_cast<const uint2*>(p);
  float2 a = __half22float2(*reinterpret_cast<__half2*>(&u.x));
  float2 b = __half22float2(*reinterpret_cast<__half2*>(&u.y));
  o[0] = a.x;
  o[1] = a.y;
  o[2] = b.x;
  o[3] = b.y;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float* o) {
  uint2 u = *reinterpret_cast<const uint2*>(p);
  float2 a = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u.x));
  float2 b = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u.y));
  o[0] = a.x;
  o[1] = a.y;
  o[2] = b.x;
  o[3] = b.y;
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
// Weight and index dtypes are runtime values per tensor (uniform within a block, so no divergence).
template <typename F>
__device__ __forceinline__ void dispatch_w(uint8_t dt, F&& f) {
  switch (DType(dt)) {
    case DType::F32:
      f(float{});
      break;
    case DType::F16:
      f(__half{});
      break;
    case DType::BF16:
      f(__nv_bfloat16{});
      break;
    default:
      f(double{});
      break;
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
  uint8_t wdt, idt;
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

// The tensor that owns virtual block c (optim_plan.h).
template <typename D, int N>
__device__ __forceinline__ int find_tensor(const MultiArgs<D, N>& a, int c) {
  return optim_plan::chunk_owner(a.chunk_start, a.n, c);
}

// Streaming (evict-first) loads and stores: each per-entry array is read once and written once per
// step, so they should not push the partially written weight lines out of L2.
__device__ __forceinline__ float ld_stream(const float* p) { return __ldcs(p); }
__device__ __forceinline__ int32_t ld_stream(const int32_t* p) { return __ldcs(reinterpret_cast<const int*>(p)); }
__device__ __forceinline__ int64_t ld_stream(const int64_t* p) {
  return int64_t(__ldcs(reinterpret_cast<const long long*>(p)));
}
__device__ __forceinline__ void st_stream(float* p, float x) { __stcs(p, x); }

// One round over entries [lo, lo + n) of one tensor, 0 < n <= kRound (n == kRound when Full):
// thread t owns entries lo + r * kThreads + t (r < kPer). All offsets inside the round are 32-bit;
// lo is 64-bit.
// Prefetch (setCudaSparseAdamW('prefetch')): once the round's loads are issued, each entry's
// weight sector is fetched into L2 (prefetch.global.L2, no register, no wait), so that the DRAM read
// a partial-sector write needs happens in the kernel's ascending index order, early, instead of at
// the L2 eviction of a partially written sector; the store then merges into a whole sector.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

template <typename W, typename I, bool Full, bool Prefetch>
__device__ __forceinline__ void sparse_round(const SparseDesc& d, int64_t lo, int n, const AdamWScalars& s, float sc,
                                             int* err) {
  // Per-thread bases; entry r of the thread is at [r * kThreads]: a constant offset, so the loads and
  // stores share 5 base registers instead of holding one address each.
  const int t = int(threadIdx.x);
  const I* idx = static_cast<const I*>(d.idx) + lo + t;
  const float* g = d.g + lo + t;
  float* m = d.m + lo + t;
  float* v = d.v + lo + t;
  float* p = d.p + lo + t;
  W* w = static_cast<W*>(d.w);
  const uint64_t numel = uint64_t(d.numel);
  const int nt = n - t;  // entry r of the thread exists iff r * kThreads < nt
  float gr[kPer], mr[kPer], vr[kPer], pr[kPer];
  I jr[kPer];
  // Every load first (none depends on another: 5 x kPer in flight), then the arithmetic and stores.
#pragma unroll
  for (int r = 0; r < kPer; r++) {
    if (Full || r * kThreads < nt) {
      jr[r] = ld_stream(idx + r * kThreads);
      gr[r] = ld_stream(g + r * kThreads);
      mr[r] = ld_stream(m + r * kThreads);
      vr[r] = ld_stream(v + r * kThreads);
      pr[r] = ld_stream(p + r * kThreads);
    }
  }
  if constexpr (Prefetch) {
#pragma unroll
    for (int r = 0; r < kPer; r++)
      if ((Full || r * kThreads < nt) && uint64_t(int64_t(jr[r])) < numel) prefetch_l2(w + int64_t(jr[r]));
  }
  bool bad = false;
#pragma unroll
  for (int r = 0; r < kPer; r++) {
    if (Full || r * kThreads < nt) {
      // Straight-line code (no branch per entry): the update is computed in any case; an index
      // that is negative or past the end leaves the entry's state as it was (its old values are
      // stored back) and its weight unwritten.
      const int64_t j = int64_t(jr[r]);
      const bool ok = uint64_t(j) < numel;
      float mm = mr[r], vv = vr[r];
      const float x = adamw_elem(__fmul_rn(gr[r], sc), mm, vv, pr[r], s);
      st_stream(m + r * kThreads, ok ? mm : mr[r]);
      st_stream(v + r * kThreads, ok ? vv : vr[r]);
      st_stream(p + r * kThreads, ok ? x : pr[r]);
      if (ok)
        w[j] = convert<W>(x);
      else
        bad = true;
    }
  }
  if (bad) atomicOr(err, 1);
}

// Compiled per (weight dtype, index dtype): the launcher groups the tensors by that pair.
template <typename W, typename I, int N, bool Prefetch>
__global__ void __launch_bounds__(kThreads, 4) sparse_adamw_kernel(const __grid_constant__ MultiArgs<SparseDesc, N> a) {
  const float sc = a.scale ? *a.scale : 1.0f;
  const int total = a.chunk_start[a.n];
  for (int c = blockIdx.x; c < total; c += gridDim.x) {
    const int t = find_tensor(a, c);
    const SparseDesc& d = a.d[t];
    const int64_t lo = int64_t(c - a.chunk_start[t]) * kChunk;
    const int64_t rest = d.k - lo;  // > 0: chunk c lies inside tensor t
    if (rest >= kChunk) {           // uniform over the block
      sparse_round<W, I, true, Prefetch>(d, lo, kRound, a.s, sc, a.err);
      sparse_round<W, I, true, Prefetch>(d, lo + kRound, kRound, a.s, sc, a.err);
    } else {
      const int n = int(rest);  // < kChunk
      for (int o = 0; o < n; o += kRound)
        sparse_round<W, I, false, Prefetch>(d, lo + o, min(n - o, kRound), a.s, sc, a.err);
    }
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
      if (d.master)
        load4(d.master + i, x);
      else
        load4(p + i, x);
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
int64_t chunks_of(int64_t n) { return optim_plan::chunks_of(n, kChunk); }

template <int N, typename D, typename Kernel>
void launch_group(Kernel kernel, const std::vector<D>& ds, const std::vector<int64_t>& chunks, size_t b, size_t e,
                  const AdamWScalars& s, const float* scale, int* err, cudaStream_t st) {
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
  const unsigned grid = total < kMaxGrid ? total : kMaxGrid;
  kernel<<<grid, kThreads, 0, st>>>(a);
}

// Chunks per launch: the kernels' chunk counter c (an int) steps by up to kMaxGrid past the total.
constexpr int64_t kMaxChunks = int64_t(INT32_MAX) - kMaxGrid;

// Splits the descriptors into launches of at most kLargeGroup tensors and kMaxChunks chunks.
template <typename D, typename KSmall, typename KLarge>
void launch_all(const std::vector<D>& ds, const std::vector<int64_t>& chunks, KSmall small, KLarge large,
                const AdamWScalars& s, const float* scale, int* err, cudaStream_t st, const char* what) {
  const std::vector<optim_plan::Launch> plan = optim_plan::plan_launches(chunks, size_t(kLargeGroup), kMaxChunks);
  SIFT_CHECK(!plan.empty(), "E_SHAPE", what, ": a tensor is too large for one launch");
  for (const optim_plan::Launch& l : plan) {
    if (l.e - l.b <= size_t(kSmallGroup))
      launch_group<kSmallGroup>(small, ds, chunks, l.b, l.e, s, scale, err, st);
    else
      launch_group<kLargeGroup>(large, ds, chunks, l.b, l.e, s, scale, err, st);
    check_last_error(what);
  }
}

}  // namespace

void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                  const std::vector<Tensor>& masters, const AdamWScalars& s, const Tensor& scale, bool prefetch) {
  // Descriptors grouped by (weight dtype, index dtype), each group in the order given; one launch
  // (or more, see launch_all) per group present. Tensors are independent, so the order of the
  // groups does not matter.
  struct Group {
    DType wdt, idt;
    std::vector<SparseDesc> ds;
    std::vector<int64_t> chunks;
  };
  std::vector<Group> groups;
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
    Group* gp = nullptr;
    for (Group& x : groups)
      if (x.wdt == weights[t].dtype && x.idt == indices[t].dtype) gp = &x;
    if (!gp) {
      groups.push_back(Group{weights[t].dtype, indices[t].dtype, {}, {}});
      gp = &groups.back();
    }
    gp->ds.push_back(d);
    gp->chunks.push_back(chunks_of(k));
  }
  if (groups.empty()) return;
  const float* sc = scale.defined() ? scale.data<float>() : nullptr;
  int* err = error_flag(dev);
  cudaStream_t st = current_stream(dev);
  for (const Group& gr : groups) {
    dispatch_cuda_float(gr.wdt, "sparseAdamW", [&](auto wt) {
      using W = typename decltype(wt)::type;
      dispatch_cuda_int(gr.idt, "sparseAdamW", [&](auto it) {
        using I = typename decltype(it)::type;
        if (prefetch)
          launch_all(gr.ds, gr.chunks, sparse_adamw_kernel<W, I, kSmallGroup, true>,
                     sparse_adamw_kernel<W, I, kLargeGroup, true>, s, sc, err, st, "sparseAdamW");
        else
          launch_all(gr.ds, gr.chunks, sparse_adamw_kernel<W, I, kSmallGroup, false>,
                     sparse_adamw_kernel<W, I, kLargeGroup, false>, s, sc, err, st, "sparseAdamW");
      });
    });
  }
}

void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
           const std::vector<Tensor>& v, const std::vector<Tensor>& masters, const AdamWScalars& s,
           const Tensor& scale) {
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
    d.vec = aligned4(d.p, params[t].dtype) && aligned4(d.g, grads[t].dtype) && aligned16(d.m) && aligned16(d.v) &&
            (d.master == nullptr || aligned16(d.master));
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
