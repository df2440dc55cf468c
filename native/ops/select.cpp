// Validation and dispatch of the SIFT kernels (native/cpu/select|sparse, native/cuda/select|sparse).
#include "select.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "dispatch.h"
#include "tensor_ops.h"
#include "../cpu/select.h"
#include "../cpu/sparse.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/select.h"
#include "../cuda/sparse.h"
#endif

namespace sift::ops {
namespace {

void check_index_tensor(const Tensor& idx, const char* op) {
  SIFT_CHECK(is_int(idx.dtype), "E_DTYPE", op, ": indices must be i32 or i64, got ", dtype_name(idx.dtype));
}

void check_f32(const Tensor& t, const char* op, const char* what) {
  SIFT_CHECK(t.dtype == DType::F32, "E_DTYPE", op, ": ", what, " must be f32, got ", dtype_name(t.dtype));
}

void check_contiguous(const Tensor& t, const char* op, const char* what) {
  SIFT_CHECK(t.is_contiguous(), "E_ARG", op, ": ", what, " must be contiguous (", t.desc(), ")");
}

}  // namespace

namespace {
// setCudaSelect: 'radix' (the radix kernels) or 'bracket' (the bracket kernels for one tensor of
// f32/f16/bf16 scores, the radix kernels when the bracket misses). SIFT_FT_CUDA_SELECT sets the
// initial mode.
bool initial_bracket() {
  const char* e = std::getenv("SIFT_FT_CUDA_SELECT");
  return e && std::string(e) == "bracket";
}
std::atomic<bool> g_bracket{initial_bracket()};

std::atomic<uint64_t> g_bracket_hits{0}, g_bracket_misses{0}, g_radix{0};

#ifdef SIFT_WITH_CUDA
void count_path(cuda::TopkPath path) {
  switch (path) {
    case cuda::TopkPath::kBracket:
      g_bracket_hits++;
      break;
    case cuda::TopkPath::kBracketMissed:
      g_bracket_misses++;
      break;
    case cuda::TopkPath::kRadix:
      g_radix++;
      break;
  }
}
#endif
}  // namespace

CudaSelectStats cuda_select_stats() {
  CudaSelectStats st;
  st.mode = g_bracket.load() ? "bracket" : "radix";
  st.bracket_hits = g_bracket_hits.load();
  st.bracket_misses = g_bracket_misses.load();
  st.radix = g_radix.load();
  return st;
}

void reset_cuda_select_stats() {
  g_bracket_hits = 0;
  g_bracket_misses = 0;
  g_radix = 0;
}

std::string set_cuda_select(const std::string& mode) {
  SIFT_CHECK(mode == "radix" || mode == "bracket", "E_ARG", "setCudaSelect: mode must be 'radix' or 'bracket', got '",
             mode, "'");
  const bool prev = g_bracket.exchange(mode == "bracket");
  return prev ? "bracket" : "radix";
}

DType topk_index_dtype(int64_t n) { return n >= (int64_t(1) << 31) ? DType::I64 : DType::I32; }

namespace {
// Runs a top-k; a NaN/Inf found in the scores (reported when the work runs, possibly on the
// executor) names the scores' tensor when a label is given.
template <typename F>
void labelled_topk(const std::string& label, F&& run) {
  try {
    run();
  } catch (const SiftException& e) {
    if (label.empty() || e.code() != "E_NUMERIC") throw;
    fail("E_NUMERIC", "selection scores of '", label, "' contain NaN or Inf (", e.message(), ")");
  }
}
}  // namespace

Tensor topk(const Tensor& scores, int64_t k, const std::string& label) {
  check_device_usable(scores.device());
  check_float(scores, "topk");
  const int64_t n = scores.numel();
  SIFT_CHECK(k >= 1 && k <= n, "E_ARG", "topk: k must be in [1, ", n, "], got ", k);
  Tensor s = dense(scores);
  Tensor out = empty({k}, topk_index_dtype(n), s.device());
  Device dev = s.device();
  const bool bracket = g_bracket.load();
  (void)bracket;
  SIFT_ON_DEVICE(dev, labelled_topk(label, [&] { cpu::topk(s, k, out); }),
                 labelled_topk(label, [&] { count_path(cuda::topk(s, k, out, bracket)); }));
  return out;
}

std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k) {
  SIFT_CHECK(!scores.empty(), "E_ARG", "topkGlobal: no score tensors given");
  const Tensor& first = scores[0];
  check_device_usable(first.device());
  int64_t total = 0;
  std::vector<Tensor> ss;
  for (size_t i = 0; i < scores.size(); i++) {
    check_same_device(first, scores[i], "topkGlobal");
    check_float(scores[i], "topkGlobal");
    SIFT_CHECK(scores[i].dtype == first.dtype, "E_DTYPE", "topkGlobal: all score tensors must share one dtype (tensor ",
               i, " is ", dtype_name(scores[i].dtype), ", tensor 0 is ", dtype_name(first.dtype), ")");
    total += scores[i].numel();
  }
  SIFT_CHECK(k >= 1 && k <= total, "E_ARG", "topkGlobal: k must be in [1, ", total, "], got ", k);
  for (const Tensor& t : scores) ss.push_back(dense(t));
  Device dev = first.device();
  if (dev.is_cpu()) {
    CpuExecutor::get().sync();  // output sizes depend on the data: run here, after queued work
    return cpu::topk_global(ss, k);
  }
#ifdef SIFT_WITH_CUDA
  cuda::set_device(dev.index);
  return cuda::topk_global(ss, k);
#else
  fail("E_DEVICE", "this build of sift-ft has no CUDA backend");
#endif
}

