// CUDA launcher of the rotary embedding (same arguments as cpu::rotary).
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void rotary(const Tensor& x, const Tensor& positions, int64_t pos_batch_stride, const Tensor& inv_freq,
            const Tensor& out, bool inverse);
}  // namespace sift::cuda
