// CUDA quantization kernels: the same float arithmetic as native/cpu/quant.cpp (IEEE division,
// round-to-nearest-even), so codes and dequantized values match the CPU backend.
#include "common.cuh"
#include "quant.h"
#include "../core/quant_tables.h"

namespace sift::cuda {
namespace {

__constant__ float c_nf4[16] = {SIFT_NF4_CODE_VALUES};
__constant__ float c_dynamic[256] = {SIFT_DYNAMIC_MAP_VALUES};
constexpr int kThreads = 256;
constexpr long long kNf4Block = 64;
constexpr long long kAbsmaxBlock = 256;

__device__ __forceinline__ unsigned char nf4_code(float x) {
  unsigned char c = 0;
#pragma unroll
  for (int i = 1; i < 16; i++) {
    float mid = (c_nf4[i - 1] + c_nf4[i]) * 0.5f;
    if (x > mid) c = (unsigned char)i;
  }
  return c;
}

__device__ __forceinline__ unsigned char dynamic_code(float x) {
  int lo = 0, hi = 255;
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (c_dynamic[mid] <= x)
      lo = mid;
    else
      hi = mid;
  }
  return (unsigned char)(fabsf(x - c_dynamic[lo]) <= fabsf(c_dynamic[hi] - x) ? lo : hi);
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (blockDim.x >> 5) ? shared[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  v = shared[0];
  __syncthreads();
  return v;
}

// One block per row.
template <typename T>
__global__ void quantize_int8_kernel(const T* w, signed char* q, float* absmax, long long C) {
  __shared__ float shared[32];
  const long long r = blockIdx.x;
  const T* row = w + r * C;
  float m = 0.f;
  for (long long c = threadIdx.x; c < C; c += blockDim.x) m = fmaxf(m, fabsf(to_f32(row[c])));
  m = block_max(m, shared);
  if (threadIdx.x == 0) absmax[r] = m;
  const float inv = m > 0.f ? 127.0f / m : 0.f;
  for (long long c = threadIdx.x; c < C; c += blockDim.x) {
    float v = rintf(to_f32(row[c]) * inv);
    q[r * C + c] = (signed char)fminf(127.f, fmaxf(-127.f, v));
  }
}

__global__ void dequantize_int8_kernel(const signed char* q, const float* absmax, long long r0, long long rows,
                                       long long C, float* out) {
  const long long n = rows * C;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / C;
    out[i] = float(q[(r0 + r) * C + (i - r * C)]) * (absmax[r0 + r] / 127.0f);
  }
}

// One warp per block of 64 elements: lane l codes elements 2l and 2l + 1 into byte l.
template <typename T>
__global__ void quantize_nf4_kernel(const T* w, long long n, unsigned char* packed, float* amax, long long nb) {
  const long long blk = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (blk >= nb) return;  // whole warps leave together (nb blocks, 32 lanes each)
  const long long i = blk * kNf4Block + 2 * lane;
  const float a = i < n ? to_f32(w[i]) : 0.f;
  const float b = i + 1 < n ? to_f32(w[i + 1]) : 0.f;
  float m = fmaxf(fabsf(a), fabsf(b));
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) amax[blk] = m;
  const float inv = m > 0.f ? 1.0f / m : 0.f;
  if (i < n) {
    unsigned char hi = nf4_code(a * inv);
    unsigned char lo = i + 1 < n ? nf4_code(b * inv) : 0;
    packed[i / 2] = (unsigned char)((hi << 4) | lo);
  }
}

// One block: the mean of the block absmax values (f64 partial sums, fixed order).
__global__ void mean_kernel(const float* amax, long long nb, float* offset) {
  __shared__ double partial[kThreads];
  double s = 0.0;
  for (long long i = threadIdx.x; i < nb; i += blockDim.x) s += amax[i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) partial[threadIdx.x] += partial[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) offset[0] = float(partial[0] / double(nb));
}

