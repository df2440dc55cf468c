// Bindings of the attention family: attention, attentionBackward, rotary, dropout.
#include "../ops/attention.h"
#include "util.h"

namespace sift::binding {
namespace {

// The trailing softcap and window arguments may be left out (undefined): 0, off.
double opt_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return i < info.Length() && !info[i].IsUndefined() ? arg_number(info, i, name) : 0.0;
}
int64_t opt_int(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return i < info.Length() && !info[i].IsUndefined() ? arg_int(info, i, name) : 0;
}

// attention(q, k, v, mask, causal, scale, dropoutP, seed, softcap?, window?) -> [out, lse]
Napi::Value Attention(const Napi::CallbackInfo& info) {
  auto [out, lse] = ops::attention(
      arg_tensor(info, 0, "q"), arg_tensor(info, 1, "k"), arg_tensor(info, 2, "v"), arg_opt_tensor(info, 3, "mask"),
      arg_bool(info, 4, "causal"), arg_number(info, 5, "scale"), arg_number(info, 6, "dropoutP"),
      arg_seed(info, 7, "seed"), opt_number(info, 8, "softcap"), opt_int(info, 9, "window"));
  return wrap_list(info.Env(), {out, lse});
}

// attentionBackward(gout, q, k, v, out, lse, mask, causal, scale, dropoutP, seed, softcap?, window?)
//   -> [gq, gk, gv]
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  auto [gq, gk, gv] = ops::attention_backward(
      arg_tensor(info, 0, "gout"), arg_tensor(info, 1, "q"), arg_tensor(info, 2, "k"), arg_tensor(info, 3, "v"),
      arg_tensor(info, 4, "out"), arg_tensor(info, 5, "lse"), arg_opt_tensor(info, 6, "mask"),
      arg_bool(info, 7, "causal"), arg_number(info, 8, "scale"), arg_number(info, 9, "dropoutP"),
      arg_seed(info, 10, "seed"), opt_number(info, 11, "softcap"), opt_int(info, 12, "window"));
  return wrap_list(info.Env(), {gq, gk, gv});
}

Napi::Value Rotary(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::rotary(arg_tensor(info, 0, "x"), arg_tensor(info, 1, "positions"),
                                      arg_tensor(info, 2, "invFreq"), arg_bool(info, 3, "inverse")));
}

Napi::Value Dropout(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::dropout(arg_tensor(info, 0, "x"), arg_number(info, 1, "p"), arg_seed(info, 2, "seed")));
}

// setCudaAttention(mode) -> previous mode. Calls already queued keep the kernels they were given.
Napi::Value SetCudaAttention(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ops::set_cuda_attention(arg_string(info, 0, "mode")));
}

}  // namespace

SIFT_BINDINGS(register_attention) {
  SIFT_EXPORT("attention", Attention);
  SIFT_EXPORT("attentionBackward", AttentionBackward);
  SIFT_EXPORT("rotary", Rotary);
  SIFT_EXPORT("dropout", Dropout);
  SIFT_EXPORT("setCudaAttention", SetCudaAttention);
}

}  // namespace sift::binding
