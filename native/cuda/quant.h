// CUDA launchers of the quantization kernels (quant.cu). Same contracts and arithmetic as
// native/cpu/quant.h, queued on the device's stream.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift::cuda {

void quantize_int8(const Tensor& w, const Tensor& q, const Tensor& absmax);
void dequantize_int8_rows(const Tensor& q, const Tensor& absmax, int64_t r0, const Tensor& out);
void quantize_nf4(const Tensor& w, const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale,
                  const Tensor& offset);
void dequantize_nf4_rows(const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale, const Tensor& offset,
                         int64_t cols, int64_t r0, const Tensor& out);
// As cpu::set_sparse_entries: tile.flat[idx[j] - lo] = vals[j] for the idx[j] inside the tile.
void set_sparse_entries(const Tensor& tile, const Tensor& idx, const Tensor& vals, int64_t lo);
// y = x deq(W)^T (transpose false; x [M, cols], y [M, rows]) or x deq(W) (true; x [M, rows], y
// [M, cols]), x and y contiguous f32, with W dequantized inside the GEMM's shared-memory tiles (no
// dense weight in memory) and the trained entries (idx, vals; idx may be undefined) written into them.
void quant_gemm(const Tensor& x, const std::vector<Tensor>& state, bool nf4, int64_t rows, int64_t cols, bool transpose,
                const Tensor& idx, const Tensor& vals, const Tensor& y);

}  // namespace sift::cuda
