// Bindings of the optimizer ops: sparseAdamW, adamW, clipCoefficient, setCudaSparseAdamW (lib/engine/addon-types.ts).
#include <cmath>

#include "../ops/optim.h"
#include "util.h"

namespace sift::binding {
namespace {

double hyper_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail("E_ARG", "hp.", key, " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

AdamWHyper arg_hyper(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsObject())
    fail("E_ARG", "expected an object { lr, beta1, beta2, eps, weightDecay, step } for 'hp'");
  Napi::Object o = info[i].As<Napi::Object>();
  AdamWHyper hp;
  hp.lr = hyper_field(o, "lr");
  hp.beta1 = hyper_field(o, "beta1");
  hp.beta2 = hyper_field(o, "beta2");
  hp.eps = hyper_field(o, "eps");
  hp.weight_decay = hyper_field(o, "weightDecay");
  double step = hyper_field(o, "step");
  if (!std::isfinite(step) || std::floor(step) != step || step < 1 || step > 9007199254740991.0)
    fail("E_ARG", "hp.step must be an integer >= 1, got ", step);
  hp.step = int64_t(step);
  return hp;
}

// A list whose elements may be null (undefined Tensors in the result).
std::vector<Tensor> arg_nullable_list(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) fail("E_ARG", "expected an array for '", name, "'");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<Tensor> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value e = a.Get(k);
    if (e.IsNull() || e.IsUndefined()) continue;
    TensorHandle* h = TensorHandle::Unwrap(e);
    if (!h) fail("E_ARG", "element ", k, " of '", name, "' is neither a tensor nor null");
    if (h->disposed()) fail("E_DISPOSED", "element ", k, " of '", name, "' is a disposed tensor");
    out[k] = h->tensor();
  }
  return out;
}

Tensor opt_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  auto t = arg_opt_tensor(info, i, name);
  return t ? *t : Tensor();
}

// sparseAdamW(weights, indices, grads, m, v, masters, hp, scale)
Napi::Value SparseAdamW(const Napi::CallbackInfo& info) {
  ops::sparse_adamw(arg_tensor_list(info, 0, "weights"), arg_tensor_list(info, 1, "indices"),
                    arg_tensor_list(info, 2, "grads"), arg_tensor_list(info, 3, "m"), arg_tensor_list(info, 4, "v"),
                    arg_tensor_list(info, 5, "masters"), arg_hyper(info, 6), opt_tensor(info, 7, "scale"));
  return info.Env().Undefined();
}

// adamW(params, grads, m, v, masters, hp, scale)
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  ops::adamw(arg_tensor_list(info, 0, "params"), arg_tensor_list(info, 1, "grads"), arg_tensor_list(info, 2, "m"),
             arg_tensor_list(info, 3, "v"), arg_nullable_list(info, 4, "masters"), arg_hyper(info, 5),
             opt_tensor(info, 6, "scale"));
  return info.Env().Undefined();
}

// setCudaSparseAdamW(mode) -> previous mode ('rounds' | 'prefetch').
Napi::Value SetCudaSparseAdamW(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ops::set_cuda_sparse_adamw(arg_string(info, 0, "mode")));
}

// clipCoefficient(normSq, maxNorm)
Napi::Value ClipCoefficient(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::clip_coefficient(arg_tensor(info, 0, "normSq"), arg_number(info, 1, "maxNorm")));
}

}  // namespace

SIFT_BINDINGS(register_optim) {
  SIFT_EXPORT("sparseAdamW", SparseAdamW);
  SIFT_EXPORT("adamW", AdamW);
  SIFT_EXPORT("clipCoefficient", ClipCoefficient);
  SIFT_EXPORT("setCudaSparseAdamW", SetCudaSparseAdamW);
}

}  // namespace sift::binding
