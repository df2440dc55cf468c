#include "allocator.h"

#include <cstdlib>

#include "../cuda/runtime.h"

namespace sift {

void* device_alloc(Device device, size_t nbytes) {
  if (device.is_cpu()) {
    size_t rounded = (nbytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void* p = std::aligned_alloc(64, rounded);
    SIFT_CHECK(p != nullptr, "E_OOM", "out of host memory allocating ", nbytes, " bytes");
    return p;
  }
  return cuda::alloc(device.index, nbytes);
}

void device_free(Device device, void* ptr, size_t nbytes) {
  if (!ptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
    return;
  }
  cuda::release(device.index, ptr, nbytes);
}

}  // namespace sift
