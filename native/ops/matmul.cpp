// matmul: validation and layout planning shared by the CPU and CUDA GEMMs. Views reach the GEMM
// as strides (a transposed last-two-dims layout is just a column-major operand); only operands
// whose matrices are neither row- nor column-major are copied.
#include "matmul.h"

#include <algorithm>

#include "dispatch.h"
#include "elementwise.h"
#include "gemm_plan.h"
#include "reduce.h"
#include "tensor_ops.h"
#include "../cpu/gemm.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/gemm.h"
#endif

namespace sift::ops {
namespace {

// The (row stride, column stride) of the logical rows x cols matrix of t, normalised so that a
// BLAS can take it, or false when the matrix is neither row- nor column-major.
bool matrix_strides(const Tensor& t, bool trans, int64_t rows, int64_t cols, int64_t& rs, int64_t& cs) {
  int64_t s_last = t.strides[t.dim() - 1], s_prev = t.strides[t.dim() - 2];
  int64_t r = trans ? s_last : s_prev;
  int64_t c = trans ? s_prev : s_last;
  // Strides of size-1 dims carry no information: pick the ones a BLAS expects.
  if ((c == 1 || cols <= 1) && (rows <= 1 || r >= std::max<int64_t>(cols, 1))) {
    rs = rows <= 1 ? std::max<int64_t>(cols, 1) : r;
    cs = 1;
    return true;
  }
  if ((r == 1 || rows <= 1) && (cols <= 1 || c >= std::max<int64_t>(rows, 1))) {
    rs = 1;
    cs = cols <= 1 ? std::max<int64_t>(rows, 1) : c;
    return true;
  }
  return false;
}

// Validates the operands, allocates the output and works out the layout; `trivial` when the product
// is empty or has K == 0 (the output is then already final).
struct Prepared {
  Tensor a, b, out;
  GemmLayout L;
  bool trivial = false;
};

Prepared prepare(const Tensor& a_in, const Tensor& b_in, bool trans_a, bool trans_b) {
  check_same_device(a_in, b_in, "matmul");
  check_same_dtype(a_in, b_in, "matmul");
  check_float(a_in, "matmul");
  Device dev = a_in.device();
  check_device_usable(dev);
  SIFT_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "E_SHAPE", "matmul: operands need at least 2 dimensions, got ",
             shape_str(a_in.shape), " and ", shape_str(b_in.shape));
  const int64_t M = trans_a ? a_in.size(-1) : a_in.size(-2);
  const int64_t K = trans_a ? a_in.size(-2) : a_in.size(-1);
  const int64_t Kb = trans_b ? b_in.size(-1) : b_in.size(-2);
  const int64_t N = trans_b ? b_in.size(-2) : b_in.size(-1);
  SIFT_CHECK(K == Kb, "E_SHAPE", "matmul: inner dimensions differ (", shape_str(a_in.shape), trans_a ? "^T" : "", " @ ",
             shape_str(b_in.shape), trans_b ? "^T" : "", ": ", K, " vs ", Kb, ")");

  // Broadcast batch shape (NumPy rules over the leading dims).
  const int64_t na = a_in.dim() - 2, nb = b_in.dim() - 2;
  const int64_t nbatch = std::max(na, nb);
  Shape batch_shape(nbatch);
  for (int64_t i = 0; i < nbatch; i++) {
    int64_t da = i - (nbatch - na) >= 0 ? a_in.shape[i - (nbatch - na)] : 1;
    int64_t db = i - (nbatch - nb) >= 0 ? b_in.shape[i - (nbatch - nb)] : 1;
    SIFT_CHECK(da == db || da == 1 || db == 1, "E_SHAPE", "matmul: batch dimensions of ", shape_str(a_in.shape),
               " and ", shape_str(b_in.shape), " cannot be broadcast");
    batch_shape[i] = da == 1 ? db : da;
  }
  Shape out_shape = batch_shape;
  out_shape.push_back(M);
  out_shape.push_back(N);
  Prepared P;
  Tensor out = empty(out_shape, a_in.dtype, dev);
  P.out = out;
  if (out.numel() == 0) {
    P.trivial = true;
    return P;
  }
  if (K == 0) {
    fill_(out, 0.0);
    P.trivial = true;
    return P;
  }

  GemmLayout L;
  L.M = M;
  L.N = N;
  L.K = K;
  Tensor a = a_in, b = b_in;
  if (!matrix_strides(a, trans_a, M, K, L.a_rs, L.a_cs)) {
    a = contiguous(a);
    matrix_strides(a, trans_a, M, K, L.a_rs, L.a_cs);
  }
  if (!matrix_strides(b, trans_b, K, N, L.b_rs, L.b_cs)) {
    b = contiguous(b);
    matrix_strides(b, trans_b, K, N, L.b_rs, L.b_cs);
  }

