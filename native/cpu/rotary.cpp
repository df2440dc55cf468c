// CPU rotary embedding: one task per (b, t) row computes the D/2 cos/sin pairs once and applies
// them to every head, so the trigonometry costs B*T*D/2 evaluations rather than B*H*T*D/2.
// Angles are formed in f32 (f64 for f64 tensors) like the CUDA kernel; cos/sin are evaluated in
// double and rounded, so both backends agree to within one rounding of the cos/sin values.
#include "rotary.h"

#include <cmath>
#include <vector>

#include "parallel.h"

namespace sift::cpu {

void rotary(const Tensor& x, const Tensor& positions, int64_t pos_batch_stride, const Tensor& inv_freq,
            const Tensor& out, bool inverse) {
  const int64_t B = x.shape[0], H = x.shape[1], T = x.shape[2], D = x.shape[3], half = D / 2;
  const int64_t sb = x.strides[0], sh = x.strides[1], st = x.strides[2], sd = x.strides[3];
  const int64_t* pos = positions.data<int64_t>();
  dispatch_float(x.dtype, "rotary", [&](auto tag) {
    using T_ = typename decltype(tag)::type;
    using A = acc_t<T_>;
    const A* inv = inv_freq.data<A>();
    const T_* xp = x.data<T_>();
    T_* op = out.data<T_>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H * D));
    parallel_for(B * T, grain, [&](int64_t r0, int64_t r1) {
      std::vector<A> cs(half), sn(half);
      for (int64_t r = r0; r < r1; r++) {
        const int64_t b = r / T, t = r % T;
        const A p = A(pos[b * pos_batch_stride + t]);
        for (int64_t d = 0; d < half; d++) {
          const A ang = p * inv[d];  // rounded to A, as on the GPU
          cs[d] = A(std::cos(double(ang)));
          sn[d] = A(inverse ? -std::sin(double(ang)) : std::sin(double(ang)));
        }
        for (int64_t h = 0; h < H; h++) {
          const T_* xr = xp + b * sb + h * sh + t * st;
          T_* orow = op + ((b * H + h) * T + t) * D;
          for (int64_t d = 0; d < half; d++) {
            const A x1 = static_cast<A>(xr[d * sd]), x2 = static_cast<A>(xr[(d + half) * sd]);
            orow[d] = T_(A(x1 * cs[d] - x2 * sn[d]));
            orow[d + half] = T_(A(x2 * cs[d] + x1 * sn[d]));
          }
        }
      }
    });
  });
}

}  // namespace sift::cpu
