// CPU kernels for cross-entropy fused with log-softmax over logits [N, C] and targets [N].
#pragma once
#include <cstdint>

#include "../core/tensor.h"

namespace sift::cpu {

enum class Reduction : int { None = 0, Mean = 1, Sum = 2 };

// loss: [N] for None, else a scalar; lse [N]; both f32 (f64 for f64 logits). Throws E_INDEX.
void cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& loss, const Tensor& lse, int64_t n,
                   int64_t c, int64_t ignore_index, Reduction reduction, double smoothing);
// glogits [N, C] in the logits' dtype; gloss [N] for None, else one element.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& gloss,
                            const Tensor& glogits, int64_t n, int64_t c, int64_t ignore_index, Reduction reduction,
                            double smoothing);
}  // namespace sift::cpu
