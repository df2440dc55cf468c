// CPU kernels for LayerNorm and RMSNorm over the last dim of a contiguous [rows, D] tensor.
// Optional operands (weight, bias, weight gradients) are passed as undefined Tensors when absent.
// Saved statistics (mean, rstd) are f32 [rows], or f64 for f64 inputs.
#pragma once
#include "../core/tensor.h"

namespace sift::cpu {
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, int64_t rows, int64_t d, double eps);
void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb, int64_t rows, int64_t d);
void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, int64_t rows, int64_t d,
              double eps);
void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                       const Tensor& gw, int64_t rows, int64_t d);
}  // namespace sift::cpu
