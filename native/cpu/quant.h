// CPU kernels of the quantized weight formats (layouts in native/ops/quant.h): int8 with a per-row
// absmax, and NF4 (bitsandbytes' layout: blocks of 64 over the flattened weight, two codes per
// byte with the first element in the high nibble, absmax values double-quantized). Inputs are
// contiguous; the ops validate them.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/tensor.h"

namespace sift::cpu {

// w [R, C] float -> q (1-byte, int8 values) [R, C], absmax f32 [R].
void quantize_int8(const Tensor& w, const Tensor& q, const Tensor& absmax);
// Rows [r0, r0 + out.rows) of the int8 weight, dequantized into out (f32 [rows, C], contiguous).
void dequantize_int8_rows(const Tensor& q, const Tensor& absmax, int64_t r0, const Tensor& out);

// w (n elements) float -> packed [ceil(n / 2)], absmax codes [ceil(n / 64)], absmax scales f32
// [ceil(n / 64 / 256)], offset f32 [1].
void quantize_nf4(const Tensor& w, const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale,
                  const Tensor& offset);
// Rows [r0, r0 + out.rows) of an NF4 weight with `cols` columns, dequantized into out (f32).
void dequantize_nf4_rows(const Tensor& packed, const Tensor& absmax_q, const Tensor& absmax_scale, const Tensor& offset,
                         int64_t cols, int64_t r0, const Tensor& out);

// transpose = false: y [M, rows] = x [M, cols] @ W^T; true: y [M, cols] = x [M, rows] @ W. x and y
// contiguous f32; W (state as in native/ops/quant.h) is dequantized one tile of rows at a time
// into a single buffer of about 4 MiB, so the whole dense weight never exists. With `idx` defined
// (sorted flat indices into [rows, cols], i32 or i64, contiguous), the entries at idx take the
// values `vals` (f32 [k]) instead of their dequantized ones, in every tile they fall in.
void quant_linear(const Tensor& x, const std::vector<Tensor>& state, bool nf4, int64_t rows, int64_t cols,
                  bool transpose, const Tensor& y, const Tensor& idx = Tensor(), const Tensor& vals = Tensor());

// Writes vals[j] at tile.flat[idx[j] - lo] for the idx[j] in [lo, lo + tile.numel()) (idx sorted,
// i32 or i64; tile contiguous f32): the trained entries of the weight rows a tile holds.
void set_sparse_entries(const Tensor& tile, const Tensor& idx, const Tensor& vals, int64_t lo);

}  // namespace sift::cpu
