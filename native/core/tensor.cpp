#include "tensor.h"

#include <cstdlib>
#include <sstream>

#include "allocator.h"

namespace sift {

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device{DeviceType::CPU, 0};
  if (s == "cuda") return Device{DeviceType::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0) {
    char* end = nullptr;
    long idx = std::strtol(s.c_str() + 5, &end, 10);
    if (end && *end == 0 && idx >= 0 && idx < 64) return Device{DeviceType::CUDA, int(idx)};
  }
  fail("E_DEVICE", "unknown device '", s, "' (expected cpu, cuda or cuda:N)");
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); i++) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = int64_t(s.size()) - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; i--) {
    if (shape[i] != 1 && strides[i] != acc) return false;
    acc *= shape[i];
  }
  return true;
}

int64_t Tensor::wrap_dim(int64_t d) const {
  int64_t n = dim();
  int64_t w = d < 0 ? d + n : d;
  SIFT_CHECK(w >= 0 && w < n, "E_SHAPE", "dimension ", d, " out of range for a tensor of ", n, " dimensions");
  return w;
}

std::string Tensor::desc() const {
  return str_cat(dtype_name(dtype), shape_str(shape), " on ", storage ? device().str() : "?");
}

MemoryStats& memory_stats(DeviceType t) {
  static MemoryStats cpu, cuda;
  return t == DeviceType::CPU ? cpu : cuda;
}

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  data = device_alloc(dev, n);
  auto& st = memory_stats(dev.type);
  st.count++;
  int64_t now = st.bytes += int64_t(n);
  int64_t peak = st.peak_bytes.load();
  while (now > peak && !st.peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

Storage::~Storage() {
  device_free(device, data, nbytes);
  auto& st = memory_stats(device.type);
  st.count--;
  st.bytes -= int64_t(nbytes);
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape) SIFT_CHECK(d >= 0, "E_SHAPE", "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.dtype = dtype;
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage = std::make_shared<Storage>(bytes, device);
  return t;
}

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  Tensor t;
  t.storage = base.storage;
  t.shape = std::move(shape);
  t.strides = std::move(strides);
  t.offset = offset;
  t.dtype = base.dtype;
  return t;
}

}  // namespace sift
