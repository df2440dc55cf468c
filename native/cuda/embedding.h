// CUDA launchers for embedding lookup and its deterministic backward. Out-of-range ids set the
// device error flag (E_INDEX at the next synchronize) and their rows are skipped.
#pragma once
#include "../core/tensor.h"

namespace sift::cuda {
void embedding(const Tensor& weight, const Tensor& ids, const Tensor& out, int64_t n, int64_t v, int64_t d);
void embedding_backward(const Tensor& gy, const Tensor& ids, const Tensor& gw, int64_t n, int64_t v, int64_t d);
}  // namespace sift::cuda
