// Quantized weights: formats, validation and the tiled quantized linear products.
//
// Storage of a weight W [rows, cols] (the byte tensors have the engine's 1-byte dtype):
//   int8: q      1 byte  [rows, cols]   q = round(w / absmax_row * 127), in [-127, 127]
//         absmax f32     [rows]         W ~= q * absmax_row / 127
//   nf4:  packed 1 byte  [ceil(n / 2)]  n = rows * cols, flattened row-major; element 2i in the
//                                       high nibble of byte i, element 2i + 1 in the low nibble
//         absmax_q 1 byte [ceil(n / 64)]      dynamic-map code of (absmax_block - offset) / scale
//         absmax_scale f32 [ceil(n / 16384)]  absmax of (absmax_block - offset) per 256 blocks
//         offset f32 [1]                      mean of the block absmax values
//         W ~= nf4[code] * (dynamic[absmax_q] * absmax_scale + offset)
// This is bitsandbytes' Linear8bitLt row-wise absmax (int8) and quantize_4bit(quant_type='nf4',
// blocksize=64, compress_statistics=True) (nf4).
#pragma once
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace sift::ops {

// Quantizes a 2-D float weight; returns the state tensors in the order listed above.
std::vector<Tensor> quantize(const Tensor& w, const std::string& format);
// The dequantized weight, f32 [rows, cols].
Tensor dequantize(const std::vector<Tensor>& state, const std::string& format, int64_t rows, int64_t cols);
// Rows [r0, r1) of the dequantized weight into a new f32 [r1 - r0, cols] tensor.
Tensor dequantize_rows(const std::vector<Tensor>& state, const std::string& format, int64_t rows, int64_t cols,
                       int64_t r0, int64_t r1);
// transpose = false: y [..., rows] = x [..., cols] @ W^T; true: y [..., cols] = x [..., rows] @ W
// (the input gradient of the former). W is dequantized by tiles of rows, never whole (unless it
// fits one tile); the output has x's dtype (products accumulate in f32). With `idx` defined (sorted,
// unique flat indices into [rows, cols], i32 or i64) the weight is W with the entries at idx
// replaced by `vals` (f32 [k]): SIFT's trained entries of a quantized target, written into each
// dequantized tile.
Tensor quant_linear(const Tensor& x, const std::vector<Tensor>& state, const std::string& format, int64_t rows,
                    int64_t cols, bool transpose, const Tensor& idx = Tensor(), const Tensor& vals = Tensor());

// The CUDA quantized product: 'tiles' (the default: dequantized tiles in memory, then the GEMM) or
// 'fused' (dequantized inside the GEMM's shared-memory tiles); returns the previous mode. The CPU
// always uses tiles.
std::string set_quant_gemm(const std::string& mode);

}  // namespace sift::ops
