// CUDA SDDMM (sampled dense-dense product), same contract as native/cpu/sddmm.h except that the
// packed plan (core/sddmm_plan.h) is a device tensor, required, and an index or plan entry out of
// range sets the device error flag (E_INDEX at the next synchronisation) and skips that entry.
#pragma once
#include <cstdint>

#include "../core/tensor.h"

namespace sift::cuda {

void sddmm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& idx, const Tensor& plan, bool accumulate);

}  // namespace sift::cuda
