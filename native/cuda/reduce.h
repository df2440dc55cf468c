// CUDA reduction launchers (kernels in reduce.cu) over the canonical layout x[O, R, I] (contiguous) into out[O, I].
#pragma once
#include "../core/tensor.h"
#include "../ops/reduce.h"

namespace sift::cuda {
void reduce(ReduceOp op, const Tensor& x, int64_t O, int64_t R, int64_t I, const Tensor& out);
void argmax(const Tensor& x, int64_t O, int64_t R, int64_t I, const Tensor& out);  // out i64
}  // namespace sift::cuda
