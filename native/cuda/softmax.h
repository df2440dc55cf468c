// CUDA launchers for softmax / log-softmax over a contiguous tensor viewed as [outer, n, inner].
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log);
void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, int64_t outer, int64_t n, int64_t inner,
                      bool log);
}  // namespace sift::cuda
