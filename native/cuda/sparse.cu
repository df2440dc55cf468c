// CUDA kernels for SIFT's sparse data: selection scores, gathers / scatters through flat indices
// (strided tensors through StridedIndexer), and sums of squares. The sums are deterministic:
// every block reduces a fixed slab to one double partial, then one block adds the partials in a
// fixed order; no float atomics, no host synchronisation.
#include <cub/cub.cuh>

#include <algorithm>

#include "common.cuh"
#include "sparse.h"

namespace sift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr long long kSlab = 16384;  // elements reduced by one block
constexpr int kFinalThreads = 1024;
constexpr int kBatch = 48;  // tensors per sum-of-squares launch (kernel parameter space)

template <typename T>
__device__ __forceinline__ double to_double(T v) {
  return double(to_f32(v));
}
template <>
__device__ __forceinline__ double to_double<double>(double v) {
  return v;
}

template <typename T>
__device__ __forceinline__ float bits_to_f32(unsigned short b);
template <>
__device__ __forceinline__ float bits_to_f32<__half>(unsigned short b) {
  return __half2float(__ushort_as_half(b));
}
template <>
__device__ __forceinline__ float bits_to_f32<__nv_bfloat16>(unsigned short b) {
  return __bfloat162float(__ushort_as_bfloat16(b));
}
template <typename T>
__device__ __forceinline__ unsigned short f32_to_bits(float f);
template <>
__device__ __forceinline__ unsigned short f32_to_bits<__half>(float f) {
  return __half_as_ushort(__float2half_rn(f));
}
template <>
__device__ __forceinline__ unsigned short f32_to_bits<__nv_bfloat16>(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// *p += v with a single rounding to T (as the CPU does), atomically: 16-bit types via a CAS on
// the enclosing 32-bit word.
template <typename T>
__device__ __forceinline__ void atomic_add_round(T* p, float v) {
  if constexpr (std::is_same_v<T, float>) {
    atomicAdd(p, v);
  } else if constexpr (std::is_same_v<T, double>) {
    atomicAdd(p, double(v));
  } else {
    const size_t a = reinterpret_cast<size_t>(p);
    unsigned int* word = reinterpret_cast<unsigned int*>(a & ~size_t(3));
    const bool hi = (a & 2) != 0;
    unsigned int old = *word, assumed;
    do {
      assumed = old;
      unsigned short cur = hi ? (unsigned short)(assumed >> 16) : (unsigned short)(assumed & 0xffffu);
      unsigned short nb = f32_to_bits<T>(bits_to_f32<T>(cur) + v);
      unsigned int repl = hi ? ((assumed & 0x0000ffffu) | (unsigned(nb) << 16)) : ((assumed & 0xffff0000u) | nb);
      old = atomicCAS(word, assumed, repl);
    } while (old != assumed);
  }
}

template <typename T>
__global__ void score_kernel(float* __restrict__ d, const T* __restrict__ s, long long n, bool square, bool acc) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float v = to_f32(s[i]);
    float sc = square ? v * v : fabsf(v);
    d[i] = acc ? d[i] + sc : sc;
  }
}

template <typename T, typename I>
__global__ void gather_kernel(float* __restrict__ d, const T* __restrict__ s, const I* __restrict__ idx, long long k,
                              long long n, StridedIndexer<1> ix, bool contig, bool acc, int* err) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < k; i += (long long)gridDim.x * blockDim.x) {
    long long j = (long long)idx[i];
    if (j < 0 || j >= n) {
      atomicOr(err, 1);
      continue;
    }
    long long off = j;
    if (!contig) {
      int64_t o[1];
      ix.offsets(j, o);
      off = o[0];
    }
    float v = to_f32(s[off]);
    d[i] = acc ? d[i] + v : v;
  }
}

template <typename T, typename I>
__global__ void scatter_kernel(T* d, const I* __restrict__ idx, const float* __restrict__ v, long long k, long long n,
                               StridedIndexer<1> ix, bool contig, bool add, int* err) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < k; i += (long long)gridDim.x * blockDim.x) {
    long long j = (long long)idx[i];
    if (j < 0 || j >= n) {
      atomicOr(err, 1);
      continue;
    }
    long long off = j;
    if (!contig) {
      int64_t o[1];
      ix.offsets(j, o);
      off = o[0];
    }
    if (add)
      atomic_add_round(d + off, v[i]);
    else
      d[off] = from_f32<T>(v[i]);
  }
}

__device__ __forceinline__ double block_sum(double v) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  return Reduce(tmp).Sum(v);
}

