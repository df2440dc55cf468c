// The sampled dense-dense product (SDDMM): the gradient of a weight at selected entries only,
// straight from the layer's input and output gradient, never forming the dense weight gradient.
#pragma once
#include <cstdint>

#include "../core/tensor.h"

namespace sift::ops {

// The packed tile plan (core/sddmm_plan.h) of flat indices idx into a [rows, cols] matrix, as
// an i64 tensor on idx's device. Its length depends on the indices, so it waits for the device
// once (make it once per index set and pass it to every sddmm call).
Tensor sddmm_plan(const Tensor& idx, int64_t rows, int64_t cols);

// out[i] (+)= sum over tokens t of a[t, idx[i] / n] * b[t, idx[i] % n]: the entries idx of
// a^T b, with a [..., m] and b [..., n] of one float dtype and the same leading (token) dims, idx
// i32/i64 flat indices into [m, n], out contiguous f32 [k]. Accumulates in f32 (f64 for f64 on the
// CPU). For the weight gradient of y = x W^T (W [out, in]) a = dy, b = x; for y = x W (W [in,
// out]) a = x, b = dy. `plan` (from sddmm_plan) may be undefined on the CPU; on CUDA without one,
// this builds it (and waits for the device).
void sddmm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& idx, const Tensor& plan, bool accumulate);

}  // namespace sift::ops
