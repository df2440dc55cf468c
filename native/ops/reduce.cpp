// Validation and layout planning of the reductions: the reduced dims are brought into the
// canonical x[O, R, I] form (without a copy when x is contiguous and the reduced dims are
// adjacent, else by permuting them to the end and copying), then the kernel is queued.
#include "reduce.h"

#include <algorithm>

#include "dispatch.h"
#include "tensor_ops.h"
#include "../cpu/reduce.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/reduce.h"
#endif

namespace sift {

ReduceOp parse_reduce_op(const std::string& s) {
  if (s == "sum") return ReduceOp::Sum;
  if (s == "mean") return ReduceOp::Mean;
  if (s == "max") return ReduceOp::Max;
  if (s == "min") return ReduceOp::Min;
  if (s == "sumsq") return ReduceOp::SumSq;
  if (s == "absmax") return ReduceOp::AbsMax;
  fail("E_ARG", "unknown reduction '", s, "' (expected sum, mean, max, min, sumsq or absmax)");
}

namespace ops {
namespace {

const char* reduce_name(ReduceOp op) {
  static const char* names[] = {"sum", "mean", "max", "min", "sumsq", "absmax"};
  return names[int(op)];
}

struct Plan {
  Tensor src;  // contiguous, laid out as [O, R, I]
  int64_t O = 1, R = 1, I = 1;
};

Plan plan_contiguous(const Tensor& x, const std::vector<bool>& red);

// `red[d]` marks reduced dims of x. A permuted dense tensor (a transpose, say) is first put
// back in storage order, where it is contiguous: reducing it there needs no copy.
Plan plan_reduction(const Tensor& x, const std::vector<bool>& red) {
  if (!x.is_contiguous() && x.dim() > 1) {
    std::vector<int64_t> order(size_t(x.dim()));
    for (size_t i = 0; i < order.size(); i++) order[i] = int64_t(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x.strides[a] > x.strides[b]; });
    Shape shape, strides;
    std::vector<bool> pred;
    for (int64_t d : order) {
      shape.push_back(x.shape[d]);
      strides.push_back(x.strides[d]);
      pred.push_back(red[size_t(d)]);
    }
    // The kept dims must keep their relative order, since the output is laid out in it.
    bool kept_in_order = true;
    int64_t prev = -1;
    for (int64_t d : order) {
      if (red[size_t(d)] || x.shape[d] == 1) continue;
      if (d < prev) kept_in_order = false;
      prev = d;
    }
    Tensor v = make_view(x, shape, strides, x.offset);
    if (kept_in_order && v.is_contiguous()) return plan_contiguous(v, pred);
  }
  return plan_contiguous(x, red);
}

Plan plan_contiguous(const Tensor& x, const std::vector<bool>& red) {
  Plan p;
  const int64_t nd = x.dim();
  // Size-1 dims do not matter for the layout; are the other reduced dims adjacent?
  int64_t first = -1, last = -1;
  bool adjacent = true;
  for (int64_t d = 0; d < nd; d++) {
    if (x.shape[d] == 1) continue;
    if (red[d]) {
      if (first < 0)
        first = d;
      else if (last >= 0 && last != d - 1) {
        // a non-trivial kept dim between two reduced ones?
        for (int64_t k = last + 1; k < d; k++)
          if (x.shape[k] != 1) adjacent = false;
      }
      last = d;
    }
  }
  if (first < 0) {  // nothing (non-trivial) to reduce
    p.src = dense(x);
    p.O = x.numel();
    return p;
  }
  if (adjacent && x.is_contiguous()) {
    p.src = x;
    for (int64_t d = 0; d < first; d++) p.O *= x.shape[d];
    for (int64_t d = first; d <= last; d++) p.R *= x.shape[d];
    for (int64_t d = last + 1; d < nd; d++) p.I *= x.shape[d];
    return p;
  }
  Shape shape, strides;
  for (int64_t d = 0; d < nd; d++)
    if (!red[d]) {
      shape.push_back(x.shape[d]);
      strides.push_back(x.strides[d]);
      p.O *= x.shape[d];
    }
  for (int64_t d = 0; d < nd; d++)
    if (red[d]) {
      shape.push_back(x.shape[d]);
      strides.push_back(x.strides[d]);
      p.R *= x.shape[d];
    }
  p.src = dense(make_view(x, shape, strides, x.offset));
  return p;
}

}  // namespace

Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const char* name = reduce_name(op);
  SIFT_CHECK(x.defined(), "E_ARG", name, ": undefined tensor");
  SIFT_CHECK(x.dtype != DType::BOOL, "E_DTYPE", name, ": bool tensors cannot be reduced; cast first");
  SIFT_CHECK(is_float(x.dtype) || op == ReduceOp::Sum || op == ReduceOp::Max || op == ReduceOp::Min, "E_DTYPE", name,
             ": needs a floating-point tensor, got ", dtype_name(x.dtype));
  const int64_t nd = x.dim();
  std::vector<bool> red(size_t(std::max<int64_t>(nd, 1)), false);
  for (int64_t d : dims) {
    // A 0-d tensor accepts dim 0 / -1 (as in PyTorch): a reduction over its single element.
    int64_t w = d < 0 ? d + std::max<int64_t>(nd, 1) : d;
    SIFT_CHECK(w >= 0 && w < std::max<int64_t>(nd, 1), "E_SHAPE", name, ": dimension ", d,
               " out of range for a tensor of ", nd, " dimensions");
    SIFT_CHECK(!red[size_t(w)], "E_SHAPE", name, ": dimension ", d, " repeated");
    red[size_t(w)] = true;
  }
  red.resize(size_t(nd));
  Shape out_shape;
  int64_t count = 1;
  for (int64_t d = 0; d < nd; d++) {
    if (red[size_t(d)]) {
      count *= x.shape[d];
      if (keepdim) out_shape.push_back(1);
    } else {
      out_shape.push_back(x.shape[d]);
    }
  }
  Tensor out = empty(out_shape, x.dtype, x.device());
  SIFT_CHECK(count > 0 || out.numel() == 0 || !(op == ReduceOp::Max || op == ReduceOp::Min), "E_SHAPE", name,
             ": reduction over zero elements (", x.desc(), ") has no identity");
  if (out.numel() == 0) return out;
  Plan p = plan_reduction(x, red);
  Tensor src = p.src;
  int64_t O = p.O, R = p.R, I = p.I;
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::reduce(op, src, O, R, I, out), cuda::reduce(op, src, O, R, I, out));
  return out;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  SIFT_CHECK(x.defined(), "E_ARG", "argmax: undefined tensor");
  SIFT_CHECK(x.dtype != DType::BOOL, "E_DTYPE", "argmax: bool tensors; cast first");
  const int64_t nd = x.dim();
  int64_t w = dim < 0 ? dim + std::max<int64_t>(nd, 1) : dim;
  SIFT_CHECK(w >= 0 && w < std::max<int64_t>(nd, 1), "E_SHAPE", "argmax: dimension ", dim,
             " out of range for a tensor of ", nd, " dimensions");
  Shape out_shape;
  for (int64_t d = 0; d < nd; d++) {
    if (d != w)
      out_shape.push_back(x.shape[d]);
    else if (keepdim)
      out_shape.push_back(1);
  }
  Tensor out = empty(out_shape, DType::I64, x.device());
  if (out.numel() == 0) return out;
  SIFT_CHECK(nd == 0 || x.shape[w] > 0, "E_SHAPE", "argmax: dimension ", dim, " of ", x.desc(), " is empty");
  Tensor src = dense(x);
  int64_t O = 1, R = 1, I = 1;
  for (int64_t d = 0; d < nd; d++) {
    if (d < w)
      O *= x.shape[d];
    else if (d == w)
      R = x.shape[d];
    else
      I *= x.shape[d];
  }
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::argmax(src, O, R, I, out), cuda::argmax(src, O, R, I, out));
  return out;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  SIFT_CHECK(x.defined(), "E_ARG", "sumTo: undefined tensor");
  const int64_t nd = x.dim(), td = int64_t(shape.size());
  SIFT_CHECK(td <= nd, "E_SHAPE", "sumTo: ", shape_str(shape), " does not broadcast to ", shape_str(x.shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < nd; d++) {
    if (d < nd - td) {
      dims.push_back(d);
      continue;
    }
    int64_t want = shape[size_t(d - (nd - td))];
    SIFT_CHECK(want == x.shape[d] || want == 1, "E_SHAPE", "sumTo: ", shape_str(shape), " does not broadcast to ",
               shape_str(x.shape));
    if (want != x.shape[d]) dims.push_back(d);
  }
  if (dims.empty() && x.shape == shape) return x;
  Tensor r = dims.empty() ? dense(x) : reduce(ReduceOp::Sum, x, dims, true);
  return make_view(r, shape, contiguous_strides(shape), r.offset);
}

}  // namespace ops
}  // namespace sift
