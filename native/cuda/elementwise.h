// CUDA launchers of the elementwise ops (kernels in elementwise.cu). Inputs are views already broadcast to the output's
// shape (stride 0 where they broadcast); outputs are contiguous (in-place ops: any layout).
#pragma once
#include "../core/tensor.h"
#include "../ops/elementwise.h"

namespace sift::cuda {
void unary(UnaryOp op, const Tensor& x, const Tensor& out);
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, const Tensor& gx);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void scalar_op(BinaryOp op, const Tensor& a, double s, const Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);  // cond bool
void add_inplace(const Tensor& dst, const Tensor& src, double alpha);
void scale_inplace(const Tensor& dst, double s);
}  // namespace sift::cuda
