// Elementwise ops: unary maths and their gradients, broadcasting binary ops, ops with a scalar,
// where, and in-place updates. The op codes and the per-element maths live here so that the CPU
// kernels (g++) and the CUDA kernels (nvcc, __host__ __device__) compute the very same formulas.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "../core/tensor.h"

#if defined(__CUDACC__)
#define SIFT_HD __host__ __device__ __forceinline__
#else
#define SIFT_HD inline __attribute__((always_inline))
#endif

namespace sift {

enum class UnaryOp : uint8_t {
  Neg,
  Exp,
  Log,
  Tanh,
  Relu,
  Gelu,
  GeluTanh,
  Silu,
  Sigmoid,
  Sqrt,
  Rsqrt,
  Abs,
  Square,
  Reciprocal,
  Sin,
  Cos,
  Erf,
  Sign
};
// Binary ops; the comparisons (Eq..Ge) produce bool. RSub/RDiv/RPow only exist with a scalar
// (s - a, s / a, s ** a).
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge, RSub, RDiv, RPow };

UnaryOp parse_unary_op(const std::string& s);
BinaryOp parse_binary_op(const std::string& s, bool allow_reversed);
inline bool is_comparison(BinaryOp op) { return op >= BinaryOp::Eq && op <= BinaryOp::Ge; }
// Unary ops that are exact on integers (the others need a float dtype).
inline bool unary_int_ok(UnaryOp op) {
  return op == UnaryOp::Neg || op == UnaryOp::Abs || op == UnaryOp::Square || op == UnaryOp::Sign ||
         op == UnaryOp::Relu;
}

