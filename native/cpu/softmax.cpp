// Softmax / log-softmax on the CPU. Statistics are kept in acc_t<T> (double for f64, float for
// the 16-bit types and f32) and the max is subtracted first so that large logits stay finite.
#include "softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "numeric.h"
#include "parallel.h"

namespace sift::cpu {
namespace {

template <typename T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  parallel_for(rows, row_grain(n), [&](int64_t b, int64_t e) {
    std::vector<A> buf(static_cast<size_t>(n));
    for (int64_t r = b; r < e; r++) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      A mx = -std::numeric_limits<A>::infinity();
      for (int64_t i = 0; i < n; i++) {
        buf[i] = ld<A>(xr[i]);
        mx = std::max(mx, buf[i]);
      }
      // A row of -inf (fully masked) has no finite max: use 0 so that exp gives 0 rather than NaN.
      if (!std::isfinite(mx)) mx = std::isnan(mx) ? mx : A(0);
      A sum = 0;
      for (int64_t i = 0; i < n; i++) sum += std::exp(buf[i] - mx);
      if (log) {
        A lse = mx + std::log(sum);
        for (int64_t i = 0; i < n; i++) yr[i] = st<T>(buf[i] - lse);
      } else {
        A inv = A(1) / sum;
        for (int64_t i = 0; i < n; i++) yr[i] = st<T>(std::exp(buf[i] - mx) * inv);
      }
    }
  });
}

// Softmax along a strided dim: each task takes a tile of up to kTile inner columns of one outer
// index and walks n with contiguous inner loads.
constexpr int64_t kTile = 256;

template <typename T>
void softmax_cols(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = acc_t<T>;
  int64_t tiles = (inner + kTile - 1) / kTile;
  parallel_for(outer * tiles, std::max<int64_t>(1, 8192 / std::max<int64_t>(n * kTile, 1)), [&](int64_t b, int64_t e) {
    A mx[kTile], sum[kTile];
    for (int64_t task = b; task < e; task++) {
      int64_t o = task / tiles, j0 = (task % tiles) * kTile;
      int64_t w = std::min(kTile, inner - j0);
      const T* xb = x + o * n * inner + j0;
      T* yb = y + o * n * inner + j0;
      for (int64_t j = 0; j < w; j++) {
        mx[j] = -std::numeric_limits<A>::infinity();
        sum[j] = 0;
      }
      for (int64_t k = 0; k < n; k++)
        for (int64_t j = 0; j < w; j++) mx[j] = std::max(mx[j], ld<A>(xb[k * inner + j]));
      for (int64_t j = 0; j < w; j++)
        if (!std::isfinite(mx[j]) && !std::isnan(mx[j])) mx[j] = 0;
      for (int64_t k = 0; k < n; k++)
        for (int64_t j = 0; j < w; j++) sum[j] += std::exp(ld<A>(xb[k * inner + j]) - mx[j]);
      if (log) {
        for (int64_t j = 0; j < w; j++) sum[j] = mx[j] + std::log(sum[j]);  // log-sum-exp
        for (int64_t k = 0; k < n; k++)
          for (int64_t j = 0; j < w; j++) yb[k * inner + j] = st<T>(ld<A>(xb[k * inner + j]) - sum[j]);
      } else {
        for (int64_t j = 0; j < w; j++) sum[j] = A(1) / sum[j];
        for (int64_t k = 0; k < n; k++)
          for (int64_t j = 0; j < w; j++)
            yb[k * inner + j] = st<T>(std::exp(ld<A>(xb[k * inner + j]) - mx[j]) * sum[j]);
      }
    }
  });
}

// softmax:     gx = y * (gy - sum(gy * y))
// log-softmax: gx = gy - exp(y) * sum(gy)
template <typename T>
void backward_rows(const T* y, const T* gy, T* gx, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  parallel_for(rows, row_grain(n), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const T* yr = y + r * n;
      const T* gr = gy + r * n;
      T* out = gx + r * n;
      A dot = 0;
      if (log)
        for (int64_t i = 0; i < n; i++) dot += ld<A>(gr[i]);
      else
        for (int64_t i = 0; i < n; i++) dot += ld<A>(gr[i]) * ld<A>(yr[i]);
      if (log)
        for (int64_t i = 0; i < n; i++) out[i] = st<T>(ld<A>(gr[i]) - std::exp(ld<A>(yr[i])) * dot);
      else
        for (int64_t i = 0; i < n; i++) out[i] = st<T>(ld<A>(yr[i]) * (ld<A>(gr[i]) - dot));
    }
  });
}

template <typename T>
void backward_cols(const T* y, const T* gy, T* gx, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = acc_t<T>;
  int64_t tiles = (inner + kTile - 1) / kTile;
  parallel_for(outer * tiles, std::max<int64_t>(1, 8192 / std::max<int64_t>(n * kTile, 1)), [&](int64_t b, int64_t e) {
    A dot[kTile];
    for (int64_t task = b; task < e; task++) {
      int64_t o = task / tiles, j0 = (task % tiles) * kTile;
      int64_t w = std::min(kTile, inner - j0);
      int64_t base = o * n * inner + j0;
      for (int64_t j = 0; j < w; j++) dot[j] = 0;
      for (int64_t k = 0; k < n; k++)
        for (int64_t j = 0; j < w; j++) {
          int64_t i = base + k * inner + j;
          dot[j] += log ? ld<A>(gy[i]) : ld<A>(gy[i]) * ld<A>(y[i]);
        }
      for (int64_t k = 0; k < n; k++)
        for (int64_t j = 0; j < w; j++) {
          int64_t i = base + k * inner + j;
          A g = ld<A>(gy[i]), yv = ld<A>(y[i]);
          gx[i] = st<T>(log ? g - std::exp(yv) * dot[j] : yv * (g - dot[j]));
        }
    }
  });
}

}  // namespace

void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) {
  if (outer * n * inner == 0) return;
  dispatch_float(x.dtype, "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (inner == 1)
      softmax_rows(x.data<T>(), y.data<T>(), outer, n, log);
    else
      softmax_cols(x.data<T>(), y.data<T>(), outer, n, inner, log);
  });
}

void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, int64_t outer, int64_t n, int64_t inner,
                      bool log) {
  if (outer * n * inner == 0) return;
  dispatch_float(y.dtype, "softmaxBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (inner == 1)
      backward_rows(y.data<T>(), gy.data<T>(), gx.data<T>(), outer, n, log);
    else
      backward_cols(y.data<T>(), gy.data<T>(), gx.data<T>(), outer, n, inner, log);
  });
}

}  // namespace sift::cpu
