// Bindings of the matrix products: matmul, gemmInfo, setCpuGemm, setCudaGemm.
#include "../core/executor.h"
#include "../cpu/gemm.h"
#include "../cuda/runtime.h"
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

// setCudaGemm(which) -> previous choice. GEMMs already queued keep the path they were given.
Napi::Value SetCudaGemm(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cuda::set_gemm_path(arg_string(info, 0, "which")));
}

}  // namespace

SIFT_BINDINGS(register_matmul_bindings) {
  SIFT_EXPORT("matmul", Matmul);
  SIFT_EXPORT("gemmInfo", GemmInfo);
  SIFT_EXPORT("setCpuGemm", SetCpuGemm);
  SIFT_EXPORT("setCudaGemm", SetCudaGemm);
}

}  // namespace sift::binding