void score_accumulate(const Tensor& dst, const Tensor& src, const std::string& kind, bool accumulate) {
  const char* op = "scoreAccumulate";
  SIFT_CHECK(kind == "abs" || kind == "square", "E_ARG", op, ": kind must be 'abs' or 'square', got '", kind, "'");
  check_same_device(dst, src, op);
  check_device_usable(dst.device());
  check_f32(dst, op, "dst");
  check_float(src, op);
  check_contiguous(dst, op, "dst");
  SIFT_CHECK(dst.numel() == src.numel(), "E_SHAPE", op, ": dst has ", dst.numel(), " elements, src has ", src.numel());
  bool square = kind == "square";
  Tensor d = dst, s = dense(src);
  Device dev = d.device();
  SIFT_ON_DEVICE(dev, cpu::score_accumulate(d, s, square, accumulate),
                 cuda::score_accumulate(d, s, square, accumulate));
}

void gather_into(const Tensor& dst, const Tensor& src, const Tensor& idx, bool accumulate) {
  const char* op = "gatherInto";
  check_same_device(dst, src, op);
  check_same_device(dst, idx, op);
  check_device_usable(dst.device());
  check_f32(dst, op, "dst");
  check_float(src, op);
  check_index_tensor(idx, op);
  check_contiguous(dst, op, "dst");
  SIFT_CHECK(dst.numel() == idx.numel(), "E_SHAPE", op, ": dst has ", dst.numel(), " elements but there are ",
             idx.numel(), " indices");
  Tensor d = dst, s = src, ix = dense(idx);
  Device dev = d.device();
  SIFT_ON_DEVICE(dev, cpu::gather_into(d, s, ix, accumulate), cuda::gather_into(d, s, ix, accumulate));
}

void scatter_into(const Tensor& dst, const Tensor& idx, const Tensor& values, const std::string& mode) {
  const char* op = "scatterInto";
  SIFT_CHECK(mode == "set" || mode == "add", "E_ARG", op, ": mode must be 'set' or 'add', got '", mode, "'");
  check_same_device(dst, idx, op);
  check_same_device(dst, values, op);
  check_device_usable(dst.device());
  check_float(dst, op);
  check_index_tensor(idx, op);
  check_f32(values, op, "values");
  SIFT_CHECK(values.numel() == idx.numel(), "E_SHAPE", op, ": ", values.numel(), " values for ", idx.numel(),
             " indices");
  bool add = mode == "add";
  Tensor d = dst, ix = dense(idx), v = dense(values);
  Device dev = d.device();
  SIFT_ON_DEVICE(dev, cpu::scatter_into(d, ix, v, add), cuda::scatter_into(d, ix, v, add));
}

void grad_proportion(const Tensor& out, int64_t slot, const Tensor& grad, const Tensor& idx) {
  const char* op = "gradProportion";
  check_same_device(out, grad, op);
  check_same_device(out, idx, op);
  check_device_usable(out.device());
  check_f32(out, op, "out");
  check_float(grad, op);
  check_index_tensor(idx, op);
  check_contiguous(out, op, "out");
  SIFT_CHECK(out.dim() == 2 && out.shape[1] == 2, "E_SHAPE", op, ": out must be [n, 2], got ", shape_str(out.shape));
  SIFT_CHECK(slot >= 0 && slot < out.shape[0], "E_INDEX", op, ": slot ", slot, " is out of range for ", out.shape[0],
             " rows");
  Tensor o = out, g = dense(grad), ix = dense(idx);
  Device dev = o.device();
  SIFT_ON_DEVICE(dev, cpu::grad_proportion(o, slot, g, ix), cuda::grad_proportion(o, slot, g, ix));
}

Tensor sum_squares(const std::vector<Tensor>& ts) {
  SIFT_CHECK(!ts.empty(), "E_ARG", "sumSquares: no tensors given");
  check_device_usable(ts[0].device());
  std::vector<Tensor> ds;
  for (const Tensor& t : ts) {
    check_same_device(ts[0], t, "sumSquares");
    check_float(t, "sumSquares");
  }
  for (const Tensor& t : ts) ds.push_back(dense(t));
  Device dev = ts[0].device();
  Tensor out = empty({}, DType::F32, dev);
  SIFT_ON_DEVICE(dev, cpu::sum_squares(ds, out), cuda::sum_squares(ds, out));
  return out;
}

}  // namespace sift::ops
