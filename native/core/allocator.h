// Device memory. CPU: 64-byte aligned host memory. CUDA: the caching allocator in
// native/cuda/allocator.cu (blocks are returned to a per-size cache, reused in stream order).
#pragma once
#include <cstddef>

#include "tensor.h"

namespace sift {

void* device_alloc(Device device, size_t nbytes);
void device_free(Device device, void* ptr, size_t nbytes);

}  // namespace sift
