// Batched matrix products. The op validates operands, works out a GEMM layout that reaches the
// kernels without copies where it can (transposed views become transpose flags, batch dims with
// a uniform stride become strided batches) and queues the CPU or CUDA GEMM.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift {

// One batch dimension of a GEMM (after broadcasting and merging): its size and the element
// stride of each operand along it (0 for a broadcast operand).
struct GemmBatchDim {
  int64_t size;
  int64_t sa, sb, sc;
};

// C[b] (M x N, row-major, ldc = N, contiguous) = A[b] (M x K) @ B[b] (K x N) for every batch
// index b. Element (i, k) of A is at a.data() + i * a_rs + k * a_cs (likewise B). The op
// guarantees that each operand is row-major (cs == 1, rs >= cols) or column-major (rs == 1,
// cs >= rows), which is what BLAS libraries need (lda = the larger stride).
struct GemmLayout {
  int64_t M = 0, N = 0, K = 0;
  int64_t a_rs = 0, a_cs = 0, b_rs = 0, b_cs = 0;
  std::vector<GemmBatchDim> batch;  // outermost first; empty for a single matrix
  int64_t batch_count() const {
    int64_t n = 1;
    for (const auto& d : batch) n *= d.size;
    return n;
  }
  // Element offsets of batch index `idx` (0 <= idx < batch_count()).
  void batch_offsets(int64_t idx, int64_t& oa, int64_t& ob, int64_t& oc) const {
    oa = ob = oc = 0;
    for (size_t d = batch.size(); d-- > 0;) {
      int64_t i = idx % batch[d].size;
      idx /= batch[d].size;
      oa += i * batch[d].sa;
      ob += i * batch[d].sb;
      oc += i * batch[d].sc;
    }
  }
};

enum class GemmEpilogue : uint8_t;

namespace ops {

// a [..., M, K] (or [..., K, M] with transA) @ b [..., K, N] (or [..., N, K] with transB), batch
// dims broadcast; returns a new contiguous [...batch, M, N] tensor of the same dtype.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);

// The same product with an epilogue (gemm_plan.h says what each one computes), for 2-D operands:
// fused into the GEMM by cuBLASLt where that path is selected and has an algorithm for the shape,
// else the GEMM followed by the separate kernels. `extra` is the GELU input (GeluTanhBiasAux) or the
// bias gradient (BiasGradFromA: [M], BiasGradFromB: [N]); `fused` says which path ran.
struct GemmEpilogueResult {
  Tensor out, extra;
  bool fused = false;
};
GemmEpilogueResult matmul_epilogue(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, GemmEpilogue e,
                                   const Tensor* bias);

}  // namespace ops
}  // namespace sift
