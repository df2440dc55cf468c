// CUDA launchers for SIFT's sparse-data kernels (sparse.cu). Same contracts as native/cpu/sparse.h,
// except that an index out of range sets the device error flag (E_INDEX at the next
// synchronisation) and the kernel skips that element. Reductions are deterministic (fixed block
// partials, then one block) and never synchronise.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift::cuda {

void score_accumulate(const Tensor& dst, const Tensor& src, bool square, bool accumulate);
void gather_into(const Tensor& dst, const Tensor& src, const Tensor& idx, bool accumulate);
// 'add' uses atomics, so repeated indices accumulate; 'set' with repeated indices keeps one of them.
void scatter_into(const Tensor& dst, const Tensor& idx, const Tensor& values, bool add);
void grad_proportion(const Tensor& out, int64_t slot, const Tensor& grad, const Tensor& idx);
void sum_squares(const std::vector<Tensor>& ts, const Tensor& out);

}  // namespace sift::cuda
