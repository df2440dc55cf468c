// Validation, allocation and dispatch of the neural-network ops (see nn.h). Kernels get dense
// operands; integer index operands that are already computed on the CPU are range-checked
// eagerly so that the error points at the call, not at a later read.
#include "nn.h"

#include <cmath>

#include "dispatch.h"
#include "tensor_ops.h"
#include "../cpu/embedding.h"
#include "../cpu/loss.h"
#include "../cpu/norm.h"
#include "../cpu/softmax.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/embedding.h"
#include "../cuda/loss.h"
#include "../cuda/norm.h"
#include "../cuda/softmax.h"
#endif

namespace sift::ops {
namespace {

// Splits the shape around `dim` into [outer, n, inner].
void split_dim(const Tensor& t, int64_t dim, int64_t& outer, int64_t& n, int64_t& inner, const char* op) {
  if (t.dim() == 0) {
    SIFT_CHECK(dim == 0 || dim == -1, "E_SHAPE", op, ": dimension ", dim, " out of range for a scalar");
    outer = n = inner = 1;
    return;
  }
  int64_t d = t.wrap_dim(dim);
  outer = 1;
  inner = 1;
  for (int64_t k = 0; k < d; k++) outer *= t.shape[k];
  for (int64_t k = d + 1; k < t.dim(); k++) inner *= t.shape[k];
  n = t.shape[d];
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* op, const char* an, const char* bn) {
  SIFT_CHECK(a.shape == b.shape, "E_SHAPE", op, ": ", an, " has shape ", shape_str(a.shape), " but ", bn, " has shape ",
             shape_str(b.shape));
}

// The dtype of saved statistics and losses: f64 for f64 data (keeps float64 gradient checks
// exact), f32 for everything else.
DType stat_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// Checks an optional per-feature parameter (weight or bias) of shape [d].
void check_param(const Tensor& p, const Tensor& x, int64_t d, const char* op, const char* name) {
  if (!p.defined()) return;
  check_same_device(x, p, op);
  SIFT_CHECK(p.dtype == x.dtype, "E_DTYPE", op, ": ", name, " is ", dtype_name(p.dtype), " but x is ",
             dtype_name(x.dtype));
  SIFT_CHECK(p.dim() == 1 && p.shape[0] == d, "E_SHAPE", op, ": ", name, " must have shape [", d, "], got ",
             shape_str(p.shape));
}

// Checks saved statistics of shape [rows].
void check_stat(const Tensor& s, const Tensor& x, int64_t rows, const char* op, const char* name) {
  check_same_device(x, s, op);
  SIFT_CHECK(s.dtype == stat_dtype(x.dtype), "E_DTYPE", op, ": ", name, " must be ", dtype_name(stat_dtype(x.dtype)),
             ", got ", dtype_name(s.dtype));
  SIFT_CHECK(s.numel() == rows, "E_SHAPE", op, ": ", name, " must have ", rows, " elements, got shape ",
             shape_str(s.shape));
}

void check_eps(double eps, const char* op) {
  SIFT_CHECK(std::isfinite(eps) && eps >= 0, "E_ARG", op, ": eps must be finite and >= 0, got ", eps);
}

// Leading size (rows) and last dim (d) of a normalisation input.
void norm_dims(const Tensor& x, int64_t& rows, int64_t& d, const char* op) {
  check_float(x, op);
  SIFT_CHECK(x.dim() >= 1, "E_SHAPE", op, ": x needs at least one dimension");
  d = x.shape.back();
  SIFT_CHECK(d > 0, "E_SHAPE", op, ": the normalised dimension is empty (shape ", shape_str(x.shape), ")");
  rows = x.numel() / d;
}

// True when queued CPU work cannot still be writing `t`, so it can be read on this thread now.
bool cpu_ready(const Tensor& t) {
  if (!t.device().is_cpu()) return false;
  CpuExecutor& ex = CpuExecutor::get();
  return ex.inline_mode() || ex.pending() == 0;
}

void check_index_operand(const Tensor& ids, const char* op, const char* name) {
  SIFT_CHECK(is_int(ids.dtype), "E_DTYPE", op, ": ", name, " must be i32 or i64, got ", dtype_name(ids.dtype));
}

cpu::Reduction parse_reduction(const std::string& r, const char* op) {
  if (r == "none") return cpu::Reduction::None;
  if (r == "mean") return cpu::Reduction::Mean;
  if (r == "sum") return cpu::Reduction::Sum;
  fail("E_ARG", op, ": reduction must be 'mean', 'sum' or 'none', got '", r, "'");
}

void check_smoothing(double s, const char* op) {
  SIFT_CHECK(std::isfinite(s) && s >= 0 && s <= 1, "E_ARG", op, ": labelSmoothing must be in [0, 1], got ", s);
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "logSoftmax" : "softmax";
  check_float(x, op);
  int64_t outer, n, inner;
  split_dim(x, dim, outer, n, inner, op);
  Tensor xd = dense(x);
  Tensor y = empty(x.shape, x.dtype, x.device());
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::softmax(xd, y, outer, n, inner, log), cuda::softmax(xd, y, outer, n, inner, log));
  return y;
}

Tensor softmax_backward(const Tensor& y, const Tensor& gy, int64_t dim, bool log) {
  const char* op = log ? "logSoftmaxBackward" : "softmaxBackward";
  check_float(y, op);
  check_same_device(y, gy, op);
  check_same_dtype(y, gy, op);
  check_same_shape(y, gy, op, "y", "gy");
  int64_t outer, n, inner;
  split_dim(y, dim, outer, n, inner, op);
  Tensor yd = dense(y), gd = dense(gy);
  Tensor gx = empty(y.shape, y.dtype, y.device());
  Device dev = y.device();
  SIFT_ON_DEVICE(dev, cpu::softmax_backward(yd, gd, gx, outer, n, inner, log),
                 cuda::softmax_backward(yd, gd, gx, outer, n, inner, log));
  return gx;
}

std::vector<Tensor> layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const char* op = "layerNorm";
  int64_t rows, d;
  norm_dims(x, rows, d, op);
  check_param(weight, x, d, op, "weight");
  check_param(bias, x, d, op, "bias");
  check_eps(eps, op);
  Tensor xd = dense(x);
  Tensor w = weight.defined() ? dense(weight) : Tensor();
  Tensor b = bias.defined() ? dense(bias) : Tensor();
  Tensor y = empty(x.shape, x.dtype, x.device());
  Tensor mean = empty({rows}, stat_dtype(x.dtype), x.device());
  Tensor rstd = empty({rows}, stat_dtype(x.dtype), x.device());
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::layer_norm(xd, w, b, y, mean, rstd, rows, d, eps),
                 cuda::layer_norm(xd, w, b, y, mean, rstd, rows, d, eps));
  return {y, mean, rstd};
}

