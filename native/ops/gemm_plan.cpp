// cuBLASLt plans for row-major GEMMs with fused epilogues (see gemm_plan.h).
#include "gemm_plan.h"

#include "../core/error.h"

namespace sift {

GemmEpilogue parse_gemm_epilogue(const std::string& s) {
  if (s == "none") return GemmEpilogue::None;
  if (s == "bias") return GemmEpilogue::Bias;
  if (s == "gelu_tanh_bias") return GemmEpilogue::GeluTanhBias;
  if (s == "gelu_tanh_bias_aux") return GemmEpilogue::GeluTanhBiasAux;
  if (s == "bias_grad_a") return GemmEpilogue::BiasGradFromA;
  if (s == "bias_grad_b") return GemmEpilogue::BiasGradFromB;
  fail("E_ARG",
       "GEMM epilogue: expected none, bias, gelu_tanh_bias, gelu_tanh_bias_aux, bias_grad_a or bias_grad_b, got '", s,
       "'");
}

const char* gemm_epilogue_name(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::None:
      return "none";
    case GemmEpilogue::Bias:
      return "bias";
    case GemmEpilogue::GeluTanhBias:
      return "gelu_tanh_bias";
    case GemmEpilogue::GeluTanhBiasAux:
      return "gelu_tanh_bias_aux";
    case GemmEpilogue::BiasGradFromA:
      return "bias_grad_a";
    case GemmEpilogue::BiasGradFromB:
      return "bias_grad_b";
  }
  return "?";
}

LtPlan plan_lt(const GemmLayout& L, GemmEpilogue e) {
  LtPlan p;
  // Outer batch dims that did not merge into one stride need one call each: the plain cuBLAS path
  // does that; cuBLASLt is used for single strided batches only.
  if (L.batch.size() > 1) {
    p.why = "more than one strided batch dimension";
    return p;
  }
  const GemmBatchDim last = L.batch.empty() ? GemmBatchDim{1, 0, 0, 0} : L.batch.back();
  if (e != GemmEpilogue::None && last.size > 1) {
    p.why = "fused epilogues are planned for single matrices only";
    return p;
  }
  if (L.M <= 0 || L.N <= 0 || L.K <= 0) {
    p.why = "empty product";
    return p;
  }
  // Column-major C^T (N x M, ld N) = op(b) (N x K) op(a) (K x M). A row-major operand (cs == 1) is,
  // read column-major, its own transpose: no op needed to get B^T / A^T; a column-major one needs T.
  p.trans_a = L.b_cs != 1;
  p.trans_b = L.a_cs != 1;
  p.m = L.N;
  p.n = L.M;
  p.k = L.K;
  p.lda = L.b_cs == 1 ? L.b_rs : L.b_cs;
  p.ldb = L.a_cs == 1 ? L.a_rs : L.a_cs;
  p.ldc = L.N;
  p.a_rows = p.trans_a ? p.k : p.m;
  p.a_cols = p.trans_a ? p.m : p.k;
  p.b_rows = p.trans_b ? p.n : p.k;
  p.b_cols = p.trans_b ? p.k : p.n;
  p.batch = last.size;
  p.stride_a = last.sb;
  p.stride_b = last.sa;
  p.stride_c = last.sc;
  switch (e) {
    case GemmEpilogue::None:
      p.epilogue = lt_epilogue::kDefault;
      break;
    case GemmEpilogue::Bias:
      p.epilogue = lt_epilogue::kBias;
      p.extra_len = p.m;
      break;
    case GemmEpilogue::GeluTanhBias:
      p.epilogue = lt_epilogue::kGeluBias;
      p.extra_len = p.m;
      break;
    case GemmEpilogue::GeluTanhBiasAux:
      // cublasLt.h: the GELU input's leading dimension must be a multiple of 8.
      if (p.m % 8 != 0) {
        p.why = "GELU input leading dimension (the output's columns) is not a multiple of 8";
        return p;
      }
      p.epilogue = lt_epilogue::kGeluAuxBias;
      p.extra_len = p.m;
      p.aux_ld = p.m;
      break;
    case GemmEpilogue::BiasGradFromA:
      // Our a is cuBLASLt's B: its reduction over k has D's column count, n = M.
      p.epilogue = lt_epilogue::kBGradB;
      p.extra_len = p.n;
      break;
    case GemmEpilogue::BiasGradFromB:
      p.epilogue = lt_epilogue::kBGradA;
      p.extra_len = p.m;
      break;
  }
  p.ok = true;
  return p;
}

}  // namespace sift
