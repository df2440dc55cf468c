// Validation and dispatch of the elementwise ops: dtypes, devices and broadcast shapes are
// checked here, outputs allocated contiguous, and the kernels queued on the device's stream.
#include "elementwise.h"

#include <cmath>

#include "dispatch.h"
#include "tensor_ops.h"
#include "../cpu/elementwise.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/elementwise.h"
#endif

namespace sift {

UnaryOp parse_unary_op(const std::string& s) {
  static const struct {
    const char* name;
    UnaryOp op;
  } table[] = {{"neg", UnaryOp::Neg},
               {"exp", UnaryOp::Exp},
               {"log", UnaryOp::Log},
               {"tanh", UnaryOp::Tanh},
               {"relu", UnaryOp::Relu},
               {"gelu", UnaryOp::Gelu},
               {"gelu_tanh", UnaryOp::GeluTanh},
               {"silu", UnaryOp::Silu},
               {"sigmoid", UnaryOp::Sigmoid},
               {"sqrt", UnaryOp::Sqrt},
               {"rsqrt", UnaryOp::Rsqrt},
               {"abs", UnaryOp::Abs},
               {"square", UnaryOp::Square},
               {"reciprocal", UnaryOp::Reciprocal},
               {"sin", UnaryOp::Sin},
               {"cos", UnaryOp::Cos},
               {"erf", UnaryOp::Erf},
               {"sign", UnaryOp::Sign}};
  for (const auto& e : table)
    if (s == e.name) return e.op;
  fail("E_ARG", "unknown unary op '", s, "'");
}

BinaryOp parse_binary_op(const std::string& s, bool allow_reversed) {
  static const struct {
    const char* name;
    BinaryOp op;
  } table[] = {
      {"add", BinaryOp::Add}, {"sub", BinaryOp::Sub},         {"mul", BinaryOp::Mul},         {"div", BinaryOp::Div},
      {"pow", BinaryOp::Pow}, {"maximum", BinaryOp::Maximum}, {"minimum", BinaryOp::Minimum}, {"eq", BinaryOp::Eq},
      {"ne", BinaryOp::Ne},   {"lt", BinaryOp::Lt},           {"le", BinaryOp::Le},           {"gt", BinaryOp::Gt},
      {"ge", BinaryOp::Ge},   {"rsub", BinaryOp::RSub},       {"rdiv", BinaryOp::RDiv},       {"rpow", BinaryOp::RPow}};
  for (const auto& e : table) {
    if (s != e.name) continue;
    SIFT_CHECK(allow_reversed || e.op < BinaryOp::RSub, "E_ARG", "'", s,
               "' is only available with a scalar operand (scalarOp)");
    return e.op;
  }
  fail("E_ARG", "unknown ", allow_reversed ? "scalar" : "binary", " op '", s, "'");
}

namespace ops {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; i++) {
    int64_t da = i + a.size() >= n ? a[i + a.size() - n] : 1;
    int64_t db = i + b.size() >= n ? b[i + b.size() - n] : 1;
    SIFT_CHECK(da == db || da == 1 || db == 1, "E_SHAPE", op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor broadcast_to(const Tensor& t, const Shape& shape, const char* op) {
  if (t.shape == shape) return t;
  SIFT_CHECK(t.shape.size() <= shape.size(), "E_SHAPE", op, ": shape ", shape_str(t.shape), " cannot be broadcast to ",
             shape_str(shape));
  size_t lead = shape.size() - t.shape.size();
  Shape strides(shape.size(), 0);
  for (size_t i = 0; i < t.shape.size(); i++) {
    int64_t have = t.shape[i], want = shape[lead + i];
    SIFT_CHECK(have == want || have == 1, "E_SHAPE", op, ": shape ", shape_str(t.shape), " cannot be broadcast to ",
               shape_str(shape));
    strides[lead + i] = have == want ? t.strides[i] : 0;
  }
  return make_view(t, shape, strides, t.offset);
}

namespace {

const char* unary_name(UnaryOp op) {
  static const char* names[] = {"neg",  "exp",   "log", "tanh",   "relu",       "gelu", "gelu_tanh", "silu", "sigmoid",
                                "sqrt", "rsqrt", "abs", "square", "reciprocal", "sin",  "cos",       "erf",  "sign"};
  return names[int(op)];
}

const char* binary_name(BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq",
                                "ne",  "lt",  "le",  "gt",  "ge",  "rsub",    "rdiv",    "rpow"};
  return names[int(op)];
}

void check_defined(const Tensor& t, const char* op) { SIFT_CHECK(t.defined(), "E_ARG", op, ": undefined tensor"); }

// Arithmetic needs numbers; bool only takes part in comparisons (and where).
void check_arith_dtype(DType t, BinaryOp op) {
  SIFT_CHECK(is_comparison(op) || t != DType::BOOL, "E_DTYPE", binary_name(op),
             ": arithmetic on bool tensors; cast to a number type first");
}

}  // namespace

Tensor unary(UnaryOp op, const Tensor& x) {
  check_defined(x, "unary");
  SIFT_CHECK(is_float(x.dtype) || (is_int(x.dtype) && unary_int_ok(op)), "E_DTYPE", unary_name(op),
             ": not defined for ", dtype_name(x.dtype), " tensors",
             is_int(x.dtype) ? "; cast to a float type first" : "");
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::unary(op, x, out), cuda::unary(op, x, out));
  return out;
}

Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy) {
  check_defined(x, "unaryBackward");
  check_defined(y, "unaryBackward");
  check_defined(gy, "unaryBackward");
  check_same_device(x, y, "unaryBackward");
  check_same_device(x, gy, "unaryBackward");
  check_float(x, "unaryBackward");
  check_same_dtype(x, y, "unaryBackward");
  check_same_dtype(x, gy, "unaryBackward");
  SIFT_CHECK(x.shape == y.shape && x.shape == gy.shape, "E_SHAPE", "unaryBackward(", unary_name(op), "): x ",
             shape_str(x.shape), ", y ", shape_str(y.shape), " and gy ", shape_str(gy.shape), " must have one shape");
  Tensor gx = empty(x.shape, x.dtype, x.device());
  if (gx.numel() == 0) return gx;
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::unary_backward(op, x, y, gy, gx), cuda::unary_backward(op, x, y, gy, gx));
  return gx;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  SIFT_CHECK(op < BinaryOp::RSub, "E_ARG", binary_name(op), " needs a scalar operand");
  check_defined(a, binary_name(op));
  check_defined(b, binary_name(op));
  check_same_device(a, b, binary_name(op));
  check_same_dtype(a, b, binary_name(op));
  check_arith_dtype(a.dtype, op);
  Shape shape = broadcast_shapes(a.shape, b.shape, binary_name(op));
  Tensor out = empty(shape, is_comparison(op) ? DType::BOOL : a.dtype, a.device());
  if (out.numel() == 0) return out;
  Tensor ab = broadcast_to(a, shape, binary_name(op));
  Tensor bb = broadcast_to(b, shape, binary_name(op));
  Device dev = a.device();
  SIFT_ON_DEVICE(dev, cpu::binary(op, ab, bb, out), cuda::binary(op, ab, bb, out));
  return out;
}

