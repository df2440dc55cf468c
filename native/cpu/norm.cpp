// LayerNorm and RMSNorm on the CPU. Rows run in parallel; the weight/bias gradients are summed
// over fixed blocks of rows (a partition that does not depend on the thread count) and then
// across blocks in block order, so results are bit-identical from run to run.
#include "norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "numeric.h"
#include "parallel.h"

namespace sift::cpu {
namespace {

int64_t norm_row_grain(int64_t d) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)); }

// Rows per partial-sum block: at least 16, and at most ~256 blocks so the partials stay small.
int64_t rows_per_block(int64_t rows) { return std::max<int64_t>(16, (rows + 255) / 256); }

// Sums partial[blk][d] over blocks in order into out (converted to T).
template <typename T, typename A>
void sum_partials(const std::vector<A>& partial, int64_t blocks, int64_t d, T* out) {
  parallel_for(d, 1024, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; j++) {
      A s = 0;
      for (int64_t k = 0; k < blocks; k++) s += partial[size_t(k * d + j)];
      out[j] = st<T>(s);
    }
  });
}

template <typename T>
void ln_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, int64_t rows, int64_t d, double eps) {
  using A = acc_t<T>;
  const T* xp = x.data<T>();
  const T* wp = w.defined() ? w.data<T>() : nullptr;
  const T* bp = b.defined() ? b.data<T>() : nullptr;
  T* yp = y.data<T>();
  A* mp = mean.data<A>();
  A* rp = rstd.data<A>();
  parallel_for(rows, norm_row_grain(d), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; r++) {
      const T* xr = xp + r * d;
      T* yr = yp + r * d;
      // Two passes (mean, then centred squares) avoid the cancellation of E[x^2] - E[x]^2.
      A s = 0;
      for (int64_t j = 0; j < d; j++) s += ld<A>(xr[j]);
      A mu = s / A(d);
      A v = 0;
      for (int64_t j = 0; j < d; j++) {
        A c = ld<A>(xr[j]) - mu;
        v += c * c;
      }
      A rs = A(1) / std::sqrt(v / A(d) + A(eps));
      mp[r] = mu;
      rp[r] = rs;
      for (int64_t j = 0; j < d; j++) {
        A h = (ld<A>(xr[j]) - mu) * rs;
        if (wp) h *= ld<A>(wp[j]);
        if (bp) h += ld<A>(bp[j]);
        yr[j] = st<T>(h);
      }
    }
  });
}

// gx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * w;
// gw = sum_rows(gy * xhat); gb = sum_rows(gy).
template <typename T>
void ln_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                 const Tensor& gx, const Tensor& gw, const Tensor& gb, int64_t rows, int64_t d) {
  using A = acc_t<T>;
  const T* gp = gy.data<T>();
  const T* xp = x.data<T>();
  const T* wp = w.defined() ? w.data<T>() : nullptr;
  const A* mp = mean.data<A>();
  const A* rp = rstd.data<A>();
  T* gxp = gx.data<T>();
  const bool want_w = gw.defined(), want_b = gb.defined();
  const int64_t rpb = rows_per_block(rows);
  const int64_t blocks = (rows + rpb - 1) / rpb;
  std::vector<A> pw(want_w ? size_t(blocks * d) : 0, A(0)), pb(want_b ? size_t(blocks * d) : 0, A(0));
  parallel_for(blocks, std::max<int64_t>(1, norm_row_grain(d) / rpb), [&](int64_t bb, int64_t be) {
    for (int64_t blk = bb; blk < be; blk++) {
      A* pwr = want_w ? pw.data() + blk * d : nullptr;
      A* pbr = want_b ? pb.data() + blk * d : nullptr;
      for (int64_t r = blk * rpb; r < std::min(rows, (blk + 1) * rpb); r++) {
        const T* gr = gp + r * d;
        const T* xr = xp + r * d;
        T* out = gxp + r * d;
        A mu = mp[r], rs = rp[r];
        A sg = 0, sgx = 0;
        for (int64_t j = 0; j < d; j++) {
          A g = ld<A>(gr[j]);
          if (wp) g *= ld<A>(wp[j]);
          A h = (ld<A>(xr[j]) - mu) * rs;
          sg += g;
          sgx += g * h;
          if (pwr) pwr[j] += ld<A>(gr[j]) * h;
          if (pbr) pbr[j] += ld<A>(gr[j]);
        }
        sg /= A(d);
        sgx /= A(d);
        for (int64_t j = 0; j < d; j++) {
          A g = ld<A>(gr[j]);
          if (wp) g *= ld<A>(wp[j]);
          A h = (ld<A>(xr[j]) - mu) * rs;
          out[j] = st<T>(rs * (g - sg - h * sgx));
        }
      }
    }
  });
  if (want_w) sum_partials(pw, blocks, d, gw.data<T>());
  if (want_b) sum_partials(pb, blocks, d, gb.data<T>());
}