std::vector<Tensor> layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                        const Tensor& rstd, bool need_weight_grads) {
  const char* op = "layerNormBackward";
  int64_t rows, d;
  norm_dims(x, rows, d, op);
  check_same_device(x, gy, op);
  check_same_dtype(x, gy, op);
  check_same_shape(gy, x, op, "gy", "x");
  check_param(weight, x, d, op, "weight");
  check_stat(mean, x, rows, op, "mean");
  check_stat(rstd, x, rows, op, "rstd");
  Tensor gd = dense(gy), xd = dense(x), md = dense(mean), rd = dense(rstd);
  Tensor w = weight.defined() ? dense(weight) : Tensor();
  Tensor gx = empty(x.shape, x.dtype, x.device());
  Tensor gw = need_weight_grads && weight.defined() ? empty({d}, x.dtype, x.device()) : Tensor();
  Tensor gb = need_weight_grads ? empty({d}, x.dtype, x.device()) : Tensor();
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::layer_norm_backward(gd, xd, w, md, rd, gx, gw, gb, rows, d),
                 cuda::layer_norm_backward(gd, xd, w, md, rd, gx, gw, gb, rows, d));
  return {gx, gw, gb};
}

std::vector<Tensor> rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rmsNorm";
  int64_t rows, d;
  norm_dims(x, rows, d, op);
  check_param(weight, x, d, op, "weight");
  check_eps(eps, op);
  Tensor xd = dense(x);
  Tensor w = weight.defined() ? dense(weight) : Tensor();
  Tensor y = empty(x.shape, x.dtype, x.device());
  Tensor rstd = empty({rows}, stat_dtype(x.dtype), x.device());
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::rms_norm(xd, w, y, rstd, rows, d, eps), cuda::rms_norm(xd, w, y, rstd, rows, d, eps));
  return {y, rstd};
}

