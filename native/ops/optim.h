// Optimizer ops: fused sparse AdamW (SIFT: state only for the k selected entries of each weight),
// dense multi-tensor AdamW and the gradient-clipping coefficient. PyTorch's torch.optim.AdamW
// semantics (decoupled weight decay, bias correction, non-amsgrad). The plain structs below are
// shared with the CPU and CUDA kernels (this header includes no kernel header).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace sift {

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  int64_t step = 1;  // 1-based step number after this update
};

// Per-step scalars, computed once on the host in f64 and handed to the kernels as f32 so that
// every element does the same arithmetic on the CPU and the GPU.
struct AdamWScalars {
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float eps;
  float decay;       // 1 - lr * weight_decay (multiplies the value before the Adam step)
  float step_size;   // lr / (1 - beta1^step)
  float bias2_sqrt;  // sqrt(1 - beta2^step)
};

AdamWScalars adamw_scalars(const AdamWHyper& hp);

// The per-element AdamW update in f32, shared by the CPU kernels (the CUDA kernels spell the same
// operations with non-contracting intrinsics so that both give bit-identical results).
// `p` is the value being optimised (master or parameter), updated in place with m and v.
inline float adamw_update(float g, float& m, float& v, float p, const AdamWScalars& s) {
  p = p * s.decay;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
  float denom = std::sqrt(v) / s.bias2_sqrt + s.eps;
  return p - s.step_size * (m / denom);
}

namespace ops {

// weights[t].flat[idx[t][i]] = masters[t][i] after one AdamW step on (m, v, masters) with
// grads * scale. One fused launch on CUDA. scale: undefined or an f32 scalar on the device.
void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                  const std::vector<Tensor>& masters, const AdamWHyper& hp, const Tensor& scale);

// The CUDA sparse AdamW kernel: "rounds" or "prefetch" (native/cuda/optim.cu). Returns the previous
// mode; steps already queued keep the kernel they were given.
std::string set_cuda_sparse_adamw(const std::string& mode);

// Dense AdamW over many tensors; masters[t] undefined updates params[t] directly.
void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
           const std::vector<Tensor>& v, const std::vector<Tensor>& masters, const AdamWHyper& hp, const Tensor& scale);

// min(1, max_norm / (sqrt(norm_sq) + 1e-6)) as a 0-d f32 tensor on norm_sq's device.
Tensor clip_coefficient(const Tensor& norm_sq, double max_norm);

}  // namespace ops
}  // namespace sift
