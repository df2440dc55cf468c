// CPU kernels for embedding lookup and its deterministic scatter-add backward.
#pragma once
#include <climits>

#include "../core/tensor.h"

namespace sift::cpu {
// Finds an id outside [0, num_rows) (other than `ignore`) among the n contiguous ids; stores it
// in *bad and returns true when there is one.
bool find_bad_index(const Tensor& ids, int64_t n, int64_t num_rows, int64_t* bad, int64_t ignore = INT64_MIN);
// out [n, D] = weight[ids]; weight [V, D] and out contiguous, any dtype. Throws E_INDEX.
void embedding(const Tensor& weight, const Tensor& ids, const Tensor& out, int64_t n, int64_t v, int64_t d);
// gw [V, D] = sum over positions p with ids[p] == row of gy[p]; gy [n, D]. Throws E_INDEX.
void embedding_backward(const Tensor& gy, const Tensor& ids, const Tensor& gw, int64_t n, int64_t v, int64_t d);
}  // namespace sift::cpu
