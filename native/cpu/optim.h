// CPU kernels of the optimizers (native/ops/optim.h validates and queues them). Each multi-tensor
// kernel runs one parallel_for over the concatenation of all tensors' element ranges, so that many
// small tensors and a few large ones spread evenly over the threads.
#pragma once
#include <vector>

#include "../core/tensor.h"
#include "../ops/optim.h"

namespace sift::cpu {

// Fused sparse AdamW; throws E_INDEX (after updating every valid entry) when an index is out of
// range. scale: undefined or an f32 scalar.
void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                  const std::vector<Tensor>& masters, const AdamWScalars& s, const Tensor& scale);

// Dense AdamW; masters[t] may be undefined (params[t] is then the optimised value).
void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
           const std::vector<Tensor>& v, const std::vector<Tensor>& masters, const AdamWScalars& s,
           const Tensor& scale);

// out[0] = min(1, max_norm / (sqrt(norm_sq[0]) + 1e-6)), NaN propagating.
void clip_coefficient(const Tensor& norm_sq, const Tensor& out, float max_norm);

}  // namespace sift::cpu
