// Helpers shared by every binding file: argument parsing with messages that name the argument,
// the tensor handle class, and the translation of native exceptions into SiftError.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../core/tensor.h"

namespace sift::binding {

// JavaScript object that owns one native Tensor (a view onto shared storage). dispose() drops it
// at once; the finalizer (garbage collection) is only a backstop.
class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, Tensor t);
  static TensorHandle* Unwrap(const Napi::Value& v);  // nullptr if not a handle
  explicit TensorHandle(const Napi::CallbackInfo& info);
  Tensor& tensor();  // throws E_DISPOSED when disposed
  void dispose() {
    t_ = Tensor();
    disposed_ = true;
  }
  bool disposed() const { return disposed_; }

 private:
  Tensor t_;
  bool disposed_ = false;
};

// Throws a SiftError(code, message) into JavaScript.
[[noreturn]] void throw_sift(Napi::Env env, const std::string& code, const std::string& message);

// Wraps a binding body so that SiftException and std::exception become SiftError.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const SiftException& e) {
    throw_sift(info.Env(), e.code(), e.message());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw_sift(info.Env(), "E_OOM", "out of host memory");
  } catch (const std::exception& e) {
    throw_sift(info.Env(), "E_INTERNAL", e.what());
  }
}

// Runs `work` on a libuv worker thread, which must not touch JavaScript values, and returns a
// promise settled on the JavaScript thread: resolved with `result(env)` (undefined without one), or
// rejected with a SiftError carrying the code of a SiftException, E_OOM for std::bad_alloc, or
// `other_code` for any other exception. `work` and what it captures are released on the worker
// thread, so a tensor it holds frees its storage there and then.
Napi::Promise run_async(Napi::Env env, const char* name, std::function<void()> work,
                        std::function<Napi::Value(Napi::Env)> result = {}, const char* other_code = "E_INTERNAL");

// Device waits run on worker threads (waitFenceAsync, toBufferAsync), counted for executorStats().
std::atomic<uint64_t>& async_device_waits();

// Argument parsing: each names the argument in its error.
Tensor& arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);
std::optional<Tensor> arg_opt_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);
std::vector<Tensor> arg_tensor_list(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name);
double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name);
Shape arg_shape(const Napi::CallbackInfo& info, size_t i, const char* name);    // int array
uint64_t arg_seed(const Napi::CallbackInfo& info, size_t i, const char* name);  // number or bigint
bool arg_present(const Napi::CallbackInfo& info, size_t i);                     // not undefined/null

Napi::Value wrap(Napi::Env env, Tensor t);
Napi::Value wrap_list(Napi::Env env, const std::vector<Tensor>& ts);

// Registration: each binding file adds its functions with SIFT_BINDINGS(name) { ... }.
using Registrar = void (*)(Napi::Env, Napi::Object);
std::vector<Registrar>& registry();
struct RegisterBindings {
  explicit RegisterBindings(Registrar r) { registry().push_back(r); }
};

inline void export_fn(Napi::Env env, Napi::Object exports, const char* name,
                      Napi::Value (*fn)(const Napi::CallbackInfo&)) {
  exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace sift::binding

#define SIFT_BINDINGS(name)                                          \
  static void name(Napi::Env env, Napi::Object exports);             \
  static ::sift::binding::RegisterBindings name##_registered(&name); \
  static void name(Napi::Env env, Napi::Object exports)

// SIFT_EXPORT(exports, "add", add_fn) where add_fn is Napi::Value add_fn(const CallbackInfo&)
#define SIFT_EXPORT(name, fn) ::sift::binding::export_fn(env, exports, name, &::sift::binding::guarded<fn>)
