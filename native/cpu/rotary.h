// Rotary position embedding (rotate-half convention of GPT-NeoX / LLaMA) on the CPU.
#pragma once
#include "../core/tensor.h"

namespace sift::cpu {
// x [B, H, T, D] (any strides), positions i64 [B, T] (contiguous; batch stride 0 when shared),
// inv_freq [D/2] contiguous in the accumulation dtype of x (f32, or f64 for f64 x);
// out [B, H, T, D] contiguous. inverse rotates by -angle (the backward).
void rotary(const Tensor& x, const Tensor& positions, int64_t pos_batch_stride, const Tensor& inv_freq,
            const Tensor& out, bool inverse);
}  // namespace sift::cpu
