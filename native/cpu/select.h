// CPU top-k selection for SIFT: exact, deterministic radix select over order-preserving integer
// keys of the float scores, multi-threaded over fixed chunks. Indices come out ascending.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift::cpu {

// The k largest elements of `scores` (contiguous float tensor, treated as flat), ties toward the
// lower flat index; writes their flat indices ascending into `out` (contiguous i32/i64 [k]).
// Throws E_NUMERIC when a score is NaN or infinite.
void topk(const Tensor& scores, int64_t k, const Tensor& out);

// One budget of k over several contiguous score tensors of one float dtype (ties toward the lower
// tensor position, then the lower flat index). Returns one ascending index tensor per input
// (i64 for an input with >= 2^31 elements, else i32). Runs on the calling thread.
std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k);

}  // namespace sift::cpu
