// Bindings of the quantized weight ops: quantize, dequantize, quantLinear (see
// lib/engine/addon-types.ts, "Quantized weights").
#include "../ops/quant.h"
#include "util.h"

namespace sift::binding {
namespace {

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(), ops::quantize(arg_tensor(info, 0, "weight"), arg_string(info, 1, "format")));
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::dequantize(arg_tensor_list(info, 0, "state"), arg_string(info, 1, "format"),
                                          arg_int(info, 2, "rows"), arg_int(info, 3, "cols")));
}

Napi::Value QuantLinear(const Napi::CallbackInfo& info) {
  return wrap(info.Env(),
              ops::quant_linear(arg_tensor(info, 0, "x"), arg_tensor_list(info, 1, "state"),
                                arg_string(info, 2, "format"), arg_int(info, 3, "rows"), arg_int(info, 4, "cols"),
                                arg_bool(info, 5, "transpose"), arg_opt_tensor(info, 6, "idx").value_or(Tensor()),
                                arg_opt_tensor(info, 7, "vals").value_or(Tensor())));
}

// setQuantGemm(mode) -> previous mode. Calls already queued keep the kernels they were given.
Napi::Value SetQuantGemm(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ops::set_quant_gemm(arg_string(info, 0, "mode")));
}

}  // namespace

SIFT_BINDINGS(register_quant) {
  SIFT_EXPORT("quantize", Quantize);
  SIFT_EXPORT("dequantize", Dequantize);
  SIFT_EXPORT("quantLinear", QuantLinear);
  SIFT_EXPORT("setQuantGemm", SetQuantGemm);
}

}  // namespace sift::binding
