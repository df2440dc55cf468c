// Waiting for a device without blocking JavaScript, and the CPU thread count.
//   deviceFence(device) -> fence: marks the work queued on the device so far (CPU executor
//     sequence number, or a CUDA event recorded on the stream); never waits.
//   waitFenceAsync(device, fence) -> Promise: resolves once the device ran the work up to the
//     fence (the wait runs on a libuv worker thread); rejects with the first asynchronous error.
//   executorStats() / resetExecutorStats(): queue depth, fence, the time the JavaScript thread
//     spent blocked in the CPU executor (back-pressure and synchronous reads), and the device
//     waits run on worker threads (waitFenceAsync, toBufferAsync).
//   setNumThreads(n) -> previous: threads of later CPU kernels (0: the default), applied in op
//     order on the executor; numThreads() -> { threads, default, hardware }.
#include <atomic>
#include <functional>

#include "../core/executor.h"
#include "../cpu/parallel.h"
#include "../cuda/runtime.h"
#include "util.h"

namespace sift::binding {
namespace {

Device arg_device(const Napi::CallbackInfo& info, size_t i) { return parse_device(arg_string(info, i, "device")); }

Napi::Value DeviceFence(const Napi::CallbackInfo& info) {
  Device d = arg_device(info, 0);
  uint64_t f = d.is_cpu() ? CpuExecutor::get().fence() : cuda::fence_record(d.index);
  return Napi::Number::New(info.Env(), double(f));
}

Napi::Value WaitFenceAsync(const Napi::CallbackInfo& info) {
  Device d = arg_device(info, 0);
  int64_t f = arg_int(info, 1, "fence");
  SIFT_CHECK(f >= 0, "E_ARG", "waitFenceAsync: fence must be a non-negative integer from deviceFence(), got ", f);
  std::function<void()> work;
  if (d.is_cpu())
    work = [f] { CpuExecutor::get().wait_for(uint64_t(f)); };
  else
    work = [d, f] { cuda::fence_wait(d.index, uint64_t(f)); };
  async_device_waits()++;
  return run_async(info.Env(), "sift-ft:deviceWait", std::move(work));
}

Napi::Value ExecutorStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& ex = CpuExecutor::get();
  auto w = ex.main_thread_waits();
  Napi::Object o = Napi::Object::New(env);
  o.Set("pending", double(ex.pending()));
  o.Set("maxPending", double(ex.max_pending()));
  o.Set("fence", double(ex.fence()));
  Napi::Object m = Napi::Object::New(env);
  m.Set("count", double(w.count));
  m.Set("totalMs", double(w.total_ns) / 1e6);
  m.Set("maxMs", double(w.max_ns) / 1e6);
  o.Set("mainThreadWaits", m);
  o.Set("asyncWaits", double(async_device_waits().load()));
  return o;
}

Napi::Value ResetExecutorStats(const Napi::CallbackInfo& info) {
  CpuExecutor::get().reset_main_thread_waits();
  async_device_waits() = 0;
  return info.Env().Undefined();
}

// What setNumThreads asked for last (0: the default); kernels see it once the executor reaches it.
std::atomic<int> g_requested_threads{0};

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = arg_int(info, 0, "threads");
  SIFT_CHECK(n >= 0 && n <= 256, "E_ARG", "setNumThreads: threads must be 0 (the default) to 256, got ", n);
  int prev = g_requested_threads.exchange(int(n));
  launch_on(true, [n] { cpu::set_num_threads(int(n)); });
  return Napi::Number::New(info.Env(), prev);
}

Napi::Value NumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int req = g_requested_threads.load();
  o.Set("threads", req > 0 ? req : cpu::default_num_threads());
  o.Set("default", cpu::default_num_threads());
  o.Set("hardware", cpu::hardware_threads());
  o.Set("fromEnv", cpu::env_num_threads() > 0);
  return o;
}

}  // namespace

SIFT_BINDINGS(register_device_wait_bindings) {
  // The thread that loads the addon is the JavaScript thread whose waits executorStats counts.
  CpuExecutor::get().set_main_thread();
  SIFT_EXPORT("deviceFence", DeviceFence);
  SIFT_EXPORT("waitFenceAsync", WaitFenceAsync);
  SIFT_EXPORT("executorStats", ExecutorStats);
  SIFT_EXPORT("resetExecutorStats", ResetExecutorStats);
  SIFT_EXPORT("setNumThreads", SetNumThreads);
  SIFT_EXPORT("numThreads", NumThreads);
}

}  // namespace sift::binding
