// CUDA SDDMM on CUDA cores. One block per non-empty tile of the plan (32 rows of a, 64 of b):
// the tile's columns of a and b are staged in shared memory, 32 tokens at a time, with coalesced
// loads (one token row of the tile is contiguous in memory), and each thread accumulates up to
// four of the tile's entries in f32 registers over all tokens. Each output is written by one
// thread, so repeated indices need no atomics and the result is deterministic.
#include "../core/sddmm_plan.h"
#include "common.cuh"
#include "sddmm.h"

namespace sift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTokens = 32;    // tokens staged per step
constexpr int kPerThread = 4;  // entries per thread per pass over the tokens
constexpr int kRows = int(kSddmmTileRows);
constexpr int kCols = int(kSddmmTileCols);

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    sddmm_tiles(float* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, const I* __restrict__ idx,
                const int64_t* __restrict__ plan, long long tokens, long long m, long long n, long long k,
                long long ntiles, bool accumulate, int* err) {
  __shared__ float sa[kTokens][kRows + 1];
  __shared__ float sb[kTokens][kCols + 1];
  const long long* order = reinterpret_cast<const long long*>(plan) + kSddmmPackedHeader;
  const long long* tiles = order + k;
  const long long tile = blockIdx.x;
  // A plan made for other indices can have this plan's length (k and the tile count trade off
  // against each other): its header, or entry ranges outside [0, k), set the error flag instead of
  // reading past the plan (block-uniform exit, before any barrier).
  if (plan[0] != m || plan[1] != n || plan[2] != k) {
    if (threadIdx.x == 0) atomicOr(err, 1);
    return;
  }
  const long long row0 = tiles[3 * tile], col0 = tiles[3 * tile + 1], begin = tiles[3 * tile + 2];
  const long long end = tile + 1 < ntiles ? tiles[3 * (tile + 1) + 2] : tiles[3 * ntiles];
  if (begin < 0 || end > k || begin > end) {
    if (threadIdx.x == 0) atomicOr(err, 1);
    return;
  }
  const int tid = threadIdx.x;
  for (long long base = begin; base < end; base += (long long)kThreads * kPerThread) {
    long long pos[kPerThread];
    int r[kPerThread], c[kPerThread];
    float acc[kPerThread];
#pragma unroll
    for (int j = 0; j < kPerThread; j++) {
      const long long e = base + (long long)j * kThreads + tid;
      pos[j] = -1;
      acc[j] = 0.f;
      r[j] = c[j] = 0;
      if (e < end) {
        const long long p = order[e];
        const long long f = p >= 0 && p < k ? (long long)idx[p] : -1;
        const long long fr = f >= 0 ? f / n : -1, fc = f >= 0 ? f % n : -1;
        if (f < 0 || f >= m * n || fr < row0 || fr >= row0 + kRows || fc < col0 || fc >= col0 + kCols) {
          atomicOr(err, 1);
        } else {
          pos[j] = p;
          r[j] = int(fr - row0);
          c[j] = int(fc - col0);
        }
      }
    }
    for (long long t0 = 0; t0 < tokens; t0 += kTokens) {
      for (int q = tid; q < kTokens * kRows; q += kThreads) {
        const int tt = q / kRows, rr = q % kRows;
        const long long t = t0 + tt, row = row0 + rr;
        sa[tt][rr] = t < tokens && row < m ? to_f32(a[t * m + row]) : 0.f;
      }
      for (int q = tid; q < kTokens * kCols; q += kThreads) {
        const int tt = q / kCols, cc = q % kCols;
        const long long t = t0 + tt, col = col0 + cc;
        sb[tt][cc] = t < tokens && col < n ? to_f32(b[t * n + col]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kPerThread; j++) {
        if (pos[j] < 0) continue;
        float s = acc[j];
#pragma unroll 8
        for (int tt = 0; tt < kTokens; tt++) s = fmaf(sa[tt][r[j]], sb[tt][c[j]], s);
        acc[j] = s;
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kPerThread; j++)
      if (pos[j] >= 0) out[pos[j]] = accumulate ? out[pos[j]] + acc[j] : acc[j];
  }
}

}  // namespace

void sddmm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& idx, const Tensor& plan,
           bool accumulate) {
  const long long k = out.numel();
  const long long ntiles = sddmm_packed_tiles(plan.numel(), k);
  if (k == 0 || ntiles == 0) return;
  const int dev = dev_of(out);
  cudaStream_t st = current_stream(dev);
  const long long tokens = a.shape[0], m = a.shape[1], n = b.shape[1];
  int* err = error_flag(dev);
  if (tokens == 0) {
    if (!accumulate) CUDA_CHECK(cudaMemsetAsync(out.data<float>(), 0, size_t(k) * sizeof(float), st));
    return;
  }
  dispatch_cuda_float(a.dtype, "sddmm", [&](auto tt) {
    using T = typename decltype(tt)::type;
    dispatch_cuda_int(idx.dtype, "sddmm", [&](auto it) {
      using I = typename decltype(it)::type;
      sddmm_tiles<T, I><<<unsigned(ntiles), kThreads, 0, st>>>(out.data<float>(), a.data<T>(), b.data<T>(),
                                                               idx.data<I>(), plan.data<int64_t>(), tokens, m, n, k,
                                                               ntiles, accumulate, err);
    });
  });
  check_last_error("sddmm");
}

}  // namespace sift::cuda
