// CUDA launchers of the optimizers (kernels in optim.cu). Each multi-tensor op is one kernel launch
// per up to a few hundred tensors, with the tensor descriptors in kernel parameter space (no host
// synchronisation, no device buffer of descriptors).
#pragma once
#include <vector>

#include "../core/tensor.h"
#include "../ops/optim.h"

namespace sift::cuda {

// prefetch: the variant that fetches each entry's weight sector into L2 before its write (optim.cu).
void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                  const std::vector<Tensor>& masters, const AdamWScalars& s, const Tensor& scale,
                  bool prefetch = false);

void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
           const std::vector<Tensor>& v, const std::vector<Tensor>& masters, const AdamWScalars& s,
           const Tensor& scale);

void clip_coefficient(const Tensor& norm_sq, const Tensor& out, float max_norm);

}  // namespace sift::cuda