// One block of 256 threads per 256 absmax values.
__global__ void quantize_absmax_kernel(const float* amax, long long nb, const float* offset, unsigned char* aq,
                                       float* ascale) {
  __shared__ float shared[32];
  const long long i = blockIdx.x * kAbsmaxBlock + threadIdx.x;
  const float mean = offset[0];
  const float v = i < nb ? amax[i] - mean : 0.f;
  const float m = block_max(fabsf(v), shared);
  if (threadIdx.x == 0) ascale[blockIdx.x] = m;
  const float inv = m > 0.f ? 1.0f / m : 0.f;
  if (i < nb) aq[i] = dynamic_code(v * inv);
}

__global__ void dequantize_nf4_kernel(const unsigned char* packed, const unsigned char* aq, const float* ascale,
                                      const float* offset, long long cols, long long r0, long long rows, float* out) {
  const long long n = rows * cols, base = r0 * cols;
  const float mean = offset[0];
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < n; j += (long long)gridDim.x * blockDim.x) {
    const long long i = base + j, blk = i / kNf4Block;
    const float m = c_dynamic[aq[blk]] * ascale[blk / kAbsmaxBlock] + mean;
    const unsigned char byte = packed[i / 2];
    out[j] = c_nf4[(i & 1) ? (byte & 0x0F) : (byte >> 4)] * m;
  }
}

template <typename I>
__global__ void set_sparse_entries_kernel(float* tile, long long n, const I* idx, long long k, const float* vals,
                                          long long lo) {
  for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < k; j += (long long)gridDim.x * blockDim.x) {
    const long long i = (long long)idx[j] - lo;
    if (i >= 0 && i < n) tile[i] = vals[j];
  }
}

// ---- the quantized GEMM with the weight dequantized inside the tiles (no dense weight in memory)

constexpr int kGemmBM = 64, kGemmBN = 64, kGemmBK = 16;

// The dequantized weight entry at flat index i (row r): the same arithmetic as the dequantize
// kernels above, so the fused product reads the values the tiled path reads.
__device__ __forceinline__ float deq_entry(const unsigned char* codes, const unsigned char* aq, const float* scale,
                                           const float* offset, bool nf4, long long i, long long r) {
  if (!nf4) return float(static_cast<const signed char*>(static_cast<const void*>(codes))[i]) * (scale[r] / 127.0f);
  const long long blk = i / kNf4Block;
  const float m = c_dynamic[aq[blk]] * scale[blk / kAbsmaxBlock] + offset[0];
  const unsigned char byte = codes[i / 2];
  return c_nf4[(i & 1) ? (byte & 0x0F) : (byte >> 4)] * m;
}

