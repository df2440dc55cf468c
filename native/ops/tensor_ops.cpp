#include "tensor_ops.h"

#include <cmath>
#include <cstring>

#include "dispatch.h"
#include "../cpu/copy.h"
#include "../cuda/runtime.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/copy.h"
#endif

namespace sift::ops {

void check_device_usable(Device d) {
  if (d.is_cpu()) return;
  SIFT_CHECK(cuda::compiled(), "E_DEVICE", "this build of sift-ft has no CUDA backend; use device 'cpu'");
  SIFT_CHECK(cuda::available(), "E_DEVICE", "CUDA is not usable here: ", cuda::status());
  SIFT_CHECK(d.index < cuda::device_count(), "E_DEVICE", d.str(), " does not exist (", cuda::device_count(),
             " CUDA device(s))");
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  SIFT_CHECK(a.device() == b.device(), "E_DEVICE", op, ": tensors on different devices (", a.device().str(), " and ",
             b.device().str(), ")");
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  SIFT_CHECK(a.dtype == b.dtype, "E_DTYPE", op, ": dtypes differ (", dtype_name(a.dtype), " and ", dtype_name(b.dtype),
             ")");
}

void check_float(const Tensor& a, const char* op) {
  SIFT_CHECK(is_float(a.dtype), "E_DTYPE", op, ": expected a floating-point tensor, got ", dtype_name(a.dtype));
}

void synchronize(Device device) {
  if (device.is_cpu())
    CpuExecutor::get().sync();
  else
    cuda::synchronize(device.index);
}

Tensor from_host(const void* data, size_t nbytes, const Shape& shape, DType dtype, Device device) {
  check_device_usable(device);
  int64_t n = shape_numel(shape);
  SIFT_CHECK(size_t(n) * dtype_size(dtype) == nbytes, "E_SHAPE", "data has ", nbytes, " bytes but shape ",
             shape_str(shape), " of ", dtype_name(dtype), " needs ", size_t(n) * dtype_size(dtype));
  Tensor t = empty(shape, dtype, device);
  if (nbytes == 0) return t;
  if (device.is_cpu())
    std::memcpy(t.raw(), data, nbytes);  // new storage: nothing queued on it
  else
    cuda::copy_h2d(device.index, t.raw(), data, nbytes);
  return t;
}

void to_host(const Tensor& t, void* dst, size_t nbytes) {
  SIFT_CHECK(nbytes == t.nbytes(), "E_SHAPE", "to_host: buffer of ", nbytes, " bytes for ", t.desc());
  Tensor c = contiguous(t);
  synchronize(c.device());
  if (nbytes == 0) return;
  if (c.device().is_cpu())
    std::memcpy(dst, c.raw(), nbytes);
  else
    cuda::copy_d2h(c.device().index, dst, c.raw(), nbytes);
}

void to_host_settled(const Tensor& t, void* dst, size_t nbytes) {
  SIFT_CHECK(nbytes == t.nbytes(), "E_SHAPE", "to_host_settled: buffer of ", nbytes, " bytes for ", t.desc());
  SIFT_CHECK(t.is_contiguous(), "E_ARG", "reading a settled tensor: it must be contiguous (", t.desc(), ")");
  if (nbytes == 0) return;
  if (t.device().is_cpu())
    std::memcpy(dst, t.raw(), nbytes);
  else
    cuda::copy_d2h_settled(t.device().index, dst, t.raw(), nbytes);
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  check_device_usable(device);
  Tensor t = empty(shape, dtype, device);
  SIFT_ON_DEVICE(device, cpu::fill(t, value), cuda::fill(t, value));
  return t;
}

Tensor randn(const Shape& shape, DType dtype, Device device, uint64_t seed) {
  check_device_usable(device);
  SIFT_CHECK(is_float(dtype), "E_DTYPE", "randn: dtype must be floating-point, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype, device);
  SIFT_ON_DEVICE(device, cpu::randn(t, seed), cuda::randn(t, seed));
  return t;
}

Tensor rand(const Shape& shape, DType dtype, Device device, uint64_t seed) {
  check_device_usable(device);
  SIFT_CHECK(is_float(dtype), "E_DTYPE", "rand: dtype must be floating-point, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype, device);
  SIFT_ON_DEVICE(device, cpu::rand(t, seed), cuda::rand(t, seed));
  return t;
}

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  check_device_usable(device);
  SIFT_CHECK(step != 0 && std::isfinite(step) && std::isfinite(start) && std::isfinite(end), "E_ARG",
             "arange: step must be finite and non-zero");
  double span = std::ceil((end - start) / step);
  int64_t n = span > 0 ? int64_t(span) : 0;
  Tensor t = empty({n}, dtype, device);
  SIFT_ON_DEVICE(device, cpu::arange(t, start, step), cuda::arange(t, start, step));
  return t;
}

Tensor view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset) {
  SIFT_CHECK(shape.size() == strides.size(), "E_SHAPE", "view: shape ", shape_str(shape), " and strides ",
             shape_str(strides), " differ in length");
  SIFT_CHECK(offset >= 0, "E_SHAPE", "view: negative offset ", offset);
  int64_t lo = offset, hi = offset;
  bool empty_view = false;
  for (size_t d = 0; d < shape.size(); d++) {
    SIFT_CHECK(shape[d] >= 0, "E_SHAPE", "view: negative dimension in ", shape_str(shape));
    if (shape[d] == 0) empty_view = true;
    int64_t span = (shape[d] - 1) * strides[d];
    if (span < 0)
      lo += span;
    else
      hi += span;
  }
  int64_t cap = int64_t(t.storage->nbytes / t.itemsize());
  SIFT_CHECK(empty_view || (lo >= 0 && hi < cap), "E_SHAPE", "view ", shape_str(shape), " strides ", shape_str(strides),
             " offset ", offset, " reaches outside its storage of ", cap, " elements");
  return make_view(t, shape, strides, offset);
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = empty(t.shape, t.dtype, t.device());
  Device dev = t.device();
  SIFT_ON_DEVICE(dev, cpu::copy(t, out), cuda::copy(t, out));
  return out;
}

Tensor clone(const Tensor& t) {
  Tensor out = empty(t.shape, t.dtype, t.device());
  Device dev = t.device();
  SIFT_ON_DEVICE(dev, cpu::copy(t, out), cuda::copy(t, out));
  return out;
}

Tensor cast(const Tensor& t, DType dtype) {
  if (t.dtype == dtype) return t;
  Tensor out = empty(t.shape, dtype, t.device());
  Device dev = t.device();
  SIFT_ON_DEVICE(dev, cpu::copy(t, out), cuda::copy(t, out));
  return out;
}

void copy_(Tensor& dst, const Tensor& src) {
  check_same_device(dst, src, "copy_");
  SIFT_CHECK(dst.shape == src.shape, "E_SHAPE", "copy_: shapes differ (", shape_str(dst.shape), " and ",
             shape_str(src.shape), ")");
  Device dev = dst.device();
  Tensor d = dst, s = src;
  SIFT_ON_DEVICE(dev, cpu::copy(s, d), cuda::copy(s, d));
}

void fill_(Tensor& dst, double value) {
  Device dev = dst.device();
  Tensor d = dst;
  SIFT_ON_DEVICE(dev, cpu::fill(d, value), cuda::fill(d, value));
}

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  check_device_usable(device);
  Tensor src = contiguous(t);
  Tensor out = empty(t.shape, t.dtype, device);
  if (out.nbytes() == 0) return out;
  if (src.device().is_cpu()) {
    CpuExecutor::get().sync();
    cuda::copy_h2d(device.index, out.raw(), src.raw(), out.nbytes());
  } else if (device.is_cpu()) {
    cuda::copy_d2h(src.device().index, out.raw(), src.raw(), out.nbytes());
  } else {  // between two GPUs: through the host
    std::vector<char> buf(out.nbytes());
    cuda::copy_d2h(src.device().index, buf.data(), src.raw(), out.nbytes());
    cuda::copy_h2d(device.index, out.raw(), buf.data(), out.nbytes());
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& ts, int64_t dim) {
  SIFT_CHECK(!ts.empty(), "E_ARG", "concat: no tensors given");
  const Tensor& first = ts[0];
  int64_t d = first.wrap_dim(dim);
  Shape out_shape = first.shape;
  int64_t total = 0;
  for (size_t i = 0; i < ts.size(); i++) {
    const Tensor& t = ts[i];
    check_same_device(first, t, "concat");
    check_same_dtype(first, t, "concat");
    SIFT_CHECK(t.dim() == first.dim(), "E_SHAPE", "concat: tensor ", i, " has ", t.dim(), " dimensions, expected ",
               first.dim());
    for (int64_t k = 0; k < t.dim(); k++)
      SIFT_CHECK(k == d || t.shape[k] == first.shape[k], "E_SHAPE", "concat: tensor ", i, " has shape ",
                 shape_str(t.shape), ", incompatible with ", shape_str(first.shape), " along dim ", k);
    total += t.shape[d];
  }
  out_shape[d] = total;
  Tensor out = empty(out_shape, first.dtype, first.device());
  int64_t start = 0;
  for (const Tensor& t : ts) {
    Shape shp = out.shape;
    shp[d] = t.shape[d];
    Tensor dst = make_view(out, shp, out.strides, start * out.strides[d]);
    copy_(dst, t);
    start += t.shape[d];
  }
  return out;
}

}  // namespace sift::ops
