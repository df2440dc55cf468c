// The native tensor: a shared storage buffer plus a strided view (shape, strides, offset in
// elements). Views (reshape, transpose, slices) share the storage; the storage is freed when the
// last view is dropped. Kernels get `Tensor` values; ops capture them by value in queued work so
// that memory stays alive until the work has run.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "error.h"

namespace sift {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

Device parse_device(const std::string& s);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

// One allocation. Frees itself through the device's allocator.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Tensor {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;

  bool defined() const { return storage != nullptr; }
  int64_t dim() const { return int64_t(shape.size()); }
  int64_t numel() const { return shape_numel(shape); }
  int64_t size(int64_t d) const { return shape[wrap_dim(d)]; }
  Device device() const { return storage->device; }
  size_t itemsize() const { return dtype_size(dtype); }
  size_t nbytes() const { return size_t(numel()) * itemsize(); }
  bool is_contiguous() const;
  int64_t wrap_dim(int64_t d) const;

  void* raw() const { return static_cast<char*>(storage->data) + offset * int64_t(itemsize()); }
  template <typename T>
  T* data() const {
    return reinterpret_cast<T*>(raw());
  }

  std::string desc() const;  // "f32[2, 3] on cpu"
};

// A new uninitialised contiguous tensor.
Tensor empty(const Shape& shape, DType dtype, Device device);
// A view with new shape/strides over the same storage (no copy, no checks beyond bounds).
Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset);

// Live storage accounting per device type, for leak tests (liveTensors()).
struct MemoryStats {
  std::atomic<int64_t> count{0};
  std::atomic<int64_t> bytes{0};
  std::atomic<int64_t> peak_bytes{0};
};
MemoryStats& memory_stats(DeviceType t);

}  // namespace sift
