// CUDA launchers of the fused (flash-style) attention kernels; see attention.cu. Same tensor
// layouts as the CPU kernels (AttnDesc in cpu/attention.h).
#pragma once
#include "../core/tensor.h"
#include "../cpu/attention.h"

namespace sift::cuda {
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Tensor& out,
                       const Tensor& lse, const AttnDesc& desc);
void attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& mask, const Tensor& gq, const Tensor& gk, const Tensor& gv,
                        const AttnDesc& desc);
}  // namespace sift::cuda