template <typename T>
void rms_forward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, int64_t rows, int64_t d,
                 double eps) {
  using A = acc_t<T>;
  const T* xp = x.data<T>();
  const T* wp = w.defined() ? w.data<T>() : nullptr;
  T* yp = y.data<T>();
  A* rp = rstd.data<A>();
  parallel_for(rows, norm_row_grain(d), [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; r++) {
      const T* xr = xp + r * d;
      T* yr = yp + r * d;
      A ss = 0;
      for (int64_t j = 0; j < d; j++) {
        A v = ld<A>(xr[j]);
        ss += v * v;
      }
      A rs = A(1) / std::sqrt(ss / A(d) + A(eps));
      rp[r] = rs;
      for (int64_t j = 0; j < d; j++) {
        A h = ld<A>(xr[j]) * rs;
        if (wp) h *= ld<A>(wp[j]);
        yr[j] = st<T>(h);
      }
    }
  });
}

// gx = rstd * (g - xhat * mean(g * xhat)) with g = gy * w, xhat = x * rstd; gw = sum_rows(gy * xhat).
template <typename T>
void rms_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                  const Tensor& gw, int64_t rows, int64_t d) {
  using A = acc_t<T>;
  const T* gp = gy.data<T>();
  const T* xp = x.data<T>();
  const T* wp = w.defined() ? w.data<T>() : nullptr;
  const A* rp = rstd.data<A>();
  T* gxp = gx.data<T>();
  const bool want_w = gw.defined();
  const int64_t rpb = rows_per_block(rows);
  const int64_t blocks = (rows + rpb - 1) / rpb;
  std::vector<A> pw(want_w ? size_t(blocks * d) : 0, A(0));
  parallel_for(blocks, std::max<int64_t>(1, norm_row_grain(d) / rpb), [&](int64_t bb, int64_t be) {
    for (int64_t blk = bb; blk < be; blk++) {
      A* pwr = want_w ? pw.data() + blk * d : nullptr;
      for (int64_t r = blk * rpb; r < std::min(rows, (blk + 1) * rpb); r++) {
        const T* gr = gp + r * d;
        const T* xr = xp + r * d;
        T* out = gxp + r * d;
        A rs = rp[r];
        A sgx = 0;
        for (int64_t j = 0; j < d; j++) {
          A g = ld<A>(gr[j]);
          if (wp) g *= ld<A>(wp[j]);
          A h = ld<A>(xr[j]) * rs;
          sgx += g * h;
          if (pwr) pwr[j] += ld<A>(gr[j]) * h;
        }
        sgx /= A(d);
        for (int64_t j = 0; j < d; j++) {
          A g = ld<A>(gr[j]);
          if (wp) g *= ld<A>(wp[j]);
          out[j] = st<T>(rs * (g - ld<A>(xr[j]) * rs * sgx));
        }
      }
    }
  });
  if (want_w) sum_partials(pw, blocks, d, gw.data<T>());
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, int64_t rows, int64_t d, double eps) {
  dispatch_float(x.dtype, "layerNorm",
                 [&](auto tag) { ln_forward<typename decltype(tag)::type>(x, w, b, y, mean, rstd, rows, d, eps); });
}

void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb, int64_t rows, int64_t d) {
  dispatch_float(x.dtype, "layerNormBackward", [&](auto tag) {
    ln_backward<typename decltype(tag)::type>(gy, x, w, mean, rstd, gx, gw, gb, rows, d);
  });
}

void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, int64_t rows, int64_t d,
              double eps) {
  dispatch_float(x.dtype, "rmsNorm",
                 [&](auto tag) { rms_forward<typename decltype(tag)::type>(x, w, y, rstd, rows, d, eps); });
}

void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                       const Tensor& gw, int64_t rows, int64_t d) {
  dispatch_float(x.dtype, "rmsNormBackward",
                 [&](auto tag) { rms_backward<typename decltype(tag)::type>(gy, x, w, rstd, gx, gw, rows, d); });
}

}  // namespace sift::cpu
