// The CPU "stream": ops on CPU tensors are queued here and run in order on one executor thread
// (which fans out to the thread pool), so JavaScript never waits for a long CPU kernel; it waits
// only where it reads data. This mirrors the CUDA stream, where launches queue on the device.
// An exception thrown by queued work is kept (the first one) and rethrown by the next sync(),
// as CUDA reports asynchronous errors. SIFT_FT_CPU_SYNC=1 runs every op inline instead.
// enqueue() waits while SIFT_FT_CPU_QUEUE ops (default 4096) are pending: back-pressure that keeps
// a producer which never reads from queueing unbounded work and memory.
#pragma once
#include <functional>

namespace sift {

class CpuExecutor {
 public:
  static CpuExecutor& get();
  void enqueue(std::function<void()> fn);
  // Waits until the queue is empty; rethrows the first error raised by queued work.
  void sync();
  bool inline_mode() const;
  // For callers that already know the queue is idle (tests, stats).
  size_t pending() const;
  void shutdown();

 private:
  CpuExecutor();
  struct Impl;
  Impl* impl_;
};

// Runs fn on the device's stream: the CPU executor, or directly for CUDA (launches are async).
template <typename F>
void launch_on(bool cpu, F&& fn) {
  if (cpu) CpuExecutor::get().enqueue(std::function<void()>(std::forward<F>(fn)));
  else fn();
}

}  // namespace sift
