// Queues a kernel on the device's stream. CPU work goes to the CPU executor (captures tensors by
// value, so their memory lives until the kernel ran); CUDA work is launched at once on the
// device's stream. In CPU-only builds the CUDA branch is compiled out.
#pragma once
#include "../core/executor.h"
#include "../cuda/runtime.h"

#ifdef SIFT_WITH_CUDA
#define SIFT_CUDA_BRANCH(...) __VA_ARGS__
#else
#define SIFT_CUDA_BRANCH(...) ::sift::fail("E_DEVICE", "this build of sift-ft has no CUDA backend")
#endif

// SIFT_ON_DEVICE(device, cpu::kernel(a, out), cuda::kernel(a, out));
#define SIFT_ON_DEVICE(dev, cpu_call, cuda_call)                           \
  do {                                                                     \
    if ((dev).is_cpu()) {                                                  \
      ::sift::CpuExecutor::get().enqueue([=]() { cpu_call; });             \
    } else {                                                               \
      SIFT_CUDA_BRANCH(::sift::cuda::set_device((dev).index); cuda_call;); \
    }                                                                      \
  } while (0)