namespace ew {

// Maths overloads for the two accumulation types (float for f32/f16/bf16, double for f64). The
// C names are host and device functions in CUDA, so one definition serves both sides.
SIFT_HD float m_exp(float x) { return expf(x); }
SIFT_HD double m_exp(double x) { return exp(x); }
SIFT_HD float m_log(float x) { return logf(x); }
SIFT_HD double m_log(double x) { return log(x); }
SIFT_HD float m_tanh(float x) { return tanhf(x); }
SIFT_HD double m_tanh(double x) { return tanh(x); }
SIFT_HD float m_sqrt(float x) { return sqrtf(x); }
SIFT_HD double m_sqrt(double x) { return sqrt(x); }
SIFT_HD float m_sin(float x) { return sinf(x); }
SIFT_HD double m_sin(double x) { return sin(x); }
SIFT_HD float m_cos(float x) { return cosf(x); }
SIFT_HD double m_cos(double x) { return cos(x); }
SIFT_HD float m_erf(float x) { return erff(x); }
SIFT_HD double m_erf(double x) { return erf(x); }
SIFT_HD float m_erfc(float x) { return erfcf(x); }
SIFT_HD double m_erfc(double x) { return erfc(x); }
SIFT_HD float m_pow(float x, float y) { return powf(x, y); }
SIFT_HD double m_pow(double x, double y) { return pow(x, y); }
SIFT_HD float m_fabs(float x) { return fabsf(x); }
SIFT_HD double m_fabs(double x) { return fabs(x); }

template <typename A>
SIFT_HD bool is_nan(A x) {
  return x != x;
}

// Float forward maths. `op` is a compile-time constant on the CPU (the switch folds away) and
// uniform across a launch on the GPU.
template <typename A>
SIFT_HD A unary_fwd(UnaryOp op, A x) {
  const A one = A(1), half = A(0.5);
  switch (op) {
    case UnaryOp::Neg:
      return -x;
    case UnaryOp::Exp:
      return m_exp(x);
    case UnaryOp::Log:
      return m_log(x);
    case UnaryOp::Tanh:
      return m_tanh(x);
    case UnaryOp::Relu:
      return x > A(0) ? x : (is_nan(x) ? x : A(0));
    // Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation in 1 + erf(x / sqrt 2) for negative x (f32
    // erf implementations one ulp apart near -1 gave results 2e-5 apart relative at x = -3).
    case UnaryOp::Gelu:
      return half * x * m_erfc(x * A(-0.70710678118654752440));
    case UnaryOp::GeluTanh: {
      // 0.5 x (1 + tanh(u)) = x * sigmoid(2u): one exp instead of a tanh (several times faster
      // on the CPU), and no cancellation in 1 + tanh(u) for negative u. exp overflowing to inf
      // gives -0 (the limit); NaN stays NaN.
      A u = A(0.79788456080286535588) * (x + A(0.044715) * x * x * x);
      return x / (one + m_exp(A(-2) * u));
    }
    case UnaryOp::Silu:
      return x / (one + m_exp(-x));
    case UnaryOp::Sigmoid:
      return one / (one + m_exp(-x));
    case UnaryOp::Sqrt:
      return m_sqrt(x);
    case UnaryOp::Rsqrt:
      return one / m_sqrt(x);
    case UnaryOp::Abs:
      return m_fabs(x);
    case UnaryOp::Square:
      return x * x;
    case UnaryOp::Reciprocal:
      return one / x;
    case UnaryOp::Sin:
      return m_sin(x);
    case UnaryOp::Cos:
      return m_cos(x);
    case UnaryOp::Erf:
      return m_erf(x);
    case UnaryOp::Sign:
      return x > A(0) ? one : (x < A(0) ? -one : x);  // keeps 0, -0 and NaN
  }
  return x;
}

// dL/dx given x, y = f(x) and g = dL/dy. Exact derivatives; relu'(0) = abs'(0) = 0.
template <typename A>
SIFT_HD A unary_bwd(UnaryOp op, A x, A y, A g) {
  const A one = A(1), half = A(0.5);
  switch (op) {
    case UnaryOp::Neg:
      return -g;
    case UnaryOp::Exp:
      return g * y;
    case UnaryOp::Log:
      return g / x;
    case UnaryOp::Tanh:
      return g * (one - y * y);
    case UnaryOp::Relu:
      return x > A(0) ? g : A(0);
    case UnaryOp::Gelu: {
      A cdf = half * m_erfc(x * A(-0.70710678118654752440));
      A pdf = A(0.39894228040143267794) * m_exp(-half * x * x);
      return g * (cdf + x * pdf);
    }
    case UnaryOp::GeluTanh: {
      // With s = sigmoid(2u) = (1 + tanh(u)) / 2: d/dx [x s] = s + x * 2 s (1 - s) * u'.
      const A k = A(0.79788456080286535588), c = A(0.044715);
      A s = one / (one + m_exp(A(-2) * k * (x + c * x * x * x)));
      return g * (s + A(2) * x * s * (one - s) * k * (one + A(3) * c * x * x));
    }
    case UnaryOp::Silu: {
      A s = one / (one + m_exp(-x));
      return g * s * (one + x * (one - s));
    }
    case UnaryOp::Sigmoid:
      return g * y * (one - y);
    case UnaryOp::Sqrt:
      return g * half / y;
    case UnaryOp::Rsqrt:
      return g * A(-0.5) * y * y * y;
    case UnaryOp::Abs:
      return x > A(0) ? g : (x < A(0) ? -g : A(0));
    case UnaryOp::Square:
      return g * A(2) * x;
    case UnaryOp::Reciprocal:
      return -g * y * y;
    case UnaryOp::Sin:
      return g * m_cos(x);
    case UnaryOp::Cos:
      return -g * m_sin(x);
    case UnaryOp::Erf:
      return g * A(1.12837916709551257390) * m_exp(-x * x);
    case UnaryOp::Sign:
      return A(0);
  }
  return g;
}

// Integer unary ops (only those for which unary_int_ok); wrap-around like two's complement.
template <typename I>
SIFT_HD I unary_int(UnaryOp op, I x) {
  switch (op) {
    case UnaryOp::Neg:
      return I(0) - x;
    case UnaryOp::Abs:
      return x < I(0) ? I(0) - x : x;
    case UnaryOp::Square:
      return x * x;
    case UnaryOp::Sign:
      return x > I(0) ? I(1) : (x < I(0) ? I(-1) : I(0));
    case UnaryOp::Relu:
      return x > I(0) ? x : I(0);
    default:
      return x;
  }
}

// Float binary maths (arithmetic ops; comparisons go through compare()). maximum/minimum
// propagate NaN as NumPy does.
template <typename A>
SIFT_HD A binary_fwd(BinaryOp op, A a, A b) {
  switch (op) {
    case BinaryOp::Add:
      return a + b;
    case BinaryOp::Sub:
      return a - b;
    case BinaryOp::Mul:
      return a * b;
    case BinaryOp::Div:
      return a / b;
    case BinaryOp::Pow:
      return m_pow(a, b);
    case BinaryOp::Maximum:
      return (is_nan(a) || a > b) ? a : (is_nan(b) ? b : (a < b ? b : a));
    case BinaryOp::Minimum:
      return (is_nan(a) || a < b) ? a : (is_nan(b) ? b : (a > b ? b : a));
    case BinaryOp::RSub:
      return b - a;
    case BinaryOp::RDiv:
      return b / a;
    case BinaryOp::RPow:
      return m_pow(b, a);
    default:
      return a;
  }
}

// Integer power by squaring; negative exponents give 0 except for bases 1 and -1.
template <typename I>
SIFT_HD I int_pow(I base, I e) {
  if (e < I(0)) {
    if (base == I(1)) return I(1);
    if (base == I(-1)) return (e % I(2) == I(0)) ? I(1) : I(-1);
    return I(0);
  }
  I r = I(1);
  while (e > I(0)) {
    if (e & I(1)) r = r * base;
    base = base * base;
    e = e >> 1;
  }
  return r;
}

// Integer division truncates toward zero; x / 0 is defined as 0 here (no trap), and
// INT_MIN / -1 wraps, so that no input can crash the process.
template <typename I>
SIFT_HD I int_div(I a, I b) {
  if (b == I(0)) return I(0);
  if (b == I(-1)) return I(0) - a;
  return a / b;
}

template <typename I>
SIFT_HD I binary_int(BinaryOp op, I a, I b) {
  switch (op) {
    case BinaryOp::Add:
      return a + b;
    case BinaryOp::Sub:
      return a - b;
    case BinaryOp::Mul:
      return a * b;
    case BinaryOp::Div:
      return int_div(a, b);
    case BinaryOp::Pow:
      return int_pow(a, b);
    case BinaryOp::Maximum:
      return a > b ? a : b;
    case BinaryOp::Minimum:
      return a < b ? a : b;
    case BinaryOp::RSub:
      return b - a;
    case BinaryOp::RDiv:
      return int_div(b, a);
    case BinaryOp::RPow:
      return int_pow(b, a);
    default:
      return a;
  }
}

template <typename A>
SIFT_HD uint8_t compare(BinaryOp op, A a, A b) {
  switch (op) {
    case BinaryOp::Eq:
      return a == b;
    case BinaryOp::Ne:
      return a != b;
    case BinaryOp::Lt:
      return a < b;
    case BinaryOp::Le:
      return a <= b;
    case BinaryOp::Gt:
      return a > b;
    case BinaryOp::Ge:
      return a >= b;
    default:
      return 0;
  }
}

}  // namespace ew

namespace ops {

// NumPy broadcast of two shapes, or E_SHAPE naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// A stride-0 view of t expanded to `shape` (t's shape must broadcast to it).
Tensor broadcast_to(const Tensor& t, const Shape& shape, const char* op);

Tensor unary(UnaryOp op, const Tensor& x);
Tensor unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor scalar_op(BinaryOp op, const Tensor& a, double s);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
void add_inplace(Tensor& dst, const Tensor& src, double alpha);
void scale_inplace(Tensor& dst, double s);

// Convenience for other op families.
inline Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }

}  // namespace ops
}  // namespace sift
