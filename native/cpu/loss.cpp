// Cross-entropy on the CPU, with PyTorch's semantics: per row
//   loss = (1 - s) * (lse - x[t]) + s * (lse - mean_c x[c]),
// rows whose target is ignore_index give 0 and are left out of the mean's count (a mean over no
// rows is 0). Rows run in parallel; the reduction over rows runs in row order (deterministic).
#include "loss.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "numeric.h"
#include "parallel.h"

namespace sift::cpu {
namespace {

template <typename I>
int64_t count_valid(const I* t, int64_t n, int64_t ignore) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += int64_t(t[i]) != ignore;
  return k;
}

template <typename T, typename I>
void ce_forward(const T* x, const I* tg, void* loss_raw, void* lse_raw, int64_t n, int64_t c, int64_t ignore,
                Reduction red, double smoothing) {
  using A = acc_t<T>;  // also the dtype of loss and lse
  A* lse = static_cast<A*>(lse_raw);
  A* loss = static_cast<A*>(loss_raw);
  std::vector<A> row_loss(red == Reduction::None ? 0 : size_t(n));
  A* rl = red == Reduction::None ? loss : row_loss.data();
  const A s = A(smoothing);
  std::atomic<bool> any_bad{false};
  std::atomic<int64_t> bad{0};
  parallel_for(n, row_grain(c), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const T* xr = x + r * c;
      A mx = -std::numeric_limits<A>::infinity();
      for (int64_t j = 0; j < c; j++) mx = std::max(mx, ld<A>(xr[j]));
      A sum = 0, sx = 0;
      for (int64_t j = 0; j < c; j++) {
        A v = ld<A>(xr[j]);
        sum += std::exp(v - mx);
        sx += v;
      }
      A l = mx + std::log(sum);
      lse[r] = l;
      int64_t t = int64_t(tg[r]);
      if (t == ignore) {
        rl[r] = 0;
        continue;
      }
      if (t < 0 || t >= c) {
        bad.store(t);
        any_bad.store(true);
        rl[r] = std::numeric_limits<A>::quiet_NaN();
        continue;
      }
      A nll = l - ld<A>(xr[t]);
      rl[r] = s == A(0) ? nll : (A(1) - s) * nll + s * (l - sx / A(c));
    }
  });
  if (any_bad.load()) fail("E_INDEX", "crossEntropy: target ", bad.load(), " is out of range for ", c, " classes");
  if (red == Reduction::None) return;
  A total = 0;
  for (int64_t r = 0; r < n; r++) total += rl[r];
  if (red == Reduction::Mean) {
    int64_t k = count_valid(tg, n, ignore);
    total = k > 0 ? total / A(k) : A(0);
  }
  loss[0] = total;
}

// d loss_r / d x[r, j] = softmax_j - (1 - s) * [j == t] - s / C, scaled by the row's loss gradient.
template <typename T, typename I>
void ce_backward(const T* x, const I* tg, const void* lse_raw, const void* gl_raw, T* gx, int64_t n, int64_t c,
                 int64_t ignore, Reduction red, double smoothing) {
  using A = acc_t<T>;
  const A* lse = static_cast<const A*>(lse_raw);
  const A* gl = static_cast<const A*>(gl_raw);
  A scale = 0;
  if (red != Reduction::None) {
    scale = gl[0];
    if (red == Reduction::Mean) {
      int64_t k = count_valid(tg, n, ignore);
      scale = k > 0 ? scale / A(k) : A(0);
    }
  }
  const A s = A(smoothing), off = s / A(c);
  std::atomic<bool> any_bad{false};
  std::atomic<int64_t> bad{0};
  parallel_for(n, row_grain(c), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const T* xr = x + r * c;
      T* out = gx + r * c;
      int64_t t = int64_t(tg[r]);
      bool skip = t == ignore;
      if (!skip && (t < 0 || t >= c)) {
        bad.store(t);
        any_bad.store(true);
        skip = true;
      }
      if (skip) {
        std::fill(out, out + c, st<T>(A(0)));
        continue;
      }
      A g = red == Reduction::None ? gl[r] : scale;
      A l = lse[r];
      for (int64_t j = 0; j < c; j++) {
        A p = std::exp(ld<A>(xr[j]) - l);
        A d = p - off - (j == t ? A(1) - s : A(0));
        out[j] = st<T>(g * d);
      }
    }
  });
  if (any_bad.load())
    fail("E_INDEX", "crossEntropyBackward: target ", bad.load(), " is out of range for ", c, " classes");
}

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& loss, const Tensor& lse, int64_t n,
                   int64_t c, int64_t ignore_index, Reduction reduction, double smoothing) {
  dispatch_float(logits.dtype, "crossEntropy", [&](auto tt) {
    using T = typename decltype(tt)::type;
    dispatch_int(targets.dtype, "crossEntropy", [&](auto it) {
      using I = typename decltype(it)::type;
      ce_forward<T, I>(logits.data<T>(), targets.data<I>(), loss.raw(), lse.raw(), n, c, ignore_index, reduction,
                       smoothing);
    });
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& gloss,
                            const Tensor& glogits, int64_t n, int64_t c, int64_t ignore_index, Reduction reduction,
                            double smoothing) {
  dispatch_float(logits.dtype, "crossEntropyBackward", [&](auto tt) {
    using T = typename decltype(tt)::type;
    dispatch_int(targets.dtype, "crossEntropyBackward", [&](auto it) {
      using I = typename decltype(it)::type;
      ce_backward<T, I>(logits.data<T>(), targets.data<I>(), lse.raw(), gloss.raw(), glogits.data<T>(), n, c,
                        ignore_index, reduction, smoothing);
    });
  });
}

}  // namespace sift::cpu
