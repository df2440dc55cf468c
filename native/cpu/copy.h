#pragma once
#include "../core/tensor.h"

namespace sift::cpu {
// dst[i] = convert(src[i]) elementwise over equal shapes; any strides, any dtypes.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);
void randn(const Tensor& dst, uint64_t seed);  // dst contiguous
void rand(const Tensor& dst, uint64_t seed);
void arange(const Tensor& dst, double start, double step);
}  // namespace sift::cpu
