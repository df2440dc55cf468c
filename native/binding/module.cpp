// The addon's entry point: defines the tensor handle class and every function registered by the
// binding files (SIFT_BINDINGS blocks), so adding an op family never edits this file.
#include <napi.h>

#include "util.h"

namespace sift::binding {
void set_error_class(Napi::Env env, Napi::Function ctor);
}

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    throw Napi::TypeError::New(info.Env(), "setErrorClass expects a constructor");
  sift::binding::set_error_class(info.Env(), info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTensor", sift::binding::TensorHandle::Define(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  for (auto reg : sift::binding::registry()) reg(env, exports);
  return exports;
}

NODE_API_MODULE(sift_ft, Init)
