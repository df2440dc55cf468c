// Bindings of the elementwise ops (see lib/engine/addon-types.ts for the contract).
#include "../ops/elementwise.h"
#include "util.h"

namespace sift::binding {
namespace {

Napi::Value Unary(const Napi::CallbackInfo& info) {
  UnaryOp op = parse_unary_op(arg_string(info, 0, "op"));
  return wrap(info.Env(), ops::unary(op, arg_tensor(info, 1, "x")));
}

Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  UnaryOp op = parse_unary_op(arg_string(info, 0, "op"));
  return wrap(info.Env(),
              ops::unary_backward(op, arg_tensor(info, 1, "x"), arg_tensor(info, 2, "y"), arg_tensor(info, 3, "gy")));
}

Napi::Value Binary(const Napi::CallbackInfo& info) {
  BinaryOp op = parse_binary_op(arg_string(info, 0, "op"), false);
  return wrap(info.Env(), ops::binary(op, arg_tensor(info, 1, "a"), arg_tensor(info, 2, "b")));
}

Napi::Value ScalarOp(const Napi::CallbackInfo& info) {
  BinaryOp op = parse_binary_op(arg_string(info, 0, "op"), true);
  return wrap(info.Env(), ops::scalar_op(op, arg_tensor(info, 1, "a"), arg_number(info, 2, "s")));
}

Napi::Value Where(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::where(arg_tensor(info, 0, "cond"), arg_tensor(info, 1, "a"), arg_tensor(info, 2, "b")));
}

Napi::Value AddInplace(const Napi::CallbackInfo& info) {
  ops::add_inplace(arg_tensor(info, 0, "dst"), arg_tensor(info, 1, "src"), arg_number(info, 2, "alpha"));
  return info.Env().Undefined();
}

Napi::Value ScaleInplace(const Napi::CallbackInfo& info) {
  ops::scale_inplace(arg_tensor(info, 0, "dst"), arg_number(info, 1, "s"));
  return info.Env().Undefined();
}

}  // namespace

SIFT_BINDINGS(register_elementwise) {
  SIFT_EXPORT("unary", Unary);
  SIFT_EXPORT("unaryBackward", UnaryBackward);
  SIFT_EXPORT("binary", Binary);
  SIFT_EXPORT("scalarOp", ScalarOp);
  SIFT_EXPORT("where", Where);
  SIFT_EXPORT("addInplace", AddInplace);
  SIFT_EXPORT("scaleInplace", ScaleInplace);
}

}  // namespace sift::binding
