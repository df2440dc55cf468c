// CUDA matmul: cuBLASLt when selected (setCudaGemm('lt')), else cuBLAS strided-batched GEMM when loaded (row-major C =
// A B is computed as the column-major C^T = B^T A^T, so no operand is copied), else a tiled kernel: 64x64 output tiles
// per block, 16-deep K slices staged in shared memory, a 4x4 register block per thread,
// accumulation in f32 (f64 for f64), batches on blockIdx.z with any batch strides.
#include <climits>

#include "common.cuh"
#include "gemm.h"

namespace sift::cuda {
namespace {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
constexpr int kThreads = (BM / TM) * (BN / TN);  // 256
constexpr int kMaxBatchDims = 8;

struct BatchInfo {
  int nd;
  int64_t size[kMaxBatchDims], sa[kMaxBatchDims], sb[kMaxBatchDims], sc[kMaxBatchDims];
};

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    gemm_tiled(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, int64_t M, int64_t N, int64_t K,
               int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs, BatchInfo bi, int64_t batches) {
  // +1 column of padding keeps the transposed stores into shared memory free of bank conflicts.
  __shared__ Acc As[BK][BM + 1];
  __shared__ Acc Bs[BK][BN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  // Coalesced tile loads: consecutive threads walk the operand's unit-stride direction.
  const bool a_rowmajor = a_cs == 1, b_rowmajor = b_cs == 1;

  for (int64_t z = blockIdx.z; z < batches; z += gridDim.z) {
    int64_t oa = 0, ob = 0, oc = 0, rem = z;
    for (int d = bi.nd - 1; d >= 0; d--) {
      int64_t i = rem % bi.size[d];
      rem /= bi.size[d];
      oa += i * bi.sa[d];
      ob += i * bi.sb[d];
      oc += i * bi.sc[d];
    }
    const T* a = A + oa;
    const T* b = B + ob;
    Acc acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
      for (int j = 0; j < TN; j++) acc[i][j] = Acc(0);

    for (int64_t k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
      for (int e0 = 0; e0 < BM * BK; e0 += kThreads) {
        const int e = e0 + tid;
        const int mi = a_rowmajor ? e / BK : e % BM;
        const int ki = a_rowmajor ? e % BK : e / BM;
        const int64_t gm = m0 + mi, gk = k0 + ki;
        As[ki][mi] = (gm < M && gk < K) ? to_acc<Acc>(a[gm * a_rs + gk * a_cs]) : Acc(0);
      }
#pragma unroll
      for (int e0 = 0; e0 < BN * BK; e0 += kThreads) {
        const int e = e0 + tid;
        const int ni = b_rowmajor ? e % BN : e / BK;
        const int ki = b_rowmajor ? e / BN : e % BK;
        const int64_t gn = n0 + ni, gk = k0 + ki;
        Bs[ki][ni] = (gn < N && gk < K) ? to_acc<Acc>(b[gk * b_rs + gn * b_cs]) : Acc(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; kk++) {
        Acc ar[TM], br[TN];
#pragma unroll
        for (int i = 0; i < TM; i++) ar[i] = As[kk][ty + i * (BM / TM)];
#pragma unroll
        for (int j = 0; j < TN; j++) br[j] = Bs[kk][tx + j * (BN / TN)];
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
          for (int j = 0; j < TN; j++) acc[i][j] += ar[i] * br[j];
      }
      __syncthreads();
    }
    T* c = C + oc;
#pragma unroll
    for (int i = 0; i < TM; i++) {
      const int64_t gm = m0 + ty + i * (BM / TM);
      if (gm >= M) continue;
#pragma unroll
      for (int j = 0; j < TN; j++) {
        const int64_t gn = n0 + tx + j * (BN / TN);
        if (gn < N) c[gm * N + gn] = from_acc<T>(acc[i][j]);
      }
    }
  }
}

void launch_fallback(const Tensor& a, const Tensor& b, const Tensor& out, const GemmLayout& L) {
  SIFT_CHECK(int(L.batch.size()) <= kMaxBatchDims, "E_SHAPE", "matmul: at most ", kMaxBatchDims,
             " non-mergeable batch dimensions on CUDA, got ", L.batch.size());
  BatchInfo bi{};
  bi.nd = int(L.batch.size());
  for (int d = 0; d < bi.nd; d++) {
    bi.size[d] = L.batch[d].size;
    bi.sa[d] = L.batch[d].sa;
    bi.sb[d] = L.batch[d].sb;
    bi.sc[d] = L.batch[d].sc;
  }
  const int64_t batches = L.batch_count();
  const int64_t gx = (L.N + BN - 1) / BN, gy = (L.M + BM - 1) / BM;
  SIFT_CHECK(gy <= 65535 && gx <= INT_MAX, "E_SHAPE", "matmul: ", L.M, " x ", L.N,
             " is too large for the CUDA fallback GEMM");
  dim3 grid(unsigned(gx), unsigned(gy), unsigned(batches < 65535 ? batches : 65535));
  cudaStream_t st = current_stream(dev_of(out));
  dispatch_cuda_float(out.dtype, "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Acc = dacc_t<T>;
    gemm_tiled<T, Acc><<<grid, kThreads, 0, st>>>(static_cast<const T*>(a.raw()), static_cast<const T*>(b.raw()),
                                                  static_cast<T*>(out.raw()), L.M, L.N, L.K, L.a_rs, L.a_cs, L.b_rs,
                                                  L.b_cs, bi, batches);
  });
  check_last_error("matmul (sift-ft GEMM kernel)");
}

// cuBLAS path; false when the layout does not fit its int arguments.
bool launch_cublas(const Tensor& a, const Tensor& b, const Tensor& out, const GemmLayout& L) {
  const int64_t lim = INT_MAX;
  const int64_t lda = L.a_cs == 1 ? L.a_rs : L.a_cs;
  const int64_t ldb = L.b_cs == 1 ? L.b_rs : L.b_cs;
  const int64_t inner = L.batch.empty() ? 1 : L.batch.back().size;
  if (L.M > lim || L.N > lim || L.K > lim || lda > lim || ldb > lim || inner > lim) return false;
  const int dev = dev_of(out);
  const size_t es = out.itemsize();
  const GemmBatchDim last = L.batch.empty() ? GemmBatchDim{1, 0, 0, 0} : L.batch.back();
  // Outer batch dims that did not merge into one stride: one strided-batched call per index.
  GemmLayout outer;
  outer.batch.assign(L.batch.begin(), L.batch.empty() ? L.batch.end() : L.batch.end() - 1);
  const int64_t outer_count = outer.batch_count();
  for (int64_t o = 0; o < outer_count; o++) {
    int64_t oa, ob, oc;
    outer.batch_offsets(o, oa, ob, oc);
    // Column-major view: C^T (N x M, ld N) = op(B)^T-layout (N x K) * op(A) (K x M).
    cublas_gemm(dev, out.dtype, /*trans_a=*/L.b_cs != 1, /*trans_b=*/L.a_cs != 1, int(L.N), int(L.M), int(L.K),
                static_cast<const char*>(b.raw()) + ob * es, int(ldb), last.sb,
                static_cast<const char*>(a.raw()) + oa * es, int(lda), last.sa, static_cast<char*>(out.raw()) + oc * es,
                int(L.N), last.sc, int(last.size));
  }
  return true;
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const GemmLayout& L) {
  // cuBLASLt where selected and the layout is one strided batch it has an algorithm for.
  if (cublaslt_enabled() && cublaslt_matmul(dev_of(out), out.dtype, plan_lt(L, GemmEpilogue::None), b.raw(), a.raw(),
                                            out.raw(), nullptr, nullptr))
    return;
  if (cublas_enabled() && launch_cublas(a, b, out, L)) return;
  launch_fallback(a, b, out, L);
}

}  // namespace sift::cuda