  // Batch dims, innermost last; size-1 dims dropped, then neighbours merged where every operand's
  // strides nest (so a contiguous [B, H, M, K] becomes one strided batch of B*H matrices).
  std::vector<GemmBatchDim> dims;
  for (int64_t i = 0; i < nbatch; i++) {
    if (batch_shape[i] == 1) continue;
    int64_t ia = i - (nbatch - na), ib = i - (nbatch - nb);
    GemmBatchDim d;
    d.size = batch_shape[i];
    d.sa = (ia >= 0 && a.shape[ia] != 1) ? a.strides[ia] : 0;
    d.sb = (ib >= 0 && b.shape[ib] != 1) ? b.strides[ib] : 0;
    d.sc = out.strides[i];
    if (!dims.empty()) {
      GemmBatchDim& p = dims.back();
      if (p.sa == d.sa * d.size && p.sb == d.sb * d.size && p.sc == d.sc * d.size) {
        p.size *= d.size;
        p.sa = d.sa;
        p.sb = d.sb;
        p.sc = d.sc;
        continue;
      }
    }
    dims.push_back(d);
  }
  L.batch = std::move(dims);
  P.a = a;
  P.b = b;
  P.L = std::move(L);
  return P;
}

void run(const Prepared& P) {
  SIFT_ON_DEVICE(P.out.device(), cpu::matmul(P.a, P.b, P.out, P.L), cuda::matmul(P.a, P.b, P.out, P.L));
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool trans_a, bool trans_b) {
  Prepared P = prepare(a_in, b_in, trans_a, trans_b);
  if (!P.trivial) run(P);
  return P.out;
}

GemmEpilogueResult matmul_epilogue(const Tensor& a_in, const Tensor& b_in, bool trans_a, bool trans_b, GemmEpilogue e,
                                   const Tensor* bias) {
  const char* name = gemm_epilogue_name(e);
  SIFT_CHECK(e == GemmEpilogue::None || (a_in.dim() == 2 && b_in.dim() == 2), "E_SHAPE", "matmul with epilogue ", name,
             ": operands must be 2-D, got ", shape_str(a_in.shape), " and ", shape_str(b_in.shape));
  const bool adds_bias =
      e == GemmEpilogue::Bias || e == GemmEpilogue::GeluTanhBias || e == GemmEpilogue::GeluTanhBiasAux;
  Prepared P = prepare(a_in, b_in, trans_a, trans_b);
  const int64_t M = P.out.size(-2), N = P.out.size(-1);
  if (adds_bias) {
    SIFT_CHECK(bias != nullptr, "E_ARG", "matmul with epilogue ", name, " needs a bias");
    check_same_device(*bias, P.out, name);
    check_same_dtype(*bias, P.out, name);
    SIFT_CHECK(bias->dim() == 1 && bias->size(0) == N, "E_SHAPE", "matmul with epilogue ", name, ": bias must be [", N,
               "], got ", shape_str(bias->shape));
  }
  GemmEpilogueResult r;
  r.out = P.out;
  const Device dev = P.out.device();
#ifdef SIFT_WITH_CUDA
  if (!dev.is_cpu() && !P.trivial && cuda::cublaslt_enabled()) {
    const LtPlan plan = plan_lt(P.L, e);
    if (plan.ok) {
      Tensor b_dense = adds_bias ? dense(*bias) : Tensor();
      Tensor extra, aux;
      if (e == GemmEpilogue::BiasGradFromA) extra = empty({M}, P.out.dtype, dev);
      if (e == GemmEpilogue::BiasGradFromB) extra = empty({N}, P.out.dtype, dev);
      if (e == GemmEpilogue::GeluTanhBiasAux) aux = empty({M, N}, P.out.dtype, dev);
      const void* bias_ptr = adds_bias ? b_dense.raw() : extra.defined() ? extra.raw() : nullptr;
      if (cuda::cublaslt_matmul(dev.index, P.out.dtype, plan, P.b.raw(), P.a.raw(), P.out.raw(), bias_ptr,
                                aux.defined() ? aux.raw() : nullptr)) {
        r.extra = e == GemmEpilogue::GeluTanhBiasAux ? aux : extra;
        r.fused = true;
        return r;
      }
    }
  }
#endif
  // Unfused: the GEMM, then the epilogue's own kernels (the same ops the autograd ran before).
  if (!P.trivial) run(P);
  switch (e) {
    case GemmEpilogue::None:
      break;
    case GemmEpilogue::Bias:
      add_inplace(r.out, *bias, 1.0);
      break;
    case GemmEpilogue::GeluTanhBias:
    case GemmEpilogue::GeluTanhBiasAux:
      add_inplace(r.out, *bias, 1.0);
      if (e == GemmEpilogue::GeluTanhBiasAux) r.extra = r.out;
      r.out = unary(UnaryOp::GeluTanh, r.out);
      break;
    case GemmEpilogue::BiasGradFromA:
      r.extra = sum(a_in, {trans_a ? 0 : 1});
      break;
    case GemmEpilogue::BiasGradFromB:
      r.extra = sum(b_in, {trans_b ? 1 : 0});
      break;
  }
  return r;
}

}  // namespace sift::ops
