// CPU kernels for softmax and log-softmax over one dimension of a contiguous tensor, viewed as
// [outer, n, inner] (inner == 1 is the common last-dim case and has its own row loop).
#pragma once
#include "../core/tensor.h"

namespace sift::cpu {
void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log);
// gx from the forward output y and the output gradient gy (all contiguous, same shape and dtype).
void softmax_backward(const Tensor& y, const Tensor& gy, const Tensor& gx, int64_t outer, int64_t n, int64_t inner,
                      bool log);
}  // namespace sift::cpu
