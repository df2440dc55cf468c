// CPU optimizer kernels: f32 arithmetic per element (adamw_update in ops/optim.h), threads over the
// concatenated element ranges of all tensors of the step.
#include "optim.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "parallel.h"

namespace sift::cpu {
namespace {

constexpr int64_t kGrain = 8192;

// Runs seg(t, lo, hi) for the parts of [begin, end) that fall into each tensor, where tensor t
// owns [start[t], start[t + 1]) of the concatenated range.
template <typename Seg>
void for_each_range(const std::vector<int64_t>& start, int64_t begin, int64_t end, Seg&& seg) {
  size_t t = size_t(std::upper_bound(start.begin(), start.end(), begin) - start.begin()) - 1;
  while (begin < end && t + 1 < start.size()) {
    int64_t hi = std::min(end, start[t + 1]);
    if (hi > begin) seg(t, begin - start[t], hi - start[t]);
    begin = std::max(begin, hi);
    t++;
  }
}

std::vector<int64_t> prefix(const std::vector<Tensor>& ts) {
  std::vector<int64_t> start(ts.size() + 1, 0);
  for (size_t t = 0; t < ts.size(); t++) start[t + 1] = start[t] + ts[t].numel();
  return start;
}

float read_scale(const Tensor& scale) { return scale.defined() ? *scale.data<float>() : 1.0f; }

template <typename W, typename I>
bool sparse_segment(W* w, int64_t numel, const I* idx, const float* g, float* m, float* v, float* p, int64_t lo,
                    int64_t hi, const AdamWScalars& s, float sc) {
  bool ok = true;
  for (int64_t i = lo; i < hi; i++) {
    int64_t j = int64_t(idx[i]);
    if (j < 0 || j >= numel) {  // leave the entry alone: its weight cannot be written
      ok = false;
      continue;
    }
    float mi = m[i], vi = v[i];
    float pi = adamw_update(g[i] * sc, mi, vi, p[i], s);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    w[j] = W(pi);
  }
  return ok;
}

template <typename P, typename G>
void dense_segment(P* p, const G* g, float* m, float* v, float* master, int64_t lo, int64_t hi, const AdamWScalars& s,
                   float sc) {
  for (int64_t i = lo; i < hi; i++) {
    float mi = m[i], vi = v[i];
    float x = master ? master[i] : float(p[i]);
    x = adamw_update(float(g[i]) * sc, mi, vi, x, s);
    m[i] = mi;
    v[i] = vi;
    if (master) master[i] = x;
    p[i] = P(x);
  }
}

}  // namespace

void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                  const std::vector<Tensor>& masters, const AdamWScalars& s, const Tensor& scale) {
  const std::vector<int64_t> start = prefix(indices);
  const float sc = read_scale(scale);  // on the executor thread: the op that wrote it has run
  std::atomic<bool> bad{false};
  parallel_for(start.back(), kGrain, [&](int64_t begin, int64_t end) {
    for_each_range(start, begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      const Tensor& w = weights[t];
      dispatch_float(w.dtype, "sparseAdamW", [&](auto wt) {
        using W = typename decltype(wt)::type;
        dispatch_int(indices[t].dtype, "sparseAdamW", [&](auto it) {
          using I = typename decltype(it)::type;
          if (!sparse_segment(w.data<W>(), w.numel(), indices[t].data<I>(), grads[t].data<float>(), m[t].data<float>(),
                              v[t].data<float>(), masters[t].data<float>(), lo, hi, s, sc))
            bad = true;
        });
      });
    });
  });
  SIFT_CHECK(!bad, "E_INDEX", "sparseAdamW: an index is out of range for its weight tensor");
}

void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
           const std::vector<Tensor>& v, const std::vector<Tensor>& masters, const AdamWScalars& s,
           const Tensor& scale) {
  const std::vector<int64_t> start = prefix(params);
  const float sc = read_scale(scale);
  parallel_for(start.back(), kGrain, [&](int64_t begin, int64_t end) {
    for_each_range(start, begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      const Tensor& p = params[t];
      float* master = masters[t].defined() ? masters[t].data<float>() : nullptr;
      dispatch_float(p.dtype, "adamW", [&](auto pt) {
        using P = typename decltype(pt)::type;
        dispatch_float(grads[t].dtype, "adamW", [&](auto gt) {
          using G = typename decltype(gt)::type;
          dense_segment(p.data<P>(), grads[t].data<G>(), m[t].data<float>(), v[t].data<float>(), master, lo, hi, s, sc);
        });
      });
    });
  });
}

void clip_coefficient(const Tensor& norm_sq, const Tensor& out, float max_norm) {
  float c = max_norm / (std::sqrt(*norm_sq.data<float>()) + 1e-6f);
  *out.data<float>() = c > 1.0f ? 1.0f : c;  // NaN stays NaN, as torch.clamp keeps it
}

}  // namespace sift::cpu