// Blocks [0, dense_blocks): squares of the slab of grad; the rest: squares of grad[idx] for a
// slab of the indices. One partial per block.
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    grad_prop_kernel(const T* __restrict__ g, long long n, const I* __restrict__ idx, long long k,
                     long long dense_blocks, double* part, int* err) {
  double acc = 0;
  if (blockIdx.x < dense_blocks) {
    long long lo = blockIdx.x * kSlab, hi = min(n, lo + kSlab);
    for (long long i = lo + threadIdx.x; i < hi; i += kThreads) {
      double v = to_double(g[i]);
      acc += v * v;
    }
  } else {
    long long lo = (blockIdx.x - dense_blocks) * kSlab, hi = min(k, lo + kSlab);
    for (long long i = lo + threadIdx.x; i < hi; i += kThreads) {
      long long j = (long long)idx[i];
      if (j < 0 || j >= n) {
        atomicOr(err, 1);
        continue;
      }
      double v = to_double(g[j]);
      acc += v * v;
    }
  }
  double s = block_sum(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// *out0 = sum of part[0, n0); *out1 (if given) = sum of part[n0, n0 + n1). One block.
__global__ void __launch_bounds__(kFinalThreads)
    final_sum_kernel(const double* part, long long n0, long long n1, float* out0, float* out1) {
  using Reduce = cub::BlockReduce<double, kFinalThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  double a = 0;
  for (long long i = threadIdx.x; i < n0; i += kFinalThreads) a += part[i];
  double s0 = Reduce(tmp).Sum(a);
  if (threadIdx.x == 0) *out0 = float(s0);
  if (out1) {
    __syncthreads();
    double b = 0;
    for (long long i = threadIdx.x; i < n1; i += kFinalThreads) b += part[n0 + i];
    double s1 = Reduce(tmp).Sum(b);
    if (threadIdx.x == 0) *out1 = float(s1);
  }
}

struct SumSqBatch {
  const void* ptr[kBatch];
  long long numel[kBatch];
  long long block_begin[kBatch];
  int dtype[kBatch];
  int n;
};

// The same sum as the plain loop (each thread adds x[lo + t], x[lo + t + 256], ... in that order,
// so the result is bit-identical) with 8 loads explicitly in flight per thread ahead of the
// dependent chain of adds, rather than relying on the compiler to hoist them. The slab is at most
// kSlab elements, so offsets inside it are 32-bit.
template <typename T>
__device__ __forceinline__ double slab_sumsq(const void* p, long long lo, long long hi) {
  constexpr int kU = 8;
  const T* x = static_cast<const T*>(p) + lo;
  const int n = int(hi - lo);
  double acc = 0;
  int i = int(threadIdx.x);
  for (; i + (kU - 1) * kThreads < n; i += kU * kThreads) {
    T q[kU];
#pragma unroll
    for (int u = 0; u < kU; u++) q[u] = x[i + u * kThreads];
#pragma unroll
    for (int u = 0; u < kU; u++) {
      double v = to_double(q[u]);
      acc += v * v;
    }
  }
  for (; i < n; i += kThreads) {
    double v = to_double(x[i]);
    acc += v * v;
  }
  return acc;
}

// One block per slab of each tensor of the batch; the tensor is found with static indices only
// so that the batch stays in parameter space.
__global__ void __launch_bounds__(kThreads) sumsq_multi_kernel(SumSqBatch b, double* part) {
  const long long blk = blockIdx.x;
  int sel = 0;
#pragma unroll
  for (int j = 1; j < kBatch; j++)
    if (j < b.n && b.block_begin[j] <= blk) sel = j;
  const void* p = nullptr;
  long long n = 0, bb = 0;
  int dt = 0;
#pragma unroll
  for (int j = 0; j < kBatch; j++)
    if (j == sel) {
      p = b.ptr[j];
      n = b.numel[j];
      bb = b.block_begin[j];
      dt = b.dtype[j];
    }
  const long long lo = (blk - bb) * kSlab, hi = min(n, lo + kSlab);
  double acc = 0;
  switch (dt) {
    case int(DType::F32):
      acc = slab_sumsq<float>(p, lo, hi);
      break;
    case int(DType::F16):
      acc = slab_sumsq<__half>(p, lo, hi);
      break;
    case int(DType::BF16):
      acc = slab_sumsq<__nv_bfloat16>(p, lo, hi);
      break;
    case int(DType::F64):
      acc = slab_sumsq<double>(p, lo, hi);
      break;
    default:
      break;
  }
  double s = block_sum(acc);
  if (threadIdx.x == 0) part[blk] = s;
}

long long slabs(long long n) { return (n + kSlab - 1) / kSlab; }

}  // namespace

void score_accumulate(const Tensor& dst, const Tensor& src, bool square, bool accumulate) {
  const long long n = src.numel();
  if (n == 0) return;
  cudaStream_t st = current_stream(dev_of(dst));
  dispatch_cuda_float(src.dtype, "scoreAccumulate", [&](auto tt) {
    using T = typename decltype(tt)::type;
    score_kernel<T>
        <<<grid_for(n, kThreads), kThreads, 0, st>>>(dst.data<float>(), src.data<T>(), n, square, accumulate);
  });
  check_last_error("scoreAccumulate");
}

void gather_into(const Tensor& dst, const Tensor& src, const Tensor& idx, bool accumulate) {
  const long long k = idx.numel();
  if (k == 0) return;
  const int dev = dev_of(dst);
  cudaStream_t st = current_stream(dev);
  const bool contig = src.is_contiguous();
  StridedIndexer<1> ix{};
  if (!contig) {
    const Shape* strides[1] = {&src.strides};
    ix = make_indexer<1>(src.shape, strides);
  }
  int* err = error_flag(dev);
  dispatch_cuda_float(src.dtype, "gatherInto", [&](auto tt) {
    using T = typename decltype(tt)::type;
    dispatch_cuda_int(idx.dtype, "gatherInto", [&](auto it) {
      using I = typename decltype(it)::type;
      gather_kernel<T, I><<<grid_for(k, kThreads), kThreads, 0, st>>>(dst.data<float>(), src.data<T>(), idx.data<I>(),
                                                                      k, src.numel(), ix, contig, accumulate, err);
    });
  });
  check_last_error("gatherInto");
}

void scatter_into(const Tensor& dst, const Tensor& idx, const Tensor& values, bool add) {
  const long long k = idx.numel();
  if (k == 0) return;
  const int dev = dev_of(dst);
  cudaStream_t st = current_stream(dev);
  const bool contig = dst.is_contiguous();
  StridedIndexer<1> ix{};
  if (!contig) {
    const Shape* strides[1] = {&dst.strides};
    ix = make_indexer<1>(dst.shape, strides);
  }
  int* err = error_flag(dev);
  dispatch_cuda_float(dst.dtype, "scatterInto", [&](auto tt) {
    using T = typename decltype(tt)::type;
    dispatch_cuda_int(idx.dtype, "scatterInto", [&](auto it) {
      using I = typename decltype(it)::type;
      scatter_kernel<T, I><<<grid_for(k, kThreads), kThreads, 0, st>>>(
          dst.data<T>(), idx.data<I>(), values.data<float>(), k, dst.numel(), ix, contig, add, err);
    });
  });
  check_last_error("scatterInto");
}

void grad_proportion(const Tensor& out, int64_t slot, const Tensor& grad, const Tensor& idx) {
  const int dev = dev_of(out);
  cudaStream_t st = current_stream(dev);
  const long long n = grad.numel(), k = idx.numel();
  const long long dense_blocks = slabs(n), idx_blocks = slabs(k);
  Tensor part = empty({std::max<int64_t>(1, dense_blocks + idx_blocks)}, DType::F64, out.device());
  int* err = error_flag(dev);
  if (dense_blocks + idx_blocks > 0) {
    dispatch_cuda_float(grad.dtype, "gradProportion", [&](auto tt) {
      using T = typename decltype(tt)::type;
      dispatch_cuda_int(idx.dtype, "gradProportion", [&](auto it) {
        using I = typename decltype(it)::type;
        grad_prop_kernel<T, I><<<unsigned(dense_blocks + idx_blocks), kThreads, 0, st>>>(
            grad.data<T>(), n, idx.data<I>(), k, dense_blocks, part.data<double>(), err);
      });
    });
  }
  float* o = out.data<float>() + 2 * slot;
  final_sum_kernel<<<1, kFinalThreads, 0, st>>>(part.data<double>(), dense_blocks, idx_blocks, o + 1, o);
  check_last_error("gradProportion");
}

void sum_squares(const std::vector<Tensor>& ts, const Tensor& out) {
  const int dev = dev_of(out);
  cudaStream_t st = current_stream(dev);
  long long total_blocks = 0;
  for (const Tensor& t : ts) total_blocks += slabs(t.numel());
  Tensor part = empty({std::max<int64_t>(1, total_blocks)}, DType::F64, out.device());
  double* pp = part.data<double>();
  long long done = 0;
  for (size_t i = 0; i < ts.size(); i += kBatch) {
    SumSqBatch b{};
    b.n = int(std::min<size_t>(kBatch, ts.size() - i));
    long long blocks = 0;
    for (int j = 0; j < b.n; j++) {
      const Tensor& t = ts[i + size_t(j)];
      b.ptr[j] = t.raw();
      b.numel[j] = t.numel();
      b.block_begin[j] = blocks;
      b.dtype[j] = int(t.dtype);
      blocks += slabs(t.numel());
    }
    if (blocks > 0) sumsq_multi_kernel<<<unsigned(blocks), kThreads, 0, st>>>(b, pp + done);
    done += blocks;
  }
  final_sum_kernel<<<1, kFinalThreads, 0, st>>>(pp, total_blocks, 0, out.data<float>(), nullptr);
  check_last_error("sumSquares");
}

}  // namespace sift::cuda
