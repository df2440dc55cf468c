// Reductions over any set of dims (sum, mean, max, min, sum of squares, max of |x|), argmax and
// sum_to (the reverse of broadcasting). Every reduction is brought to the canonical form
// x[O, R, I] (contiguous; R reduced, O and I kept) so that the kernels only see rows (I == 1)
// or columns (I > 1). Float sums accumulate in f32 (f64 for f64) in a fixed order: results do
// not depend on the thread count or on timing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace sift {

enum class ReduceOp : uint8_t { Sum, Mean, Max, Min, SumSq, AbsMax };
ReduceOp parse_reduce_op(const std::string& s);

namespace ops {

// dims may be negative; repeated dims are an E_SHAPE error. keepdim leaves reduced dims as 1.
Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// Index (i64) of the first maximum along dim; NaN counts as the maximum.
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim);
// Sums x down to `shape`, which must broadcast to x's shape.
Tensor sum_to(const Tensor& x, const Shape& shape);

inline Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false) {
  return reduce(ReduceOp::Sum, x, dims, keepdim);
}

}  // namespace ops
}  // namespace sift
