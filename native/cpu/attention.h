// Scaled dot-product attention on the CPU (memory-efficient: no [Tq, Tk] matrix is kept), and
// the description of an attention call shared with the CUDA kernels.
#pragma once
#include <cstdint>

#include "../core/tensor.h"

namespace sift {

enum class AttnMask : int { None = 0, KeyPadding = 1, Additive = 2 };

// Everything an attention kernel needs besides its tensors. Tensor layouts (set up by
// ops::attention): q, k, v and gout have unit stride on the head dim, any strides elsewhere;
// out, grads contiguous; lse [B, H, Tq] contiguous in the accumulation dtype (f32, f64 for f64);
// a key-padding mask is dense u8 [B, Tk]; an additive mask is a [B, H, Tq, Tk] view in the
// accumulation dtype whose broadcast dims have stride 0.
struct AttnDesc {
  bool causal = false;  // key j visible to query i iff j <= i + (Tk - Tq)
  double scale = 1.0;
  // Logit soft-capping (Gemma 2), 0 = off: score = softcap * tanh(scale * q.k / softcap), before
  // the mask is added.
  double softcap = 0.0;
  // Sliding window on top of the causal mask (only with causal), 0 = off. As transformers'
  // sliding_window_causal_mask_function: with a = i + (Tk - Tq) the absolute position of query i,
  // key j is visible iff j <= a and a - j < window (the window counts the query's own key).
  int64_t window = 0;
  double dropout_p = 0.0;
  uint64_t seed = 0;  // dropout counter of (b, h, i, j) is ((b * H + h) * Tq + i) * Tk + j
  AttnMask mask = AttnMask::None;
  // CUDA only: use the tensor-core kernels where they apply (f16/bf16, head dim a multiple of 16
  // up to 128, sm_80+); false forces the CUDA-core kernels (setCudaAttention('simt')).
  bool tensor_cores = true;
};

namespace cpu {
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Tensor& out,
                       const Tensor& lse, const AttnDesc& desc);
void attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& mask, const Tensor& gq, const Tensor& gk, const Tensor& gv,
                        const AttnDesc& desc);
}  // namespace cpu

}  // namespace sift
