// Device-agnostic tensor ops of the core: creation, copies between devices and dtypes, views.
// Each op validates its arguments (throwing SiftException with a code), allocates its output and
// queues the kernel on the device's stream (cpu:: or cuda:: in native/cpu, native/cuda).
#pragma once
#include <cstdint>

#include "../core/tensor.h"

namespace sift::ops {

// Host data of `nbytes` bytes laid out contiguously in `dtype`, copied into a new tensor.
Tensor from_host(const void* data, size_t nbytes, const Shape& shape, DType dtype, Device device);
// Copies a tensor's elements (any layout) into a contiguous host buffer; waits for the device.
void to_host(const Tensor& t, void* dst, size_t nbytes);
// Copies a contiguous tensor into a host buffer without waiting for the device: the caller has
// waited for the work that wrote it (a fence after it), and nothing queued since writes it.
void to_host_settled(const Tensor& t, void* dst, size_t nbytes);
// Waits for all queued work on the device and reports any asynchronous error.
void synchronize(Device device);

Tensor full(const Shape& shape, double value, DType dtype, Device device);
Tensor randn(const Shape& shape, DType dtype, Device device, uint64_t seed);
Tensor rand(const Shape& shape, DType dtype, Device device, uint64_t seed);  // uniform [0, 1)
Tensor arange(double start, double end, double step, DType dtype, Device device);

// Strided view over the same storage; checked against the storage's bounds.
Tensor view(const Tensor& t, const Shape& shape, const Shape& strides, int64_t offset);
Tensor contiguous(const Tensor& t);  // t itself when already contiguous
Tensor cast(const Tensor& t, DType dtype);
Tensor to_device(const Tensor& t, Device device);
void copy_(Tensor& dst, const Tensor& src);  // same shape, any layouts and dtypes, same device
void fill_(Tensor& dst, double value);
Tensor clone(const Tensor& t);
// Concatenation along `dim` (same dtype and device, equal other dims).
Tensor concat(const std::vector<Tensor>& ts, int64_t dim);

// Common checks used by all op families.
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
void check_float(const Tensor& a, const char* op);
void check_device_usable(Device d);
// The contiguous version of t for kernels that need it (no copy when already contiguous).
inline Tensor dense(const Tensor& t) { return t.is_contiguous() ? t : contiguous(t); }

}  // namespace sift::ops