// First position j in idx[0, k) with idx[j] >= v (idx sorted; 32- or 64-bit).
__device__ __forceinline__ long long lower_bound_idx(const void* idx, bool i64, long long k, long long v) {
  long long lo = 0, hi = k;
  while (lo < hi) {
    const long long mid = (lo + hi) >> 1;
    const long long x = i64 ? static_cast<const long long*>(idx)[mid] : (long long)static_cast<const int*>(idx)[mid];
    if (x < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

__device__ __forceinline__ long long idx_at(const void* idx, bool i64, long long j) {
  return i64 ? static_cast<const long long*>(idx)[j] : (long long)static_cast<const int*>(idx)[j];
}

// transpose = false: y [M, rows] = x [M, cols] deq(W)^T; true: y [M, cols] = x [M, rows] deq(W).
// A block computes a 64 x 64 tile of y, 4 x 4 per thread; each step stages a 64 x 16 slab of x and
// the matching 16 x 64 slab of W, dequantized into shared memory, with the trained entries that
// fall in it written over their dequantized values.
__global__ void __launch_bounds__(256)
    quant_gemm_kernel(const float* x, const unsigned char* codes, const unsigned char* aq, const float* scale,
                      const float* offset, bool nf4, long long rows, long long cols, bool transpose, const void* idx,
                      bool i64, long long k, const float* vals, long long M, float* y) {
  __shared__ float xs[kGemmBK][kGemmBM];
  __shared__ float ws[kGemmBK][kGemmBN + 1];
  const long long K = transpose ? rows : cols, N = transpose ? cols : rows;
  const long long m0 = (long long)blockIdx.y * kGemmBM, n0 = (long long)blockIdx.x * kGemmBN;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4] = {};
  for (long long k0 = 0; k0 < K; k0 += kGemmBK) {
    for (int e = tid; e < kGemmBM * kGemmBK; e += 256) {
      const int mm = e / kGemmBK, kk = e % kGemmBK;
      const long long gm = m0 + mm, gk = k0 + kk;
      xs[kk][mm] = (gm < M && gk < K) ? x[gm * K + gk] : 0.f;
    }
    for (int e = tid; e < kGemmBN * kGemmBK; e += 256) {
      // Consecutive threads read consecutive weight entries: along a row of W.
      int nn, kk;
      if (transpose) {
        kk = e / kGemmBN;
        nn = e % kGemmBN;
      } else {
        nn = e / kGemmBK;
        kk = e % kGemmBK;
      }
      const long long gn = n0 + nn, gk = k0 + kk;
      const long long r = transpose ? gk : gn, c = transpose ? gn : gk;
      ws[kk][nn] = (gn < N && gk < K) ? deq_entry(codes, aq, scale, offset, nf4, r * cols + c, r) : 0.f;
    }
    if (k > 0) {
      __syncthreads();
      // One weight row segment per thread: rows n0.. (forward, 16 columns each) or k0.. (transpose,
      // 64 columns each); the trained entries in it are one run of the sorted indices.
      const int segs = transpose ? kGemmBK : kGemmBN, len = transpose ? kGemmBN : kGemmBK;
      if (tid < segs) {
        const long long r = transpose ? k0 + tid : n0 + tid;
        const long long c0 = transpose ? n0 : k0;
        if (r < rows && c0 < cols) {
          const long long lo = r * cols + c0, hi = r * cols + min(cols, c0 + len);
          for (long long j = lower_bound_idx(idx, i64, k, lo); j < k; j++) {
            const long long f = idx_at(idx, i64, j);
            if (f >= hi) break;
            const int off = int(f - lo);
            if (transpose)
              ws[tid][off] = vals[j];
            else
              ws[off][tid] = vals[j];
          }
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmBK; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = xs[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = ws[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const long long gm = m0 + ty * 4 + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const long long gn = n0 + tx * 4 + j;
      if (gn < N) y[gm * N + gn] = acc[i][j];
    }
  }
}

}  // namespace

void quantize_int8(const Tensor& w, const Tensor& q, const Tensor& absmax) {
  const long long R = w.size(0), C = w.size(1);
  cudaStream_t st = current_stream(dev_of(w));
  dispatch_cuda_float(w.dtype, "quantize", [&](auto tt) {
    using T = typename decltype(tt)::type;
    quantize_int8_kernel<T>
        <<<unsigned(R), kThreads, 0, st>>>(w.data<T>(), static_cast<signed char*>(q.raw()), absmax.data<float>(), C);
  });
  check_last_error("quantize(int8)");
}

void dequantize_int8_rows(const Tensor& q, const Tensor& absmax, int64_t r0, const Tensor& out) {
  const long long rows = out.size(0), C = out.size(1);
  cudaStream_t st = current_stream(dev_of(q));
  dequantize_int8_kernel<<<grid_for(rows * C, kThreads), kThreads, 0, st>>>(
      static_cast<const signed char*>(q.raw()), absmax.data<float>(), r0, rows, C, out.data<float>());
  check_last_error("dequantize(int8)");
}

void quantize_nf4(const Tensor& w, const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale,
                  const Tensor& offset) {
  const long long n = w.numel(), nb = (n + kNf4Block - 1) / kNf4Block;
  const long long nb2 = (nb + kAbsmaxBlock - 1) / kAbsmaxBlock;
  const int dev = dev_of(w);
  cudaStream_t st = current_stream(dev);
  Tensor amax = empty({nb}, DType::F32, w.device());
  const long long warps_per_block = kThreads / 32;
  dispatch_cuda_float(w.dtype, "quantize", [&](auto tt) {
    using T = typename decltype(tt)::type;
    quantize_nf4_kernel<T><<<unsigned((nb + warps_per_block - 1) / warps_per_block), kThreads, 0, st>>>(
        w.data<T>(), n, static_cast<unsigned char*>(packed.raw()), amax.data<float>(), nb);
  });
  mean_kernel<<<1, kThreads, 0, st>>>(amax.data<float>(), nb, offset.data<float>());
  quantize_absmax_kernel<<<unsigned(nb2), kThreads, 0, st>>>(amax.data<float>(), nb, offset.data<float>(),
                                                             static_cast<unsigned char*>(absmax_q.raw()),
                                                             absmax_scale.data<float>());
  check_last_error("quantize(nf4)");
  // amax goes back to the caching allocator here; its block is reused only by work queued later on
  // this stream, after the kernels above.
}

void dequantize_nf4_rows(const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale, const Tensor& offset,
                         int64_t cols, int64_t r0, const Tensor& out) {
  const long long rows = out.size(0);
  cudaStream_t st = current_stream(dev_of(packed));
  dequantize_nf4_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, st>>>(
      static_cast<const unsigned char*>(packed.raw()), static_cast<const unsigned char*>(absmax_q.raw()),
      absmax_scale.data<float>(), offset.data<float>(), cols, r0, rows, out.data<float>());
  check_last_error("dequantize(nf4)");
}

void set_sparse_entries(const Tensor& tile, const Tensor& idx, const Tensor& vals, int64_t lo) {
  const long long n = tile.numel(), k = idx.numel();
  if (k == 0) return;
  cudaStream_t st = current_stream(dev_of(tile));
  // Every index is tested against the tile: k is a small fraction of the weight, and the tiles of
  // one weight are few, so no search (which would read the indices back) is needed.
  if (idx.dtype == DType::I64) {
    set_sparse_entries_kernel<<<grid_for(k, kThreads), kThreads, 0, st>>>(tile.data<float>(), n, idx.data<int64_t>(), k,
                                                                          vals.data<float>(), lo);
  } else {
    set_sparse_entries_kernel<<<grid_for(k, kThreads), kThreads, 0, st>>>(tile.data<float>(), n, idx.data<int32_t>(), k,
                                                                          vals.data<float>(), lo);
  }
  check_last_error("quantLinear(trained entries)");
}

void quant_gemm(const Tensor& x, const std::vector<Tensor>& s, bool nf4, int64_t rows, int64_t cols, bool transpose,
                const Tensor& idx, const Tensor& vals, const Tensor& y) {
  const long long M = x.size(0), N = transpose ? cols : rows;
  if (M == 0) return;
  cudaStream_t st = current_stream(dev_of(x));
  const bool has = idx.defined() && idx.numel() > 0;
  const dim3 grid(unsigned((N + kGemmBN - 1) / kGemmBN), unsigned((M + kGemmBM - 1) / kGemmBM));
  quant_gemm_kernel<<<grid, 256, 0, st>>>(
      x.data<float>(), static_cast<const unsigned char*>(s[0].raw()),
      nf4 ? static_cast<const unsigned char*>(s[1].raw()) : nullptr, nf4 ? s[2].data<float>() : s[1].data<float>(),
      nf4 ? s[3].data<float>() : nullptr, nf4, rows, cols, transpose, has ? idx.raw() : nullptr,
      has && idx.dtype == DType::I64, has ? idx.numel() : 0, has ? vals.data<float>() : nullptr, M, y.data<float>());
  check_last_error("quantLinear(fused)");
}

}  // namespace sift::cuda
