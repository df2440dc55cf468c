#include "../core/random.h"
#include "common.cuh"
#include "copy.h"

namespace sift::cuda {
namespace {

template <typename D, typename S>
__global__ void copy_contig_kernel(D* __restrict__ d, const S* __restrict__ s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = convert<D>(s[i]);
}

template <typename D, typename S>
__global__ void copy_strided_kernel(D* d, const S* s, int64_t n, StridedIndexer<2> ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    d[off[0]] = convert<D>(s[off[1]]);
  }
}

// Same-dtype strided copy moved as raw 16-byte vectors: ix is over vectors (vectorize_indexer),
// its offsets are in elements of W (the element's bytes as one word), multiples of V.
template <typename W, int V>
__global__ void copy_vec_kernel(W* d, const W* s, int64_t nvec, StridedIndexer<2> ix) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nvec; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    vstore<V>(d + off[0], vload<V, W>(s + off[1]));
  }
}

// Queues the vector copy when dst and src share the dtype, walk their innermost merged dim
// densely (a multiple of 16 bytes) and start 16-byte aligned: a permuted copy such as
// [B, H, T, hd] -> [B, T, H, hd], or one piece of a concatenation. False: not applicable.
bool try_copy_vec(const Tensor& src, const Tensor& dst, int64_t n, const StridedIndexer<2>& ix, cudaStream_t st) {
  if (src.dtype != dst.dtype || !vec_aligned(dst.raw(), 16) || !vec_aligned(src.raw(), 16)) return false;
  auto run = [&](auto wtag) {
    using W = typename decltype(wtag)::type;
    constexpr int V = vec_width(sizeof(W));
    StridedIndexer<2> vix = ix;
    if (!vectorize_indexer<2>(vix, V)) return false;
    const int64_t nvec = n / V;
    copy_vec_kernel<W, V>
        <<<grid_for(nvec, 256), 256, 0, st>>>(static_cast<W*>(dst.raw()), static_cast<const W*>(src.raw()), nvec, vix);
    return true;
  };
  switch (dst.itemsize()) {
    case 1:
      return run(ctype_tag<uint8_t>{});
    case 2:
      return run(ctype_tag<uint16_t>{});
    case 4:
      return run(ctype_tag<uint32_t>{});
    case 8:
      return run(ctype_tag<uint64_t>{});
    default:
      return false;
  }
}

template <typename D>
__global__ void fill_kernel(D* d, int64_t n, D v, StridedIndexer<1> ix, bool contig) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (contig) {
      d[i] = v;
    } else {
      int64_t off[1];
      ix.offsets(i, off);
      d[off[0]] = v;
    }
  }
}

template <typename D>
__global__ void randn_kernel(D* d, int64_t n, uint64_t seed) {
  int64_t pairs = (n + 1) / 2;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < pairs; j += int64_t(gridDim.x) * blockDim.x) {
    double u1 = rng_uniform_open53(seed, 2 * uint64_t(j));
    double u2 = rng_uniform_open53(seed, 2 * uint64_t(j) + 1);
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586 * u2;
    d[2 * j] = convert<D>(r * cos(th));
    if (2 * j + 1 < n) d[2 * j + 1] = convert<D>(r * sin(th));
  }
}

template <typename D>
__global__ void rand_kernel(D* d, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = convert<D>(rng_uniform(seed, uint64_t(i)));
}

template <typename D>
__global__ void arange_kernel(D* d, int64_t n, double start, double step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = convert<D>(__dadd_rn(start, __dmul_rn(step, double(i))));  // no FMA: rounds as the CPU does
}

}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
  int64_t n = dst.numel();
  if (n == 0) return;
  int dev = dev_of(dst);
  cudaStream_t st = current_stream(dev);
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), dst.nbytes(), cudaMemcpyDeviceToDevice, st));
    return;
  }
  const Shape* strides[2] = {&dst.strides, &src.strides};
  auto ix = make_indexer<2>(dst.shape, strides);
  bool contig = src.is_contiguous() && dst.is_contiguous();
  if (!contig && try_copy_vec(src, dst, n, ix, st)) {
    check_last_error("copy");
    return;
  }
  dispatch_cuda_all(dst.dtype, [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_cuda_all(src.dtype, [&](auto s) {
      using S = typename decltype(s)::type;
      if (contig)
        copy_contig_kernel<D, S><<<grid_for(n, 256), 256, 0, st>>>(dst.data<D>(), src.data<S>(), n);
      else
        copy_strided_kernel<D, S><<<grid_for(n, 256), 256, 0, st>>>(dst.data<D>(), src.data<S>(), n, ix);
    });
  });
  check_last_error("copy");
}

void fill(const Tensor& dst, double value) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t st = current_stream(dev_of(dst));
  const Shape* strides[1] = {&dst.strides};
  auto ix = make_indexer<1>(dst.shape, strides);
  dispatch_cuda_all(dst.dtype, [&](auto dt) {
    using D = typename decltype(dt)::type;
    D v;
    if constexpr (std::is_same_v<D, __half>)
      v = __float2half_rn(float(value));
    else if constexpr (std::is_same_v<D, __nv_bfloat16>)
      v = __float2bfloat16_rn(float(value));
    else if constexpr (std::is_same_v<D, uint8_t>)
      v = value != 0.0 ? 1 : 0;
    else
      v = static_cast<D>(value);
    fill_kernel<D><<<grid_for(n, 256), 256, 0, st>>>(dst.data<D>(), n, v, ix, dst.is_contiguous());
  });
  check_last_error("fill");
}

void randn(const Tensor& dst, uint64_t seed) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t st = current_stream(dev_of(dst));
  dispatch_cuda_float(dst.dtype, "randn", [&](auto dt) {
    using D = typename decltype(dt)::type;
    randn_kernel<D><<<grid_for((n + 1) / 2, 256), 256, 0, st>>>(dst.data<D>(), n, seed);
  });
  check_last_error("randn");
}

void rand(const Tensor& dst, uint64_t seed) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t st = current_stream(dev_of(dst));
  dispatch_cuda_float(dst.dtype, "rand", [&](auto dt) {
    using D = typename decltype(dt)::type;
    rand_kernel<D><<<grid_for(n, 256), 256, 0, st>>>(dst.data<D>(), n, seed);
  });
  check_last_error("rand");
}

void arange(const Tensor& dst, double start, double step) {
  int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t st = current_stream(dev_of(dst));
  dispatch_cuda_all(dst.dtype, [&](auto dt) {
    using D = typename decltype(dt)::type;
    arange_kernel<D><<<grid_for(n, 256), 256, 0, st>>>(dst.data<D>(), n, start, step);
  });
  check_last_error("arange");
}

}  // namespace sift::cuda