Tensor scalar_op(BinaryOp op, const Tensor& a, double s) {
  check_defined(a, binary_name(op));
  check_arith_dtype(a.dtype, op);
  if (is_int(a.dtype) && !is_comparison(op)) {
    // Integer results from an integer scalar only; 0.5 * i32 would silently become 0.
    SIFT_CHECK(std::isfinite(s) && s == std::trunc(s), "E_DTYPE", binary_name(op), ": scalar ", s,
               " is not an integer but the tensor is ", dtype_name(a.dtype), "; cast it to a float type");
  }
  Tensor out = empty(a.shape, is_comparison(op) ? DType::BOOL : a.dtype, a.device());
  if (out.numel() == 0) return out;
  Device dev = a.device();
  SIFT_ON_DEVICE(dev, cpu::scalar_op(op, a, s, out), cuda::scalar_op(op, a, s, out));
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined(cond, "where");
  check_defined(a, "where");
  check_defined(b, "where");
  check_same_device(cond, a, "where");
  check_same_device(a, b, "where");
  check_same_dtype(a, b, "where");
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape, a.shape, "where"), b.shape, "where");
  Tensor out = empty(shape, a.dtype, a.device());
  if (out.numel() == 0) return out;
  // Any dtype is a condition (nonzero = true): converting to bool once keeps the kernels small.
  Tensor c = broadcast_to(cond.dtype == DType::BOOL ? cond : cast(cond, DType::BOOL), shape, "where");
  Tensor ab = broadcast_to(a, shape, "where");
  Tensor bb = broadcast_to(b, shape, "where");
  Device dev = a.device();
  SIFT_ON_DEVICE(dev, cpu::where(c, ab, bb, out), cuda::where(c, ab, bb, out));
  return out;
}

void add_inplace(Tensor& dst, const Tensor& src, double alpha) {
  check_defined(dst, "addInplace");
  check_defined(src, "addInplace");
  check_same_device(dst, src, "addInplace");
  check_same_dtype(dst, src, "addInplace");
  SIFT_CHECK(dst.dtype != DType::BOOL, "E_DTYPE", "addInplace: bool tensors");
  SIFT_CHECK(is_float(dst.dtype) || alpha == std::trunc(alpha), "E_DTYPE", "addInplace: alpha ", alpha,
             " is not an integer but the tensor is ", dtype_name(dst.dtype));
  SIFT_CHECK(broadcast_shapes(dst.shape, src.shape, "addInplace") == dst.shape, "E_SHAPE", "addInplace: src ",
             shape_str(src.shape), " does not broadcast to dst ", shape_str(dst.shape));
  if (dst.numel() == 0) return;
  Tensor d = dst;
  Tensor s = broadcast_to(src, dst.shape, "addInplace");
  Device dev = dst.device();
  SIFT_ON_DEVICE(dev, cpu::add_inplace(d, s, alpha), cuda::add_inplace(d, s, alpha));
}

void scale_inplace(Tensor& dst, double s) {
  check_defined(dst, "scaleInplace");
  SIFT_CHECK(dst.dtype != DType::BOOL, "E_DTYPE", "scaleInplace: bool tensors");
  SIFT_CHECK(is_float(dst.dtype) || s == std::trunc(s), "E_DTYPE", "scaleInplace: scale ", s,
             " is not an integer but the tensor is ", dtype_name(dst.dtype));
  if (dst.numel() == 0) return;
  Tensor d = dst;
  Device dev = dst.device();
  SIFT_ON_DEVICE(dev, cpu::scale_inplace(d, s), cuda::scale_inplace(d, s));
}

}  // namespace ops
}  // namespace sift
