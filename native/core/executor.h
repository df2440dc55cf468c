// The CPU "stream": ops on CPU tensors are queued here and run in order on one executor thread
// (which fans out to the thread pool), so JavaScript never waits for a long CPU kernel; it waits
// only where it reads data. This mirrors the CUDA stream, where launches queue on the device.
// An exception thrown by queued work is kept (the first one) and rethrown by the next sync(),
// as CUDA reports asynchronous errors. SIFT_FT_CPU_SYNC=1 runs every op inline instead.
// enqueue() waits while SIFT_FT_CPU_QUEUE ops (default 4096) are pending: back-pressure that keeps
// a producer which never reads from queueing unbounded work and memory.
// Fences let a caller wait for part of the queue without blocking JavaScript: fence() names the
// last op queued so far, and wait_for(fence), run on another thread (an async worker), returns
// once that op ran. A producer that awaits the fence of its previous batch of ops before queueing
// the next one never meets the back-pressure wait (while a batch is under SIFT_FT_CPU_QUEUE ops).
#pragma once
#include <cstdint>
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
  size_t max_pending() const;
  // Sequence number of the last op queued (0 before the first, and in inline mode).
  uint64_t fence() const;
  // Waits until every op up to `fence` ran; rethrows the first error raised by queued work.
  void wait_for(uint64_t fence);
  // Time the JavaScript thread (the thread that loaded the addon) spent blocked in the executor:
  // back-pressure in enqueue() and sync(). Waits on other threads (async workers) are not counted.
  struct WaitStats {
    uint64_t count = 0;
    uint64_t total_ns = 0;
    uint64_t max_ns = 0;
  };
  WaitStats main_thread_waits() const;
  void reset_main_thread_waits();
  void set_main_thread();  // records the calling thread as the JavaScript thread
  void shutdown();

 private:
  CpuExecutor();
  struct Impl;
  Impl* impl_;
};

// Runs fn on the device's stream: the CPU executor, or directly for CUDA (launches are async).
template <typename F>
void launch_on(bool cpu, F&& fn) {
  if (cpu)
    CpuExecutor::get().enqueue(std::function<void()>(std::forward<F>(fn)));
  else
    fn();
}

}  // namespace sift
