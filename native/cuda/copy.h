// CUDA launchers for the core tensor ops (host functions; kernels in copy.cu).
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void copy(const Tensor& src, const Tensor& dst);  // same shape, any strides and dtypes
void fill(const Tensor& dst, double value);
void randn(const Tensor& dst, uint64_t seed);
void rand(const Tensor& dst, uint64_t seed);
void arange(const Tensor& dst, double start, double step);
}  // namespace sift::cuda