std::vector<Tensor> rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                      bool need_weight_grads) {
  const char* op = "rmsNormBackward";
  int64_t rows, d;
  norm_dims(x, rows, d, op);
  check_same_device(x, gy, op);
  check_same_dtype(x, gy, op);
  check_same_shape(gy, x, op, "gy", "x");
  check_param(weight, x, d, op, "weight");
  check_stat(rstd, x, rows, op, "rstd");
  Tensor gd = dense(gy), xd = dense(x), rd = dense(rstd);
  Tensor w = weight.defined() ? dense(weight) : Tensor();
  Tensor gx = empty(x.shape, x.dtype, x.device());
  Tensor gw = need_weight_grads && weight.defined() ? empty({d}, x.dtype, x.device()) : Tensor();
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::rms_norm_backward(gd, xd, w, rd, gx, gw, rows, d),
                 cuda::rms_norm_backward(gd, xd, w, rd, gx, gw, rows, d));
  return {gx, gw};
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  check_index_operand(ids, op, "ids");
  check_same_device(weight, ids, op);
  SIFT_CHECK(weight.dim() == 2, "E_SHAPE", op, ": weight must be [V, D], got shape ", shape_str(weight.shape));
  const int64_t v = weight.shape[0], d = weight.shape[1], n = ids.numel();
  Tensor wd = dense(weight), id = dense(ids);
  int64_t bad;
  if (cpu_ready(id) && cpu::find_bad_index(id, n, v, &bad))
    fail("E_INDEX", op, ": index ", bad, " is out of range for ", v, " rows");
  Shape out_shape = ids.shape;
  out_shape.push_back(d);
  Tensor out = empty(out_shape, weight.dtype, weight.device());
  Device dev = weight.device();
  SIFT_ON_DEVICE(dev, cpu::embedding(wd, id, out, n, v, d), cuda::embedding(wd, id, out, n, v, d));
  return out;
}

Tensor embedding_backward(const Tensor& gy, const Tensor& ids, int64_t num_rows) {
  const char* op = "embeddingBackward";
  check_float(gy, op);
  check_index_operand(ids, op, "ids");
  check_same_device(gy, ids, op);
  SIFT_CHECK(num_rows >= 0, "E_ARG", op, ": numRows must be >= 0, got ", num_rows);
  SIFT_CHECK(gy.dim() == ids.dim() + 1 && std::equal(ids.shape.begin(), ids.shape.end(), gy.shape.begin()), "E_SHAPE",
             op, ": gy of shape ", shape_str(gy.shape), " does not match ids of shape ", shape_str(ids.shape),
             " plus an embedding dimension");
  const int64_t d = gy.shape.back(), n = ids.numel();
  Tensor gd = dense(gy), id = dense(ids);
  int64_t bad;
  if (cpu_ready(id) && cpu::find_bad_index(id, n, num_rows, &bad))
    fail("E_INDEX", op, ": index ", bad, " is out of range for ", num_rows, " rows");
  Tensor gw = empty({num_rows, d}, gy.dtype, gy.device());
  Device dev = gy.device();
  SIFT_ON_DEVICE(dev, cpu::embedding_backward(gd, id, gw, n, num_rows, d),
                 cuda::embedding_backward(gd, id, gw, n, num_rows, d));
  return gw;
}

