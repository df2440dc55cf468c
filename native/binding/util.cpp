#include "util.h"

#include <cmath>

namespace sift::binding {

namespace {
struct AddonData {
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference error_ctor;
};
AddonData* data(Napi::Env env) {
  auto* d = env.GetInstanceData<AddonData>();
  if (!d) {
    d = new AddonData();
    env.SetInstanceData(d);
  }
  return d;
}
}  // namespace

std::vector<Registrar>& registry() {
  static std::vector<Registrar> r;
  return r;
}

void set_error_class(Napi::Env env, Napi::Function ctor) { data(env)->error_ctor = Napi::Persistent(ctor); }

void throw_sift(Napi::Env env, const std::string& code, const std::string& message) {
  auto* d = data(env);
  if (!d->error_ctor.IsEmpty()) {
    Napi::Object err = d->error_ctor.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    throw Napi::Error(env, err);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

namespace {
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name, std::function<void()> work,
                std::function<Napi::Value(Napi::Env)> result, const char* other_code)
      : Napi::AsyncWorker(env, name),
        work_(std::move(work)),
        result_(std::move(result)),
        other_code_(other_code),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      work_();
    } catch (const SiftException& e) {
      code_ = e.code();
      SetError(e.message());
    } catch (const std::bad_alloc&) {
      code_ = "E_OOM";
      SetError("out of host memory");
    } catch (const std::exception& e) {
      code_ = other_code_;
      SetError(e.what());
    }
    work_ = nullptr;
  }
  void OnOK() override { deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    try {
      throw_sift(Env(), code_, e.Message());
    } catch (const Napi::Error& err) {
      deferred_.Reject(err.Value());
    }
  }

 private:
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
  const char* other_code_;
  Napi::Promise::Deferred deferred_;
  std::string code_;
};
}  // namespace

std::atomic<uint64_t>& async_device_waits() {
  static std::atomic<uint64_t> n{0};
  return n;
}

Napi::Promise run_async(Napi::Env env, const char* name, std::function<void()> work,
                        std::function<Napi::Value(Napi::Env)> result, const char* other_code) {
  auto* w = new PromiseWorker(env, name, std::move(work), std::move(result), other_code);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Function TensorHandle::Define(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "NativeTensor", {});
  data(env)->tensor_ctor = Napi::Persistent(ctor);
  return ctor;
}

namespace {
// Marks the JavaScript objects of this addon's tensor handles (napi_type_tag_object), so that an
// argument is recognised by one own-property check instead of an instanceof walk per argument.
const napi_type_tag kTensorTag = {0x73696674666e7454ULL, 0x9b2d4c61e05a37f1ULL};
}  // namespace

TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {
  if (info.Length() == 1 && info[0].IsExternal()) {
    t_ = std::move(*info[0].As<Napi::External<Tensor>>().Data());
    napi_status st = napi_type_tag_object(info.Env(), info.This(), &kTensorTag);
    if (st != napi_ok) throw_sift(info.Env(), "E_INTERNAL", "could not tag a NativeTensor handle");
  } else {
    throw_sift(info.Env(), "E_ARG", "NativeTensor cannot be constructed from JavaScript");
  }
}

Napi::Object TensorHandle::Wrap(Napi::Env env, Tensor t) {
  Napi::External<Tensor> ext = Napi::External<Tensor>::New(env, &t);
  return data(env)->tensor_ctor.New({ext});
}

TensorHandle* TensorHandle::Unwrap(const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  // Only objects made by TensorHandle's constructor carry the tag (an own property: an object
  // that merely inherits from a handle is not one), so the wrapped pointer is a TensorHandle.
  bool tagged = false;
  if (napi_check_object_type_tag(v.Env(), v, &kTensorTag, &tagged) != napi_ok || !tagged) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(v.Env(), v, &p) != napi_ok || p == nullptr) return nullptr;
  return static_cast<TensorHandle*>(p);
}

Tensor& TensorHandle::tensor() {
  if (disposed_) fail("E_DISPOSED", "the tensor was disposed and cannot be used");
  return t_;
}

Napi::Value wrap(Napi::Env env, Tensor t) { return TensorHandle::Wrap(env, std::move(t)); }

Napi::Value wrap_list(Napi::Env env, const std::vector<Tensor>& ts) {
  Napi::Array a = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); i++) {
    if (ts[i].defined())
      a.Set(uint32_t(i), wrap(env, ts[i]));
    else
      a.Set(uint32_t(i), env.Null());
  }
  return a;
}

bool arg_present(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && !info[i].IsUndefined() && !info[i].IsNull();
}

Tensor& arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  TensorHandle* h = i < info.Length() ? TensorHandle::Unwrap(info[i]) : nullptr;
  if (!h) fail("E_ARG", "expected a tensor for '", name, "'");
  if (h->disposed()) fail("E_DISPOSED", "'", name, "' is a disposed tensor");
  return h->tensor();
}

std::optional<Tensor> arg_opt_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!arg_present(info, i)) return std::nullopt;
  return arg_tensor(info, i, name);
}

std::vector<Tensor> arg_tensor_list(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) fail("E_ARG", "expected an array of tensors for '", name, "'");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<Tensor> out;
  out.reserve(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    TensorHandle* h = TensorHandle::Unwrap(a.Get(k));
    if (!h) fail("E_ARG", "element ", k, " of '", name, "' is not a tensor");
    if (h->disposed()) fail("E_DISPOSED", "element ", k, " of '", name, "' is a disposed tensor");
    out.push_back(h->tensor());
  }
  return out;
}

double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) fail("E_ARG", "expected a number for '", name, "'");
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double v = arg_number(info, i, name);
  if (!std::isfinite(v) || std::floor(v) != v || std::fabs(v) > 9007199254740991.0)
    fail("E_ARG", "expected an integer for '", name, "' but received ", v);
  return int64_t(v);
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) fail("E_ARG", "expected a boolean for '", name, "'");
  return info[i].As<Napi::Boolean>().Value();
}

std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) fail("E_ARG", "expected a string for '", name, "'");
  return info[i].As<Napi::String>().Utf8Value();
}

Shape arg_shape(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) fail("E_ARG", "expected an array of integers for '", name, "'");
  Napi::Array a = info[i].As<Napi::Array>();
  Shape s(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsNumber()) fail("E_ARG", "element ", k, " of '", name, "' is not a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9007199254740991.0)
      fail("E_ARG", "element ", k, " of '", name, "' is not an integer: ", d);
    s[k] = int64_t(d);
  }
  return s;
}

uint64_t arg_seed(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i < info.Length() && info[i].IsBigInt()) {
    bool lossless = true;
    return info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  }
  int64_t v = arg_int(info, i, name);
  return uint64_t(v);
}

}  // namespace sift::binding
