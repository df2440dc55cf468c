// CUDA launchers of the quantization kernels (quant.cu). Same contracts and arithmetic as
// native/cpu/quant.h, queued on the device's stream.
#pragma once
#include <cstdint>

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

}  // namespace sift::cuda
