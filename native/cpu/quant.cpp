// CPU quantization kernels. The arithmetic (float operations in this order) is the same in
// native/cuda/quant.cu, so both backends produce the same codes and the same dequantized values.
#include "quant.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm.h"
#include "parallel.h"
#include "../core/quant_tables.h"

namespace sift::cpu {
namespace {

constexpr float kNf4[16] = {SIFT_NF4_CODE_VALUES};
constexpr float kDynamic[256] = {SIFT_DYNAMIC_MAP_VALUES};
constexpr int64_t kNf4Block = 64;
constexpr int64_t kAbsmaxBlock = 256;

template <typename F>
void for_each_float(const Tensor& t, F&& f) {
  dispatch_float(t.dtype, "quantize", [&](auto tag) {
    using T = typename decltype(tag)::type;
    f(t.data<T>());
  });
}

// Nearest NF4 level of x in [-1, 1]: thresholds are the midpoints between levels; a value on a
// midpoint takes the lower level (bitsandbytes' decision tree compares with '>').
inline uint8_t nf4_code(float x) {
  uint8_t c = 0;
  for (int i = 1; i < 16; i++) {
    float mid = (kNf4[i - 1] + kNf4[i]) * 0.5f;
    if (x > mid) c = uint8_t(i);
  }
  return c;
}

// Nearest value of the dynamic map (ascending) to x in [-1, 1]; ties take the lower one.
inline uint8_t dynamic_code(float x) {
  int lo = 0, hi = 255;
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (kDynamic[mid] <= x)
      lo = mid;
    else
      hi = mid;
  }
  return uint8_t(std::fabs(x - kDynamic[lo]) <= std::fabs(kDynamic[hi] - x) ? lo : hi);
}

}  // namespace

void quantize_int8(const Tensor& w, const Tensor& q, const Tensor& absmax) {
  const int64_t R = w.size(0), C = w.size(1);
  int8_t* qd = reinterpret_cast<int8_t*>(q.raw());
  float* am = absmax.data<float>();
  for_each_float(w, [&](auto* wd) {
    parallel_for(R, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; r++) {
        const auto* row = wd + r * C;
        float m = 0.f;
        for (int64_t c = 0; c < C; c++) m = std::max(m, std::fabs(float(row[c])));
        am[r] = m;
        const float inv = m > 0.f ? 127.0f / m : 0.f;
        for (int64_t c = 0; c < C; c++) {
          float v = std::nearbyint(float(row[c]) * inv);
          qd[r * C + c] = int8_t(std::min(127.f, std::max(-127.f, v)));
        }
      }
    });
  });
}

void dequantize_int8_rows(const Tensor& q, const Tensor& absmax, int64_t r0, const Tensor& out) {
  const int64_t rows = out.size(0), C = out.size(1);
  const int8_t* qd = reinterpret_cast<const int8_t*>(q.raw());
  const float* am = absmax.data<float>();
  float* o = out.data<float>();
  parallel_for(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float s = am[r0 + r] / 127.0f;
      const int8_t* src = qd + (r0 + r) * C;
      float* dst = o + r * C;
      for (int64_t c = 0; c < C; c++) dst[c] = float(src[c]) * s;
    }
  });
}

void quantize_nf4(const Tensor& w, const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale,
                  const Tensor& offset) {
  const int64_t n = w.numel();
  const int64_t nb = (n + kNf4Block - 1) / kNf4Block;
  const int64_t nb2 = (nb + kAbsmaxBlock - 1) / kAbsmaxBlock;
  std::vector<float> amax(size_t(nb), 0.f);
  uint8_t* pk = reinterpret_cast<uint8_t*>(packed.raw());
  for_each_float(w, [&](auto* wd) {
    parallel_for(nb, 16, [&](int64_t b, int64_t e) {
      for (int64_t blk = b; blk < e; blk++) {
        const int64_t s = blk * kNf4Block, t = std::min(n, s + kNf4Block);
        float m = 0.f;
        for (int64_t i = s; i < t; i++) m = std::max(m, std::fabs(float(wd[i])));
        amax[size_t(blk)] = m;
        // The codes use the exact absmax; only the stored absmax is double-quantized.
        const float inv = m > 0.f ? 1.0f / m : 0.f;
        for (int64_t i = s; i < t; i += 2) {
          uint8_t hi = nf4_code(float(wd[i]) * inv);
          uint8_t lo = i + 1 < t ? nf4_code(float(wd[i + 1]) * inv) : 0;
          pk[i / 2] = uint8_t((hi << 4) | lo);
        }
      }
    });
  });
  // Double quantization: subtract the mean, then 8-bit dynamic codes per block of 256 absmax values.
  double sum = 0.0;
  for (float m : amax) sum += m;
  const float mean = float(sum / double(nb));
  offset.data<float>()[0] = mean;
  uint8_t* aq = reinterpret_cast<uint8_t*>(absmax_q.raw());
  float* as = absmax_scale.data<float>();
  parallel_for(nb2, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) {
      const int64_t s = blk * kAbsmaxBlock, t = std::min(nb, s + kAbsmaxBlock);
      float m = 0.f;
      for (int64_t i = s; i < t; i++) m = std::max(m, std::fabs(amax[size_t(i)] - mean));
      as[blk] = m;
      const float inv = m > 0.f ? 1.0f / m : 0.f;
      for (int64_t i = s; i < t; i++) aq[i] = dynamic_code((amax[size_t(i)] - mean) * inv);
    }
  });
}

