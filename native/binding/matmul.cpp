// Bindings of the matrix products: matmul, matmulEpilogue, gemmLtPlan, cudaGemmEpilogues, gemmInfo, setCpuGemm,
// setCudaGemm.
#include "../core/executor.h"
#include "../cpu/gemm.h"
#include "../cuda/runtime.h"
#include "../ops/gemm_plan.h"
#include "../ops/matmul.h"
#include "util.h"

namespace sift::binding {
namespace {

// matmul(a, b, transA, transB)
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Tensor& a = arg_tensor(info, 0, "a");
  Tensor& b = arg_tensor(info, 1, "b");
  bool ta = arg_present(info, 2) && arg_bool(info, 2, "transA");
  bool tb = arg_present(info, 3) && arg_bool(info, 3, "transB");
  return wrap(info.Env(), ops::matmul(a, b, ta, tb));
}

// matmulEpilogue(a, b, transA, transB, epilogue, bias|null) -> { out, extra|null, fused }
Napi::Value MatmulEpilogue(const Napi::CallbackInfo& info) {
  Tensor& a = arg_tensor(info, 0, "a");
  Tensor& b = arg_tensor(info, 1, "b");
  const bool ta = arg_bool(info, 2, "transA");
  const bool tb = arg_bool(info, 3, "transB");
  const GemmEpilogue e = parse_gemm_epilogue(arg_string(info, 4, "epilogue"));
  std::optional<Tensor> bias = arg_opt_tensor(info, 5, "bias");
  ops::GemmEpilogueResult r = ops::matmul_epilogue(a, b, ta, tb, e, bias ? &*bias : nullptr);
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("out", wrap(env, r.out));
  o.Set("extra", r.extra.defined() ? wrap(env, r.extra) : env.Null());
  o.Set("fused", Napi::Boolean::New(env, r.fused));
  return o;
}

// gemmLtPlan([M, N, K, aRs, aCs, bRs, bCs], [size, sa, sb, sc, ...batch dims], epilogue): the
// cuBLASLt call a row-major GEMM layout becomes (a pure function; tests check it on any machine).
Napi::Value GemmLtPlan(const Napi::CallbackInfo& info) {
  const Shape dims = arg_shape(info, 0, "layout");
  const Shape batch = arg_shape(info, 1, "batch");
  SIFT_CHECK(dims.size() == 7, "E_ARG", "gemmLtPlan: layout is [M, N, K, aRs, aCs, bRs, bCs], got ", dims.size(),
             " numbers");
  SIFT_CHECK(batch.size() % 4 == 0, "E_ARG", "gemmLtPlan: batch is [size, sa, sb, sc] per dimension");
  GemmLayout L;
  L.M = dims[0];
  L.N = dims[1];
  L.K = dims[2];
  L.a_rs = dims[3];
  L.a_cs = dims[4];
  L.b_rs = dims[5];
  L.b_cs = dims[6];
  for (size_t i = 0; i < batch.size(); i += 4) L.batch.push_back({batch[i], batch[i + 1], batch[i + 2], batch[i + 3]});
  const LtPlan p = plan_lt(L, parse_gemm_epilogue(arg_string(info, 2, "epilogue")));
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto num = [&](const char* k, int64_t v) { o.Set(k, Napi::Number::New(env, double(v))); };
  o.Set("ok", Napi::Boolean::New(env, p.ok));
  o.Set("why", p.why);
  o.Set("transA", Napi::Boolean::New(env, p.trans_a));
  o.Set("transB", Napi::Boolean::New(env, p.trans_b));
  num("aRows", p.a_rows);
  num("aCols", p.a_cols);
  num("lda", p.lda);
  num("bRows", p.b_rows);
  num("bCols", p.b_cols);
  num("ldb", p.ldb);
  num("m", p.m);
  num("n", p.n);
  num("k", p.k);
  num("ldc", p.ldc);
  num("batch", p.batch);
  num("strideA", p.stride_a);
  num("strideB", p.stride_b);
  num("strideC", p.stride_c);
  num("epilogue", p.epilogue);
  num("extraLen", p.extra_len);
  num("auxLd", p.aux_ld);
  return o;
}

// cudaGemmEpilogues() -> whether CUDA GEMMs fuse their epilogues (asked by every biased layer).
Napi::Value CudaGemmEpilogues(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), cuda::gemm_epilogues_fused());
}

Napi::Value GemmInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("cpu", cpu::gemm_info());
  o.Set("cuda", cuda::gemm_library());
  return o;
}

// setCpuGemm(which): queued CPU work finishes first, so that it runs with the GEMM it was
// queued under.
Napi::Value SetCpuGemm(const Napi::CallbackInfo& info) {
  std::string which = arg_string(info, 0, "which");
  CpuExecutor::get().sync();
  return Napi::Boolean::New(info.Env(), cpu::set_gemm(which));
}

// setCudaGemm('auto' | 'kernel' | 'lt') -> previous choice. GEMMs already queued keep the path they were given.
Napi::Value SetCudaGemm(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cuda::set_gemm_path(arg_string(info, 0, "which")));
}

}  // namespace

SIFT_BINDINGS(register_matmul_bindings) {
  SIFT_EXPORT("matmul", Matmul);
  SIFT_EXPORT("matmulEpilogue", MatmulEpilogue);
  SIFT_EXPORT("gemmLtPlan", GemmLtPlan);
  SIFT_EXPORT("cudaGemmEpilogues", CudaGemmEpilogues);
  SIFT_EXPORT("gemmInfo", GemmInfo);
  SIFT_EXPORT("setCpuGemm", SetCpuGemm);
  SIFT_EXPORT("setCudaGemm", SetCudaGemm);
}

}  // namespace sift::binding
