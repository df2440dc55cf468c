// CPU kernels that move SIFT's sparse data: selection scores, gathers and scatters through flat
// indices, and deterministic sums of squares. Index checks throw E_INDEX from the kernel.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift::cpu {

// dst (contiguous f32, numel of src) = or += |src| ('abs') or src^2; src contiguous float.
void score_accumulate(const Tensor& dst, const Tensor& src, bool square, bool accumulate);
// dst[i] (+)= src.flat[idx[i]]; dst contiguous f32 [k], src any float dtype and layout, idx contiguous.
void gather_into(const Tensor& dst, const Tensor& src, const Tensor& idx, bool accumulate);
// dst.flat[idx[i]] = / += values[i]; dst any float dtype and layout, values contiguous f32.
void scatter_into(const Tensor& dst, const Tensor& idx, const Tensor& values, bool add);
// out[slot] = {sum over idx of grad.flat^2, sum of grad^2} (out contiguous f32 [n, 2]).
void grad_proportion(const Tensor& out, int64_t slot, const Tensor& grad, const Tensor& idx);
// out (f32 scalar) = sum of squares of every element of ts (each contiguous).
void sum_squares(const std::vector<Tensor>& ts, const Tensor& out);

}  // namespace sift::cpu
