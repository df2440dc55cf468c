// The cuBLASLt plan of a row-major GEMM with a fused epilogue, as a pure function of the layout
// (no CUDA needed, so it is tested on any machine against the unfused semantics).
//
// Row-major C (M x N) = A @ B is computed as the column-major C^T = B^T A^T, so cuBLASLt's "A" is
// our b and its "B" is our a, with m = N and n = M. Each epilogue of the row-major product maps
// onto one cublasLtEpilogue_t:
//   Bias               C += bias[N]                       -> BIAS       (bias over D's rows, m = N)
//   GeluTanhBias       C = gelu_tanh(C + bias)            -> GELU_BIAS
//   GeluTanhBiasAux    same, and aux (M x N) = C + bias   -> GELU_AUX_BIAS (aux ld = N)
//   BiasGradFromA      extra[M] = sum over k of A(i, k)   -> BGRADB     (reduces op(B) over k)
//   BiasGradFromB      extra[N] = sum over k of B(k, j)   -> BGRADA     (reduces op(A) over k)
// GELU here is the tanh approximation, the one cuBLASLt implements.
#pragma once
#include <cstdint>
#include <string>

#include "matmul.h"

namespace sift {

enum class GemmEpilogue : uint8_t { None, Bias, GeluTanhBias, GeluTanhBiasAux, BiasGradFromA, BiasGradFromB };

// Parses "none" | "bias" | "gelu_tanh_bias" | "gelu_tanh_bias_aux" | "bias_grad_a" | "bias_grad_b";
// throws E_ARG otherwise.
GemmEpilogue parse_gemm_epilogue(const std::string& s);
const char* gemm_epilogue_name(GemmEpilogue e);

// cublasLtEpilogue_t values, from cublasLt.h (CUDA 12.6, as mirrored in the public repository
// zspace/system.cuda-12.6, include/cublasLt.h; unchanged in cuBLAS 13).
namespace lt_epilogue {
constexpr int kDefault = 1, kBias = 4, kGeluBias = 36, kGeluAuxBias = 164, kBGradA = 256, kBGradB = 512;
}

// One cublasLtMatmul call: D (m x n, column-major, ld ldc) = op(A) (m x k) op(B) (k x n).
struct LtPlan {
  bool ok = false;
  std::string why;  // when !ok: why the layout does not fit (the caller falls back)
  bool trans_a = false, trans_b = false;
  // Stored shape of A and B (before op), column-major, as cublasLtMatrixLayoutCreate takes them.
  int64_t a_rows = 0, a_cols = 0, lda = 0;
  int64_t b_rows = 0, b_cols = 0, ldb = 0;
  int64_t m = 0, n = 0, k = 0, ldc = 0;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  int epilogue = lt_epilogue::kDefault;  // cublasLtEpilogue_t
  int64_t extra_len = 0;                 // length of the bias / bias gradient (0: none)
  int64_t aux_ld = 0;                    // GELU input leading dimension (GeluTanhBiasAux)
  // Which row-major operand the cuBLASLt "A" is: always our b (see above).
  bool a_is_b = true;
};

LtPlan plan_lt(const GemmLayout& L, GemmEpilogue e);

}  // namespace sift
