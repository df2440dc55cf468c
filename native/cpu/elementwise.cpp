// CPU elementwise kernels. The op code is turned into a compile-time constant before the loop
// (dispatch_*_const), so each loop body is a plain, vectorisable expression. Contiguous operands
// take a flat loop; any other layout goes through StridedLoop (which also covers stride-0
// broadcast operands).
#include "elementwise.h"

#include <type_traits>

#include "parallel.h"
#include "strided.h"

namespace sift::cpu {
namespace {

constexpr int64_t kGrain = 16384;

// The type a kernel computes in: float for the 16-bit floats, the element type otherwise.
template <typename T>
using num_t = std::conditional_t<std::is_same_v<T, f16> || std::is_same_v<T, bf16>, float, T>;

template <UnaryOp OP>
using UnaryC = std::integral_constant<UnaryOp, OP>;
template <BinaryOp OP>
using BinaryC = std::integral_constant<BinaryOp, OP>;

template <typename F>
void dispatch_unary_const(UnaryOp op, F&& f) {
  switch (op) {
#define SIFT_U(X)            \
  case UnaryOp::X:           \
    f(UnaryC<UnaryOp::X>{}); \
    return;
    // clang-format off
    SIFT_U(Neg)
    SIFT_U(Exp)
    SIFT_U(Log)
    SIFT_U(Tanh)
    SIFT_U(Relu)
    SIFT_U(Gelu)
    SIFT_U(GeluTanh)
    SIFT_U(Silu)
    SIFT_U(Sigmoid)
    SIFT_U(Sqrt)
    SIFT_U(Rsqrt)
    SIFT_U(Abs)
    SIFT_U(Square)
    SIFT_U(Reciprocal)
    SIFT_U(Sin)
    SIFT_U(Cos)
    SIFT_U(Erf)
    SIFT_U(Sign)
    // clang-format on
#undef SIFT_U
  }
}

template <typename F>
void dispatch_binary_const(BinaryOp op, F&& f) {
  switch (op) {
#define SIFT_B(X)              \
  case BinaryOp::X:            \
    f(BinaryC<BinaryOp::X>{}); \
    return;
    // clang-format off
    SIFT_B(Add)
    SIFT_B(Sub)
    SIFT_B(Mul)
    SIFT_B(Div)
    SIFT_B(Pow)
    SIFT_B(Maximum)
    SIFT_B(Minimum)
    SIFT_B(Eq)
    SIFT_B(Ne)
    SIFT_B(Lt)
    SIFT_B(Le)
    SIFT_B(Gt)
    SIFT_B(Ge)
    SIFT_B(RSub)
    SIFT_B(RDiv)
    SIFT_B(RPow)
    // clang-format on
#undef SIFT_B
  }
}

// out[i] = f(x[i])
template <typename O, typename X, typename F>
void map1(const Tensor& out, const Tensor& x, F f) {
  O* po = out.data<O>();
  const X* px = x.data<X>();
  if (out.is_contiguous() && x.is_contiguous()) {
    parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) po[i] = f(px[i]);
    });
    return;
  }
  StridedLoop<2> loop(out.shape, {out.strides, x.strides});
  loop.run([&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
    O* o = po + off[0];
    const X* a = px + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; i++) o[i] = f(a[i]);
    } else {
      for (int64_t i = 0; i < n; i++) o[i * st[0]] = f(a[i * st[1]]);
    }
  });
}

// out[i] = f(x[i], y[i])
template <typename O, typename X, typename Y, typename F>
void map2(const Tensor& out, const Tensor& x, const Tensor& y, F f) {
  O* po = out.data<O>();
  const X* px = x.data<X>();
  const Y* py = y.data<Y>();
  if (out.is_contiguous() && x.is_contiguous() && y.is_contiguous()) {
    parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) po[i] = f(px[i], py[i]);
    });
    return;
  }
  StridedLoop<3> loop(out.shape, {out.strides, x.strides, y.strides});
  loop.run([&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) {
    O* o = po + off[0];
    const X* a = px + off[1];
    const Y* b = py + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; i++) o[i] = f(a[i], b[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {  // row plus a broadcast scalar
      const Y bv = b[0];
      for (int64_t i = 0; i < n; i++) o[i] = f(a[i], bv);
    } else {
      for (int64_t i = 0; i < n; i++) o[i * st[0]] = f(a[i * st[1]], b[i * st[2]]);
    }
  });
}

