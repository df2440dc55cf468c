// Attention-family ops: fused scaled dot-product attention (forward, backward), rotary position
// embedding, seeded dropout. Validation, layout preparation and dispatch to cpu:: / cuda::.
#pragma once
#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>

#include "../core/tensor.h"

namespace sift::ops {

// Returns {out [B, H, Tq, D] (dtype of q), lse [B, H, Tq] (f32; f64 for f64 inputs)}.
std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask, bool causal, double scale,
                                    double dropout_p, uint64_t seed);
// Returns {gq, gk, gv}, contiguous, dtype of q.
std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& lse,
                                                      const std::optional<Tensor>& mask, bool causal,
                                                      double scale, double dropout_p, uint64_t seed);
Tensor rotary(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse);
Tensor dropout(const Tensor& x, double p, uint64_t seed);

}  // namespace sift::ops
