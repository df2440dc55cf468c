// CPU sparse-data kernels for SIFT. Sums of squares accumulate in double over fixed chunks whose
// partials are added in chunk order, so results do not depend on the thread count.
#include "sparse.h"

#include <cmath>

#include "parallel.h"

namespace sift::cpu {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;

// Maps a flat (row-major) index of a strided tensor to its element offset.
struct FlatOffset {
  bool contig;
  std::vector<int64_t> shape, strides;
  explicit FlatOffset(const Tensor& t) : contig(t.is_contiguous()), shape(t.shape), strides(t.strides) {}
  int64_t operator()(int64_t flat) const {
    if (contig) return flat;
    int64_t off = 0;
    for (size_t d = shape.size(); d-- > 0;) {
      off += (flat % shape[d]) * strides[d];
      flat /= shape[d];
    }
    return off;
  }
};

template <typename I>
void check_indices(const I* ix, int64_t k, int64_t limit, const char* op) {
  parallel_for(k, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      SIFT_CHECK(ix[i] >= 0 && int64_t(ix[i]) < limit, "E_INDEX", op, ": index ", int64_t(ix[i]), " at position ", i,
                 " is out of range for ", limit, " elements");
  });
}

template <typename T>
double sumsq_contig(const T* p, int64_t n) {
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(size_t(nchunks), 0.0);
  parallel_for(nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; c++) {
      const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
      double acc = 0;
      for (int64_t i = lo; i < hi; i++) {
        double v = double(static_cast<acc_t<T>>(p[i]));
        acc += v * v;
      }
      part[size_t(c)] = acc;
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

}  // namespace

void score_accumulate(const Tensor& dst, const Tensor& src, bool square, bool accumulate) {
  float* d = dst.data<float>();
  dispatch_float(src.dtype, "scoreAccumulate", [&](auto tt) {
    using T = typename decltype(tt)::type;
    const T* s = src.data<T>();
    parallel_for(src.numel(), 1 << 15, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        float v = float(static_cast<acc_t<T>>(s[i]));
        float sc = square ? v * v : std::fabs(v);
        d[i] = accumulate ? d[i] + sc : sc;
      }
    });
  });
}

void gather_into(const Tensor& dst, const Tensor& src, const Tensor& idx, bool accumulate) {
  const int64_t k = idx.numel(), limit = src.numel();
  FlatOffset at(src);
  float* d = dst.data<float>();
  dispatch_int(idx.dtype, "gatherInto", [&](auto it) {
    using I = typename decltype(it)::type;
    const I* ix = idx.data<I>();
    check_indices(ix, k, limit, "gatherInto");
    dispatch_float(src.dtype, "gatherInto", [&](auto tt) {
      using T = typename decltype(tt)::type;
      const T* s = src.data<T>();
      parallel_for(k, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; i++) {
          float v = float(static_cast<acc_t<T>>(s[at(int64_t(ix[i]))]));
          d[i] = accumulate ? d[i] + v : v;
        }
      });
    });
  });
}

void scatter_into(const Tensor& dst, const Tensor& idx, const Tensor& values, bool add) {
  const int64_t k = idx.numel(), limit = dst.numel();
  FlatOffset at(dst);
  const float* v = values.data<float>();
  dispatch_int(idx.dtype, "scatterInto", [&](auto it) {
    using I = typename decltype(it)::type;
    const I* ix = idx.data<I>();
    check_indices(ix, k, limit, "scatterInto");  // before any write: no partial update
    dispatch_float(dst.dtype, "scatterInto", [&](auto tt) {
      using T = typename decltype(tt)::type;
      using A = acc_t<T>;
      T* d = dst.data<T>();
      if (add) {
        // Serial so that repeated indices accumulate; k is a small fraction of the tensor.
        for (int64_t i = 0; i < k; i++) {
          T& slot = d[at(int64_t(ix[i]))];
          slot = T(A(static_cast<A>(slot) + A(v[i])));
        }
      } else {
        parallel_for(k, 1 << 14, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; i++) d[at(int64_t(ix[i]))] = T(A(v[i]));
        });
      }
    });
  });
}

void grad_proportion(const Tensor& out, int64_t slot, const Tensor& grad, const Tensor& idx) {
  const int64_t k = idx.numel(), n = grad.numel();
  double sel = 0, all = 0;
  dispatch_float(grad.dtype, "gradProportion", [&](auto tt) {
    using T = typename decltype(tt)::type;
    const T* g = grad.data<T>();
    all = sumsq_contig(g, n);
    dispatch_int(idx.dtype, "gradProportion", [&](auto it) {
      using I = typename decltype(it)::type;
      const I* ix = idx.data<I>();
      check_indices(ix, k, n, "gradProportion");
      const int64_t nchunks = (k + kChunk - 1) / kChunk;
      std::vector<double> part(size_t(nchunks), 0.0);
      parallel_for(nchunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; c++) {
          double acc = 0;
          for (int64_t i = c * kChunk, hi = std::min(k, i + kChunk); i < hi; i++) {
            double v = double(static_cast<acc_t<T>>(g[ix[i]]));
            acc += v * v;
          }
          part[size_t(c)] = acc;
        }
      });
      for (double p : part) sel += p;
    });
  });
  float* o = out.data<float>();
  o[2 * slot] = float(sel);
  o[2 * slot + 1] = float(all);
}

void sum_squares(const std::vector<Tensor>& ts, const Tensor& out) {
  double total = 0;
  for (const Tensor& t : ts) {
    dispatch_float(t.dtype, "sumSquares", [&](auto tt) {
      using T = typename decltype(tt)::type;
      total += sumsq_contig(t.data<T>(), t.numel());
    });
  }
  *out.data<float>() = float(total);
}

}  // namespace sift::cpu