// out[i] = f(x[i], y[i], z[i])
template <typename O, typename X, typename Y, typename Z, typename F>
void map3(const Tensor& out, const Tensor& x, const Tensor& y, const Tensor& z, F f) {
  O* po = out.data<O>();
  const X* px = x.data<X>();
  const Y* py = y.data<Y>();
  const Z* pz = z.data<Z>();
  if (out.is_contiguous() && x.is_contiguous() && y.is_contiguous() && z.is_contiguous()) {
    parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) po[i] = f(px[i], py[i], pz[i]);
    });
    return;
  }
  StridedLoop<4> loop(out.shape, {out.strides, x.strides, y.strides, z.strides});
  loop.run([&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) {
    O* o = po + off[0];
    const X* a = px + off[1];
    const Y* b = py + off[2];
    const Z* c = pz + off[3];
    for (int64_t i = 0; i < n; i++) o[i * st[0]] = f(a[i * st[1]], b[i * st[2]], c[i * st[3]]);
  });
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  if (is_float(x.dtype)) {
    dispatch_float(x.dtype, "unary", [&](auto tt) {
      using T = typename decltype(tt)::type;
      using A = acc_t<T>;
      dispatch_unary_const(op, [&](auto c) {
        constexpr UnaryOp OP = decltype(c)::value;
        map1<T, T>(out, x, [](T v) { return T(ew::unary_fwd<A>(OP, A(v))); });
      });
    });
  } else {
    dispatch_int(x.dtype, "unary", [&](auto tt) {
      using T = typename decltype(tt)::type;
      dispatch_unary_const(op, [&](auto c) {
        constexpr UnaryOp OP = decltype(c)::value;
        map1<T, T>(out, x, [](T v) { return ew::unary_int<T>(OP, v); });
      });
    });
  }
}

void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx) {
  dispatch_float(x.dtype, "unaryBackward", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    dispatch_unary_const(op, [&](auto c) {
      constexpr UnaryOp OP = decltype(c)::value;
      map3<T, T, T, T>(gx, x, y, gy, [](T xv, T yv, T gv) { return T(ew::unary_bwd<A>(OP, A(xv), A(yv), A(gv))); });
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using C = num_t<T>;
    dispatch_binary_const(op, [&](auto c) {
      constexpr BinaryOp OP = decltype(c)::value;
      if constexpr (OP >= BinaryOp::Eq && OP <= BinaryOp::Ge) {
        map2<uint8_t, T, T>(out, a, b, [](T x, T y) { return ew::compare<C>(OP, C(x), C(y)); });
      } else if constexpr (std::is_floating_point_v<C>) {
        map2<T, T, T>(out, a, b, [](T x, T y) { return T(ew::binary_fwd<C>(OP, C(x), C(y))); });
      } else if constexpr (!std::is_same_v<T, uint8_t>) {
        map2<T, T, T>(out, a, b, [](T x, T y) { return ew::binary_int<T>(OP, x, y); });
      } else {
        fail("E_DTYPE", "binary: arithmetic on bool tensors");
      }
    });
  });
}

void scalar_op(BinaryOp op, const Tensor& a, double s, const Tensor& out) {
  dispatch_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using C = num_t<T>;
    dispatch_binary_const(op, [&](auto c) {
      constexpr BinaryOp OP = decltype(c)::value;
      if constexpr (std::is_floating_point_v<C>) {
        const C sv = C(s);
        if constexpr (OP >= BinaryOp::Eq && OP <= BinaryOp::Ge)
          map1<uint8_t, T>(out, a, [sv](T x) { return ew::compare<C>(OP, C(x), sv); });
        else
          map1<T, T>(out, a, [sv](T x) { return T(ew::binary_fwd<C>(OP, C(x), sv)); });
      } else {
        // Integers and bool compare in double, so that x < 2.5 means what it says.
        if constexpr (OP >= BinaryOp::Eq && OP <= BinaryOp::Ge) {
          map1<uint8_t, T>(out, a, [s](T x) { return ew::compare<double>(OP, double(x), s); });
        } else if constexpr (!std::is_same_v<T, uint8_t>) {
          const T sv = T(s);
          map1<T, T>(out, a, [sv](T x) { return ew::binary_int<T>(OP, x, sv); });
        } else {
          fail("E_DTYPE", "scalarOp: arithmetic on bool tensors");
        }
      }
    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    map3<T, uint8_t, T, T>(out, cond, a, b, [](uint8_t c, T x, T y) { return c ? x : y; });
  });
}

void add_inplace(const Tensor& dst, const Tensor& src, double alpha) {
  dispatch_all(dst.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using C = num_t<T>;
    if constexpr (std::is_floating_point_v<C>) {
      const C al = C(alpha);
      if (alpha == 1.0)
        map2<T, T, T>(dst, dst, src, [](T d, T s) { return T(C(d) + C(s)); });
      else
        map2<T, T, T>(dst, dst, src, [al](T d, T s) { return T(C(d) + al * C(s)); });
    } else if constexpr (!std::is_same_v<T, uint8_t>) {
      const T al = T(alpha);
      map2<T, T, T>(dst, dst, src, [al](T d, T s) { return T(d + al * s); });
    } else {
      fail("E_DTYPE", "addInplace: bool tensors");
    }
  });
}

void scale_inplace(const Tensor& dst, double s) {
  dispatch_all(dst.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using C = num_t<T>;
    if constexpr (std::is_floating_point_v<C>) {
      const C sv = C(s);
      map1<T, T>(dst, dst, [sv](T d) { return T(C(d) * sv); });
    } else if constexpr (!std::is_same_v<T, uint8_t>) {
      const T sv = T(s);
      map1<T, T>(dst, dst, [sv](T d) { return T(d * sv); });
    } else {
      fail("E_DTYPE", "scaleInplace: bool tensors");
    }
  });
}

}  // namespace sift::cpu
