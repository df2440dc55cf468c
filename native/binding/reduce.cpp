// Bindings of the reductions (see lib/engine/addon-types.ts for the contract).
#include "../ops/reduce.h"
#include "util.h"

namespace sift::binding {
namespace {

std::vector<int64_t> arg_dims(const Napi::CallbackInfo& info, size_t i) {
  SIFT_CHECK(i < info.Length() && info[i].IsArray(), "E_ARG", "expected an array of integers for 'dims'");
  auto arr = info[i].As<Napi::Array>();
  std::vector<int64_t> dims;
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    SIFT_CHECK(v.IsNumber(), "E_ARG", "'dims' must hold integers");
    double d = v.As<Napi::Number>().DoubleValue();
    SIFT_CHECK(d == double(int64_t(d)), "E_ARG", "'dims' must hold integers, got ", d);
    dims.push_back(int64_t(d));
  }
  return dims;
}

Napi::Value Reduce(const Napi::CallbackInfo& info) {
  ReduceOp op = parse_reduce_op(arg_string(info, 0, "op"));
  return wrap(info.Env(), ops::reduce(op, arg_tensor(info, 1, "x"), arg_dims(info, 2), arg_bool(info, 3, "keepdim")));
}

Napi::Value Argmax(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::argmax(arg_tensor(info, 0, "x"), arg_int(info, 1, "dim"), arg_bool(info, 2, "keepdim")));
}

Napi::Value SumTo(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::sum_to(arg_tensor(info, 0, "x"), arg_shape(info, 1, "shape")));
}

}  // namespace

SIFT_BINDINGS(register_reduce) {
  SIFT_EXPORT("reduce", Reduce);
  SIFT_EXPORT("argmax", Argmax);
  SIFT_EXPORT("sumTo", SumTo);
}

}  // namespace sift::binding
