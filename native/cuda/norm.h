// CUDA launchers for LayerNorm and RMSNorm over the last dim of contiguous [rows, D] tensors
// (same contract as native/cpu/norm.h; absent operands are undefined Tensors).
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                const Tensor& rstd, int64_t rows, int64_t d, double eps);
void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb, int64_t rows, int64_t d);
void rms_norm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd, int64_t rows, int64_t d,
              double eps);
void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                       const Tensor& gw, int64_t rows, int64_t d);
}  // namespace sift::cuda