void dequantize_nf4_rows(const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale, const Tensor& offset,
                         int64_t cols, int64_t r0, const Tensor& out) {
  const int64_t rows = out.size(0);
  const uint8_t* pk = reinterpret_cast<const uint8_t*>(packed.raw());
  const uint8_t* aq = reinterpret_cast<const uint8_t*>(absmax_q.raw());
  const float* as = absmax_scale.data<float>();
  const float mean = offset.data<float>()[0];
  float* o = out.data<float>();
  parallel_for(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const int64_t base = (r0 + r) * cols;
      float* dst = o + r * cols;
      for (int64_t c = 0; c < cols; c++) {
        const int64_t i = base + c, blk = i / kNf4Block;
        const float m = kDynamic[aq[blk]] * as[blk / kAbsmaxBlock] + mean;
        const uint8_t byte = pk[i / 2];
        dst[c] = kNf4[(i & 1) ? (byte & 0x0F) : (byte >> 4)] * m;
      }
    }
  });
}

namespace {

template <typename I>
void set_entries(float* tile, int64_t n, const I* idx, int64_t k, const float* vals, int64_t lo) {
  // idx is sorted: the entries of [lo, lo + n) are one run, found by binary search.
  const I* b = std::lower_bound(idx, idx + k, I(lo), [](I a, I v) { return a < v; });
  for (const I* p = b; p < idx + k && int64_t(*p) < lo + n; p++) tile[int64_t(*p) - lo] = vals[p - idx];
}

}  // namespace

void set_sparse_entries(const Tensor& tile, const Tensor& idx, const Tensor& vals, int64_t lo) {
  const int64_t n = tile.numel(), k = idx.numel();
  if (k == 0) return;
  if (idx.dtype == DType::I64) {
    set_entries(tile.data<float>(), n, idx.data<int64_t>(), k, vals.data<float>(), lo);
  } else {
    set_entries(tile.data<float>(), n, idx.data<int32_t>(), k, vals.data<float>(), lo);
  }
}

void quant_linear(const Tensor& x, const std::vector<Tensor>& s, bool nf4, int64_t rows, int64_t cols, bool transpose,
                  const Tensor& y, const Tensor& idx, const Tensor& vals) {
  const int64_t M = x.size(0);
  const int64_t tn = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t(1) << 20) / cols));
  Tensor tile = empty({tn, cols}, DType::F32, x.device());
  const float* X = x.data<float>();
  float* Y = y.data<float>();
  for (int64_t r0 = 0; r0 < rows; r0 += tn) {
    const int64_t n = std::min(rows, r0 + tn) - r0;
    Tensor t = make_view(tile, {n, cols}, {cols, 1}, 0);
    if (nf4) {
      dequantize_nf4_rows(s[0], s[1], s[2], s[3], cols, r0, t);
    } else {
      dequantize_int8_rows(s[0], s[1], r0, t);
    }
    if (idx.defined()) set_sparse_entries(t, idx, vals, r0 * cols);
    const float* W = t.data<float>();
    if (!transpose) {
      // Y[:, r0:r0+n] = X @ W_tile^T (B(k, j) = W[j * cols + k]).
      gemm_f32(M, n, cols, X, cols, 1, W, 1, cols, Y + r0, rows, false);
    } else {
      // Y (+)= X[:, r0:r0+n] @ W_tile.
      gemm_f32(M, cols, n, X + r0, rows, 1, W, cols, 1, Y, cols, r0 > 0);
    }
  }
}

}  // namespace sift::cpu
