// CUDA launcher of seeded dropout (same semantics and mask as cpu::dropout).
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void dropout(const Tensor& x, const Tensor& y, double p, uint64_t seed);
}  // namespace sift::cuda
