// CPU reductions over x[O, R, I]. Rows (I == 1) are summed with several independent
// accumulators (vectorisable, and more accurate than one running sum); long rows are cut into
// fixed-size chunks whose partial results are combined in order, so the result does not depend
// on the number of threads. Columns (I > 1) accumulate a block of outputs row by row, reading
// memory in order.
#include "reduce.h"

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "parallel.h"

namespace sift::cpu {
namespace {

template <typename T>
using num_t = std::conditional_t<std::is_same_v<T, f16> || std::is_same_v<T, bf16>, float, T>;

// Accumulator type: f32 for f32/f16/bf16, f64 for f64, i64 for integers.
template <typename T>
using racc_t = std::conditional_t<std::is_integral_v<T>, int64_t, acc_t<T>>;

template <ReduceOp OP, typename A>
struct R {
  static constexpr bool kMax = OP == ReduceOp::Max || OP == ReduceOp::AbsMax;
  static constexpr bool kMin = OP == ReduceOp::Min;
  static A init() {
    if constexpr (kMin)
      return std::is_integral_v<A> ? std::numeric_limits<A>::max() : std::numeric_limits<A>::infinity();
    else if constexpr (OP == ReduceOp::Max)
      return std::is_integral_v<A> ? std::numeric_limits<A>::lowest() : -std::numeric_limits<A>::infinity();
    else
      return A(0);  // sums, and absmax (|x| >= 0)
  }
  static A map(A v) {
    if constexpr (OP == ReduceOp::SumSq)
      return v * v;
    else if constexpr (OP == ReduceOp::AbsMax)
      return v < A(0) ? -v : v;
    else
      return v;
  }
  // NaN wins in max/min (once the accumulator is NaN, no comparison replaces it).
  static A combine(A acc, A v) {
    if constexpr (kMax)
      return (v > acc || v != v) ? v : acc;
    else if constexpr (kMin)
      return (v < acc || v != v) ? v : acc;
    else
      return acc + v;
  }
  static A finish(A acc, int64_t count) {
    if constexpr (OP == ReduceOp::Mean)
      return acc / A(count);
    else
      return acc;
  }
};

constexpr int kLanes = 8;
constexpr int64_t kChunk = 1 << 16;

// Reduces n contiguous elements (mapped, not finished).
template <ReduceOp OP, typename T, typename A>
A reduce_run(const T* p, int64_t n) {
  using Rd = R<OP, A>;
  A lane[kLanes];
  for (int k = 0; k < kLanes; k++) lane[k] = Rd::init();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; k++) lane[k] = Rd::combine(lane[k], Rd::map(A(num_t<T>(p[i + k]))));
  for (; i < n; i++) lane[0] = Rd::combine(lane[0], Rd::map(A(num_t<T>(p[i]))));
  // Pairwise combination of the lanes.
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; k++) lane[k] = Rd::combine(lane[k], lane[k + w]);
  return lane[0];
}

template <ReduceOp OP, typename T>
void reduce_typed(const T* x, int64_t O, int64_t Rn, int64_t I, T* out) {
  using A = racc_t<T>;
  using Rd = R<OP, A>;
  if (I == 1) {
    const int64_t chunks = Rn > kChunk ? (Rn + kChunk - 1) / kChunk : 1;
    if (chunks == 1) {
      int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(Rn, 1));
      parallel_for(O, grain, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; o++) out[o] = T(Rd::finish(reduce_run<OP, T, A>(x + o * Rn, Rn), Rn));
      });
      return;
    }
    std::vector<A> part(size_t(O * chunks));
    parallel_for(O * chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; t++) {
        int64_t o = t / chunks, c = t % chunks;
        int64_t r0 = c * kChunk, r1 = std::min(Rn, r0 + kChunk);
        part[size_t(t)] = reduce_run<OP, T, A>(x + o * Rn + r0, r1 - r0);
      }
    });
    for (int64_t o = 0; o < O; o++) {
      A acc = part[size_t(o * chunks)];
      for (int64_t c = 1; c < chunks; c++) acc = Rd::combine(acc, part[size_t(o * chunks + c)]);
      out[o] = T(Rd::finish(acc, Rn));
    }
    return;
  }
  // Columns: each task owns a block of up to kBlock outputs of one o.
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (I + kBlock - 1) / kBlock;
  int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(Rn * std::min(I, kBlock), 1));
  parallel_for(O * blocks, grain, [&](int64_t b, int64_t e) {
    A acc[kBlock];
    for (int64_t t = b; t < e; t++) {
      int64_t o = t / blocks, i0 = (t % blocks) * kBlock, i1 = std::min(I, i0 + kBlock);
      int64_t w = i1 - i0;
      for (int64_t k = 0; k < w; k++) acc[k] = Rd::init();
      const T* base = x + o * Rn * I + i0;
      for (int64_t r = 0; r < Rn; r++) {
        const T* row = base + r * I;
        for (int64_t k = 0; k < w; k++) acc[k] = Rd::combine(acc[k], Rd::map(A(num_t<T>(row[k]))));
      }
      for (int64_t k = 0; k < w; k++) out[o * I + i0 + k] = T(Rd::finish(acc[k], Rn));
    }
  });
}

template <typename F>
void dispatch_reduce_const(ReduceOp op, F&& f) {
  switch (op) {
    case ReduceOp::Sum:
      f(std::integral_constant<ReduceOp, ReduceOp::Sum>{});
      return;
    case ReduceOp::Mean:
      f(std::integral_constant<ReduceOp, ReduceOp::Mean>{});
      return;
    case ReduceOp::Max:
      f(std::integral_constant<ReduceOp, ReduceOp::Max>{});
      return;
    case ReduceOp::Min:
      f(std::integral_constant<ReduceOp, ReduceOp::Min>{});
      return;
    case ReduceOp::SumSq:
      f(std::integral_constant<ReduceOp, ReduceOp::SumSq>{});
      return;
    case ReduceOp::AbsMax:
      f(std::integral_constant<ReduceOp, ReduceOp::AbsMax>{});
      return;
  }
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, int64_t O, int64_t Rn, int64_t I, const Tensor& out) {
  dispatch_all(x.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    if constexpr (!std::is_same_v<T, uint8_t>) {
      dispatch_reduce_const(op, [&](auto c) {
        constexpr ReduceOp OP = decltype(c)::value;
        reduce_typed<OP, T>(x.data<T>(), O, Rn, I, out.data<T>());
      });
    }
  });
}

void argmax(const Tensor& x, int64_t O, int64_t Rn, int64_t I, const Tensor& out) {
  dispatch_all(x.dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using C = num_t<T>;
    const T* px = x.data<T>();
    int64_t* po = out.data<int64_t>();
    parallel_for(O * I, std::max<int64_t>(1, 32768 / std::max<int64_t>(Rn, 1)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; t++) {
        int64_t o = t / I, i = t % I;
        const T* p = px + o * Rn * I + i;
        C best = C(p[0]);
        int64_t bi = 0;
        for (int64_t r = 1; r < Rn && best == best; r++) {
          C v = C(p[r * I]);
          if (v > best || v != v) {
            best = v;
            bi = r;
          }
        }
        po[t] = bi;
      }
    });
  });
}

}  // namespace sift::cpu
