// CUDA launchers for cross-entropy fused with log-softmax (contract of native/cpu/loss.h;
// reduction: 0 none, 1 mean, 2 sum). Out-of-range targets set the device error flag.
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& loss, const Tensor& lse, int64_t n,
                   int64_t c, int64_t ignore_index, int reduction, double smoothing);
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& gloss,
                            const Tensor& glogits, int64_t n, int64_t c, int64_t ignore_index, int reduction,
                            double smoothing);
}  // namespace sift::cuda
