// CPU dropout: one pass over contiguous memory, the keep mask regenerated from (seed, index).
#include "dropout.h"

#include <type_traits>

#include "parallel.h"

namespace sift::cpu {

void dropout(const Tensor& x, const Tensor& y, double p, uint64_t seed) {
  const uint32_t thr = dropout_threshold(p);
  const int64_t n = x.numel();
  dispatch_float(x.dtype, "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    // The scale is rounded to the accumulation type once, exactly as the CUDA kernel does.
    const A rz = A(1.0 / (1.0 - p));
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        A v = A(static_cast<A>(xp[i]) * rz);
        yp[i] = dropout_keep(seed, uint64_t(i), thr) ? T(v) : T(A(0));
      }
    });
  });
}

}  // namespace sift::cpu