namespace {
void check_ce_operands(const Tensor& logits, const Tensor& targets, const char* op, int64_t& n, int64_t& c) {
  check_float(logits, op);
  check_index_operand(targets, op, "targets");
  check_same_device(logits, targets, op);
  SIFT_CHECK(logits.dim() == 2, "E_SHAPE", op, ": logits must be [N, C], got shape ", shape_str(logits.shape));
  n = logits.shape[0];
  c = logits.shape[1];
  SIFT_CHECK(c > 0, "E_SHAPE", op, ": logits have no classes (shape ", shape_str(logits.shape), ")");
  SIFT_CHECK(targets.dim() == 1 && targets.shape[0] == n, "E_SHAPE", op, ": targets must have shape [", n, "], got ",
             shape_str(targets.shape));
}

void eager_target_check(const Tensor& targets, int64_t n, int64_t c, int64_t ignore, const char* op) {
  int64_t bad;
  if (cpu_ready(targets) && cpu::find_bad_index(targets, n, c, &bad, ignore))
    fail("E_INDEX", op, ": target ", bad, " is out of range for ", c, " classes");
}
}  // namespace

std::vector<Tensor> cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                  const std::string& reduction, double label_smoothing) {
  const char* op = "crossEntropy";
  int64_t n, c;
  check_ce_operands(logits, targets, op, n, c);
  cpu::Reduction red = parse_reduction(reduction, op);
  check_smoothing(label_smoothing, op);
  Tensor xd = dense(logits), td = dense(targets);
  eager_target_check(td, n, c, ignore_index, op);
  DType ld = stat_dtype(logits.dtype);
  Tensor loss = empty(red == cpu::Reduction::None ? Shape{n} : Shape{}, ld, logits.device());
  Tensor lse = empty({n}, ld, logits.device());
  Device dev = logits.device();
  [[maybe_unused]] int ri = int(red);
  SIFT_ON_DEVICE(dev, cpu::cross_entropy(xd, td, loss, lse, n, c, ignore_index, red, label_smoothing),
                 cuda::cross_entropy(xd, td, loss, lse, n, c, ignore_index, ri, label_smoothing));
  return {loss, lse};
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& gloss,
                              int64_t ignore_index, const std::string& reduction, double label_smoothing) {
  const char* op = "crossEntropyBackward";
  int64_t n, c;
  check_ce_operands(logits, targets, op, n, c);
  cpu::Reduction red = parse_reduction(reduction, op);
  check_smoothing(label_smoothing, op);
  check_stat(lse, logits, n, op, "lse");
  check_float(gloss, op);
  check_same_device(logits, gloss, op);
  if (red == cpu::Reduction::None)
    SIFT_CHECK(gloss.numel() == n, "E_SHAPE", op, ": gloss must have shape [", n, "] for reduction 'none', got ",
               shape_str(gloss.shape));
  else
    SIFT_CHECK(gloss.numel() == 1, "E_SHAPE", op, ": gloss must be a scalar, got shape ", shape_str(gloss.shape));
  Tensor xd = dense(logits), td = dense(targets), ld = dense(lse);
  // The kernels read the loss gradient in the statistics dtype.
  Tensor gd = dense(cast(gloss, stat_dtype(logits.dtype)));
  eager_target_check(td, n, c, ignore_index, op);
  Tensor gx = empty(logits.shape, logits.dtype, logits.device());
  Device dev = logits.device();
  cpu::Reduction rc = red;
  [[maybe_unused]] int ri = int(red);
  SIFT_ON_DEVICE(dev, cpu::cross_entropy_backward(xd, td, ld, gd, gx, n, c, ignore_index, rc, label_smoothing),
                 cuda::cross_entropy_backward(xd, td, ld, gd, gx, n, c, ignore_index, ri, label_smoothing));
  return gx;
}

}  // namespace sift::ops
