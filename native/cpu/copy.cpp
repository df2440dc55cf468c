#include "copy.h"

#include <cmath>
#include <cstring>

#include "../core/random.h"
#include "strided.h"

namespace sift::cpu {

namespace {
template <typename D, typename S>
inline D convert(S v) {
  if constexpr (std::is_same_v<D, uint8_t>) {
    return static_cast<float>(v) != 0.0f ? 1 : 0;
  } else if constexpr (std::is_same_v<D, f16> || std::is_same_v<D, bf16>) {
    return D(static_cast<float>(v));
  } else if constexpr (std::is_same_v<S, f16> || std::is_same_v<S, bf16>) {
    return static_cast<D>(static_cast<float>(v));
  } else {
    return static_cast<D>(v);
  }
}
}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
  const size_t ss = src.itemsize(), ds = dst.itemsize();
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    const char* s = static_cast<const char*>(src.raw());
    char* d = static_cast<char*>(dst.raw());
    int64_t n = src.numel();
    parallel_for(n, 1 << 20, [&](int64_t b, int64_t e) { std::memcpy(d + b * ds, s + b * ss, size_t(e - b) * ss); });
    return;
  }
  StridedLoop<2> loop(dst.shape, {dst.strides, src.strides});
  dispatch_all(dst.dtype, [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_all(src.dtype, [&](auto st) {
      using S = typename decltype(st)::type;
      D* dp = dst.data<D>();
      const S* sp = src.data<S>();
      loop.run([&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& is) {
        D* d = dp + off[0];
        const S* s = sp + off[1];
        for (int64_t i = 0; i < n; i++) d[i * is[0]] = convert<D>(s[i * is[1]]);
      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  StridedLoop<1> loop(dst.shape, {dst.strides});
  dispatch_all(dst.dtype, [&](auto dt) {
    using D = typename decltype(dt)::type;
    D v = convert<D>(value);
    D* dp = dst.data<D>();
    loop.run([&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& is) {
      D* d = dp + off[0];
      for (int64_t i = 0; i < n; i++) d[i * is[0]] = v;
    });
  });
}

void randn(const Tensor& dst, uint64_t seed) {
  // Box-Muller on pairs: element 2j uses cos, 2j+1 uses sin of the same pair (counter j).
  dispatch_float(dst.dtype, "randn", [&](auto dt) {
    using D = typename decltype(dt)::type;
    D* d = dst.data<D>();
    int64_t n = dst.numel();
    parallel_for((n + 1) / 2, 4096, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; j++) {
        double u1 = rng_uniform_open53(seed, 2 * uint64_t(j));
        double u2 = rng_uniform_open53(seed, 2 * uint64_t(j) + 1);
        double r = std::sqrt(-2.0 * std::log(u1));
        double th = 6.283185307179586 * u2;
        d[2 * j] = convert<D>(r * std::cos(th));
        if (2 * j + 1 < n) d[2 * j + 1] = convert<D>(r * std::sin(th));
      }
    });
  });
}

void rand(const Tensor& dst, uint64_t seed) {
  dispatch_float(dst.dtype, "rand", [&](auto dt) {
    using D = typename decltype(dt)::type;
    D* d = dst.data<D>();
    parallel_for(dst.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) d[i] = convert<D>(rng_uniform(seed, uint64_t(i)));
    });
  });
}

void arange(const Tensor& dst, double start, double step) {
  dispatch_all(dst.dtype, [&](auto dt) {
    using D = typename decltype(dt)::type;
    D* d = dst.data<D>();
    int64_t n = dst.numel();
    for (int64_t i = 0; i < n; i++) d[i] = convert<D>(start + step * double(i));
  });
}

}  // namespace sift::cpu
