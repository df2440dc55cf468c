// CPU SDDMM (sampled dense-dense product): the weight gradient of a linear layer at selected
// entries only, without the dense gradient.
#pragma once
#include <cstdint>

#include "../core/tensor.h"

namespace sift::cpu {

// out[i] (+)= sum_t a[t, idx[i] / n] * b[t, idx[i] % n] with a [T, m], b [T, n] contiguous and of
// one float dtype, idx contiguous i32/i64 flat indices into [m, n], out contiguous f32 [k].
// Accumulates in f32 (f64 for f64 inputs); the result does not depend on the thread count.
// `plan` is a packed SddmmPlan of idx (core/sddmm_plan.h), or null to build one here.
void sddmm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& idx, const int64_t* plan,
           bool accumulate);

}  // namespace sift::cpu
