// Device-agnostic neural-network ops: softmax / log-softmax, LayerNorm, RMSNorm, embedding and
// cross-entropy. Each validates its operands (E_DTYPE, E_SHAPE, E_DEVICE, E_ARG, E_INDEX),
// allocates its outputs and queues the CPU or CUDA kernel. Optional tensors are passed as
// undefined Tensors; outputs that were not requested come back undefined.
#pragma once
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace sift::ops {

Tensor softmax(const Tensor& x, int64_t dim, bool log);
Tensor softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log);

// Returns {y, mean, rstd}; statistics are f32 [rows] (f64 for f64 x).
std::vector<Tensor> layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);
// Returns {gx, gweight, gbias}; gweight only when weight is given and need_weight_grads, gbias
// whenever need_weight_grads (the bias gradient does not depend on the bias).
std::vector<Tensor> layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                        const Tensor& rstd, bool need_weight_grads);
std::vector<Tensor> rms_norm(const Tensor& x, const Tensor& weight, double eps);  // {y, rstd}
std::vector<Tensor> rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                      bool need_weight_grads);  // {gx, gweight}

Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor embedding_backward(const Tensor& gy, const Tensor& ids, int64_t num_rows);

// Returns {loss, lse}: loss f32 (f64 for f64 logits), scalar or [N] for "none"; lse [N].
std::vector<Tensor> cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                  const std::string& reduction, double label_smoothing);
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& gloss,
                              int64_t ignore_index, const std::string& reduction, double label_smoothing);

}  // namespace sift::ops
