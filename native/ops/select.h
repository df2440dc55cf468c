// SIFT ops: top-k selection of entries by score, scores from gradients, gathers and scatters
// through flat indices, and device-side sums of squares. Validate, then queue the kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace sift::ops {

// Index dtype of top-k output for a tensor of n elements: i64 when n >= 2^31, else i32.
DType topk_index_dtype(int64_t n);

// The CUDA top-k kernels: "radix" or "bracket" (see native/cuda/select_bracket.h). Returns the
// previous mode. Selections already queued keep the kernels they were given.
std::string set_cuda_select(const std::string& mode);

// The current mode, and how the CUDA topk calls ran since the last reset: the bracket kernels
// selected (hits), the bracket missed and the radix kernels took over (misses), the radix kernels
// alone (mode radix, or f64 scores). topkGlobal is not counted (always the radix kernels).
struct CudaSelectStats {
  std::string mode;
  uint64_t bracket_hits = 0;
  uint64_t bracket_misses = 0;
  uint64_t radix = 0;
};
CudaSelectStats cuda_select_stats();
void reset_cuda_select_stats();

// Exact top-k (ties toward the lower flat index), indices ascending. On CUDA it synchronises once
// at its end to read back the NaN/Inf flag (E_NUMERIC); on CPU a NaN raises E_NUMERIC from the
// queued kernel, i.e. at the next synchronisation.
Tensor topk(const Tensor& scores, int64_t k, const std::string& label = "");
// One budget over several tensors (one dtype, one device). Output sizes depend on the data, so this
// waits for the device once.
std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k);

void score_accumulate(const Tensor& dst, const Tensor& src, const std::string& kind, bool accumulate);
void gather_into(const Tensor& dst, const Tensor& src, const Tensor& idx, bool accumulate);
void scatter_into(const Tensor& dst, const Tensor& idx, const Tensor& values, const std::string& mode);
void grad_proportion(const Tensor& out, int64_t slot, const Tensor& grad, const Tensor& idx);
Tensor sum_squares(const std::vector<Tensor>& ts);

}  // namespace sift::ops
