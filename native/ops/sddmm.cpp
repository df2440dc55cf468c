// Validation and dispatch of the SDDMM (native/cpu/sddmm, native/cuda/sddmm).
#include "sddmm.h"

#include <vector>

#include "../core/sddmm_plan.h"
#include "../cpu/sddmm.h"
#include "dispatch.h"
#include "tensor_ops.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/sddmm.h"
#endif

namespace sift::ops {
namespace {

// A contiguous [tokens, features] view of t (features = its last dim).
Tensor rows_view(const Tensor& t) {
  Tensor d = dense(t);
  const int64_t f = d.shape.back(), rows = f ? d.numel() / f : 0;
  return make_view(d, {rows, f}, {f, 1}, d.offset);
}

}  // namespace

Tensor sddmm_plan(const Tensor& idx, int64_t rows, int64_t cols) {
  const char* op = "sddmmPlan";
  check_device_usable(idx.device());
  SIFT_CHECK(is_int(idx.dtype), "E_DTYPE", op, ": indices must be i32 or i64, got ", dtype_name(idx.dtype));
  SIFT_CHECK(idx.dim() == 1, "E_SHAPE", op, ": indices must be 1-D, got ", idx.desc());
  SIFT_CHECK(rows >= 1 && cols >= 1, "E_ARG", op, ": rows and cols must be positive, got ", rows, " and ", cols);
  const int64_t k = idx.numel();
  std::vector<int64_t> host(static_cast<size_t>(k));
  if (idx.dtype == DType::I64) {
    to_host(idx, host.data(), size_t(k) * sizeof(int64_t));
  } else {
    std::vector<int32_t> h32(static_cast<size_t>(k));
    to_host(idx, h32.data(), size_t(k) * sizeof(int32_t));
    for (int64_t i = 0; i < k; i++) host[size_t(i)] = h32[size_t(i)];
  }
  const std::vector<int64_t> packed = plan_sddmm(host.data(), k, rows, cols).pack();
  return from_host(packed.data(), packed.size() * sizeof(int64_t), {int64_t(packed.size())}, DType::I64, idx.device());
}

void sddmm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& idx, const Tensor& plan,
           bool accumulate) {
  const char* op = "sddmm";
  check_same_device(out, a, op);
  check_same_device(out, b, op);
  check_same_device(out, idx, op);
  check_device_usable(out.device());
  SIFT_CHECK(out.dtype == DType::F32, "E_DTYPE", op, ": out must be f32, got ", dtype_name(out.dtype));
  SIFT_CHECK(out.is_contiguous(), "E_ARG", op, ": out must be contiguous (", out.desc(), ")");
  check_float(a, op);
  check_same_dtype(a, b, op);
  SIFT_CHECK(is_int(idx.dtype), "E_DTYPE", op, ": indices must be i32 or i64, got ", dtype_name(idx.dtype));
  SIFT_CHECK(out.numel() == idx.numel(), "E_SHAPE", op, ": out has ", out.numel(), " elements but there are ",
             idx.numel(), " indices");
  SIFT_CHECK(a.dim() >= 1 && b.dim() >= 1 && a.shape.back() >= 1 && b.shape.back() >= 1, "E_SHAPE", op,
             ": a and b need a non-empty last (feature) dim, got ", a.desc(), " and ", b.desc());
  const int64_t fa = a.shape.back(), fb = b.shape.back();
  SIFT_CHECK(a.numel() / fa == b.numel() / fb, "E_SHAPE", op, ": a ", a.desc(), " and b ", b.desc(),
             " have different token counts");
  const int64_t k = idx.numel();
  if (plan.defined()) {
    check_same_device(out, plan, op);
    SIFT_CHECK(plan.dtype == DType::I64 && plan.dim() == 1 && plan.is_contiguous(), "E_ARG", op,
               ": plan must be the contiguous i64 tensor sddmmPlan made, got ", plan.desc());
    const int64_t len = plan.numel();
    SIFT_CHECK(len >= SddmmPlan::packed_size(k, 0) && (len - SddmmPlan::packed_size(k, 0)) % 3 == 0, "E_MISMATCH", op,
               ": the plan (", len, " values) was not made for ", k, " indices");
  }
  Tensor o = out, ta = rows_view(a), tb = rows_view(b), ix = dense(idx), pl = plan;
  Device dev = o.device();
  if (dev.is_cpu()) {
    CpuExecutor::get().enqueue(
        [=]() { cpu::sddmm(o, ta, tb, ix, pl.defined() ? pl.data<int64_t>() : nullptr, accumulate); });
    return;
  }
#ifdef SIFT_WITH_CUDA
  if (!pl.defined()) pl = sddmm_plan(ix, fa, fb);
  cuda::set_device(dev.index);
  cuda::sddmm(o, ta, tb, ix, pl, accumulate);
#else
  fail("E_DEVICE", "this build of sift-ft has no CUDA backend");
#endif
}

}  // namespace sift::ops
