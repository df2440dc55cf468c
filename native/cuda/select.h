// CUDA top-k selection for SIFT (kernels in select.cu): radix select over order-preserving keys
// of the scores with candidate compaction, then an ordered compaction of the selected indices.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift::cuda {

// Same contract as cpu::topk. Queues all work on the device stream, then synchronises once at the
// end to read back the NaN/Inf flag (E_NUMERIC): the caller sizes the output (k) on the host.
// bracket: the bracket kernels (select_bracket.h) for f32/f16/bf16, the radix kernels when the
// bracket misses and for f64; otherwise the radix kernels. Returns which ran.
enum class TopkPath { kRadix, kBracket, kBracketMissed };
TopkPath topk(const Tensor& scores, int64_t k, const Tensor& out, bool bracket = false);

// Same contract as cpu::topk_global. Synchronises once, before the last kernel, to learn how many
// indices each tensor gets.
std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k);

}  // namespace sift::cuda
