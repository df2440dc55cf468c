// CUDA rotary embedding: one warp per row (b, h, t), its lanes over the pairs d < D/2 (coalesced
// along the head dim), reading x through its strides. The row's (b, h, t) and position are found
// once per warp (the 64-bit divisions per pair cost more than the rotation: the first H200 profile
// had this kernel at one thread per pair). The angle is formed in the accumulation type (f32, f64
// for f64) exactly as on the CPU; sincosf is accurate to about an ulp (this file is built without
// fast-math), so CPU and CUDA agree to rounding.
#include "common.cuh"
#include "rotary.h"

namespace sift::cuda {
namespace {

constexpr int kRotaryThreads = 256;

template <typename T, typename A>
__global__ void __launch_bounds__(kRotaryThreads)
    rotary_kernel(const T* __restrict__ x, const int64_t* __restrict__ pos, int64_t pos_bs, const A* __restrict__ inv,
                  T* __restrict__ out, int64_t H, int64_t T_, int64_t half, int64_t sb, int64_t sh, int64_t st,
                  int64_t sd, bool inverse, int64_t rows) {
  const int lane = int(threadIdx.x & 31u);
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
    const int64_t t = r % T_, bh = r / T_, h = bh % H, b = bh / H;
    const A p = A(pos[b * pos_bs + t]);
    const T* xr = x + b * sb + h * sh + t * st;
    T* orow = out + r * 2 * half;
    for (int64_t d = lane; d < half; d += 32) {
      const A ang = p * inv[d];
      A s, c;
      if constexpr (std::is_same_v<A, double>)
        sincos(ang, &s, &c);
      else
        sincosf(ang, &s, &c);
      if (inverse) s = -s;
      const A x1 = to_acc<A>(xr[d * sd]), x2 = to_acc<A>(xr[(d + half) * sd]);
      orow[d] = from_acc<T, A>(x1 * c - x2 * s);
      orow[d + half] = from_acc<T, A>(x2 * c + x1 * s);
    }
  }
}

}  // namespace

void rotary(const Tensor& x, const Tensor& positions, int64_t pos_batch_stride, const Tensor& inv_freq,
            const Tensor& out, bool inverse) {
  const int64_t H = x.shape[1], T_ = x.shape[2], half = x.shape[3] / 2;
  const int64_t rows = x.shape[0] * H * T_;
  if (rows == 0 || half == 0) return;
  cudaStream_t st = current_stream(dev_of(x));
  dispatch_cuda_float(x.dtype, "rotary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = dacc_t<T>;
    rotary_kernel<T, A><<<grid_for(rows * 32, kRotaryThreads), kRotaryThreads, 0, st>>>(
        x.data<T>(), positions.data<int64_t>(), pos_batch_stride, inv_freq.data<A>(), out.data<T>(), H, T_, half,
        x.strides[0], x.strides[1], x.strides[2], x.strides[3], inverse, rows);
  });
  check_last_error("rotary");
}

}  // namespace sift::cuda
