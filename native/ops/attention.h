// Attention-family ops: fused scaled dot-product attention (forward, backward), rotary position
// embedding, seeded dropout. Validation, layout preparation and dispatch to cpu:: / cuda::.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "../core/tensor.h"

namespace sift::ops {

// Returns {out [B, H, Tq, D] (dtype of q), lse [B, H, Tq] (f32; f64 for f64 inputs)}.
// softcap > 0: scores are soft-capped (AttnDesc::softcap); window > 0: sliding window on top of
// the causal mask (AttnDesc::window; requires causal).
std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask, bool causal, double scale, double dropout_p,
                                    uint64_t seed, double softcap = 0.0, int64_t window = 0);
// Returns {gq, gk, gv}, contiguous, dtype of q.
std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& lse,
                                                      const std::optional<Tensor>& mask, bool causal, double scale,
                                                      double dropout_p, uint64_t seed, double softcap = 0.0,
                                                      int64_t window = 0);
Tensor rotary(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse);
Tensor dropout(const Tensor& x, double p, uint64_t seed);
// Which CUDA attention kernels later calls use: "auto" (tensor-core kernels for f16/bf16 with head
// dims that are multiples of 16 up to 128 on sm_80+, CUDA-core kernels otherwise) or "simt"
// (CUDA-core kernels always). Returns the previous mode.
std::string set_cuda_attention(const std::string& mode);

}  // namespace sift::ops
